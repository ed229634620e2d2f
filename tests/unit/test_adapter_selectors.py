"""Label selectors: the grammar, matching and error messages of k8s.io/apimachinery's labels.Parse."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.selectors import _NAME_HINT, Op, SelectorError, parse_selector


@pytest.fixture(autouse=True)
def _parse_afresh() -> Iterator[None]:
    """parse_selector keeps what it parsed: each test here exercises the parser, not an earlier test's result."""
    parse_selector.cache_clear()
    yield


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("queue=analyses", {"queue": "analyses"}, True),
        ("queue==analyses", {"queue": "cpu"}, False),
        ("queue!=analyses", {}, True),
        ("queue in (a, b)", {"queue": "b"}, True),
        ("queue notin (a,b)", {"queue": "b"}, False),
        ("queue notin (a,b)", {}, True),
        ("queue", {"queue": ""}, True),
        ("!queue", {"queue": "x"}, False),
        ("queue=a,!team", {"queue": "a"}, True),
        ("priority>3", {"priority": "9"}, True),
        ("priority<3", {"priority": "x"}, False),
        ("queue=", {"queue": ""}, True),
        ("example.com/queue=a", {"example.com/queue": "a"}, True),
        ("  queue  =  a  ", {"queue": "a"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_selector_matching(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue in analyses", "expected: '('"),
        ("queue in ()", "values set can't be empty"),
        ("queue=a=b", "expected: ',' or 'end of string'"),
        ("=a", "expected: !, identifier"),
        ("queue ~ a", "expected: =, !="),
        ("queue,", "identifier after ','"),
        ("!queue=a", "'!' can only be followed by a key"),
        ("queue=a b", "expected: ',' or 'end of string'"),
        ("-queue=a", "invalid label key"),
        ("queue=-a", "invalid label value"),
        ("queue=" + "a" * 64, "no more than 63"),
        ("priority>high", "must be an integer"),
    ],
)
def test_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message.replace("(", r"\(").replace("!", "!")):
        parse_selector(text)


def test_named_values() -> None:
    selector = parse_selector("queue in (a,b),queue=a,other=c,queue!=z")
    assert selector.named_values("queue") == {"a", "b"}
    assert [r.op for r in selector.requirements] == [Op.IN, Op.EQUALS, Op.EQUALS, Op.NOT_EQUALS]


@given(st.text(max_size=40))
def test_any_text_parses_or_says_why(text: str) -> None:
    try:
        selector = parse_selector(text)
    except SelectorError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert parse_selector(str(selector)) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("queue in analyses", "found 'analyses' expected: '('"),
        ("queue in ()", "for 'in', 'notin' operators, values set can't be empty (key 'queue')"),
        ("queue=a=b", "found '=', expected: ',' or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("queue ~ a", "found '~', expected: =, !=, ==, in, notin, >, <"),
        ("queue,", "found '', expected: identifier after ','"),
        ("!queue=a", "'!' can only be followed by a key, found '=' after 'queue'"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("!(", "found '(', expected: identifier"),
        ("queue in (a b)", "found 'b', expected: ',' or ')'"),
        ("queue in (a,=)", "found '=', expected: ',', ')' or identifier"),
        ("queue=(", "found '(', expected: identifier"),
        ("priority>high", "for 'Gt', 'Lt' operators, the value must be an integer (key 'priority', got 'high')"),
        ("queue=-a", "invalid label value '-a' for key 'queue': a valid label " + _NAME_HINT),
        ("queue=" + "a" * 64, f"invalid label value '{'a' * 64}' for key 'queue': must be no more than 63 bytes"),
        ("-queue", "invalid label key '-queue': name part " + _NAME_HINT),
        ("/queue", "invalid label key '/queue': prefix part must be non-empty"),
        (
            "a/b/c",
            "invalid label key 'a/b/c': a qualified name must consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character with an optional DNS subdomain "
            "prefix and '/'",
        ),
        (
            "Ex.com/q",
            "invalid label key 'Ex.com/q': prefix part a lowercase RFC 1123 subdomain must consist of lower "
            "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ),
        ("ex.com/", "invalid label key 'ex.com/': name part must be non-empty"),
        ("q" * 64, f"invalid label key '{'q' * 64}': name part must be no more than 63 bytes"),
        ("a" * 254 + "/q", f"invalid label key '{'a' * 254}/q': prefix part must be no more than 253 bytes"),
    ],
)
def test_selector_error_messages_exactly(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as exc:
        parse_selector(text)
    assert str(exc.value) == message


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("queue", "queue"),
        ("!queue", "!queue"),
        ("queue==a", "queue==a"),
        ("queue = a", "queue=a"),
        ("queue!=a", "queue!=a"),
        ("queue in (b,a,a)", "queue in (a,b)"),
        ("queue notin (,a)", "queue notin (,a)"),
        ("queue in (a,)", "queue in (,a)"),
        ("p>3,p<10", "p>3,p<10"),
        ("ex.com/q=in", "ex.com/q=in"),
    ],
)
def test_selector_renders_canonically(text: str, canonical: str) -> None:
    assert str(parse_selector(text)) == canonical


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ("p>3", {"p": "3"}, False),
        ("p>3", {"p": "4"}, True),
        ("p<3", {"p": "3"}, False),
        ("p<3", {"p": "2"}, True),
        ("p<3", {}, False),
        ("p>-1", {"p": "0"}, True),
        ("queue", {}, False),
        ("!queue", {}, True),
        ("queue=a", {}, False),
        ("queue!=a", {"queue": "a"}, False),
        ("queue!=a", {"queue": "b"}, True),
        ("queue in (a)", {}, False),
        ("queue=a,team=x", {"queue": "a"}, False),
    ],
)
def test_selector_matching_edges(text: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_selector(text).matches(labels) is matches
