"""Label selectors: the grammar, matching and error messages of k8s.io/apimachinery's labels.Parse."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.selectors import Op, SelectorError, parse_selector


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
