"""Kubernetes quantities and label selectors: the forms the API server writes and accepts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.quantity import QuantityError, format_quantity, parse_quantity
from adapter.selectors import Op, SelectorError, parse_selector


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (7, "7"),
        (999, "999"),
        (1000, "1k"),
        (1500, "1500"),
        (12000, "12k"),
        (3_000_000, "3M"),
        (Decimal("1.5"), "1500m"),
        (Decimal("0.25"), "250m"),
        (Decimal("0.0000000001"), "1n"),  # finer than nano rounds up, as Quantity does
        (-2000, "-2k"),
    ],
)
def test_canonical_quantity(value: int | Decimal, text: str) -> None:
    assert format_quantity(value) == text
    if value >= Decimal("1e-9") or value < 0:
        assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize(("text", "value"), [("1Ki", 1024), ("2Gi", 2 * 2**30), ("1e3", 1000), ("1.5k", 1500)])
def test_parse_quantity(text: str, value: int) -> None:
    assert parse_quantity(text) == value


def test_bad_quantity() -> None:
    with pytest.raises(QuantityError, match="does not match"):
        parse_quantity("12 apples")


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_integers_round_trip(value: int) -> None:
    assert parse_quantity(format_quantity(value)) == value


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
