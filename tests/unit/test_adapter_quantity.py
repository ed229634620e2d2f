"""Kubernetes quantities: the canonical form the API server writes, and every form it accepts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapter.quantity import QuantityError, format_quantity, parse_quantity


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
