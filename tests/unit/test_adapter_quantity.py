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


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (1.5, "1500m"),
        (0.1, "100m"),  # the float as written, not its binary expansion (which would round up to 100000001n)
        (10**18, "1E"),
        (10**19, "10E"),
        (10**21, "1000E"),  # nothing above exa: the mantissa grows
        (2 * 10**24, "2000000E"),
        (Decimal("12345678901234567890.0000000001"), "12345678901234567890000000001n"),  # beyond 28 digits
        (Decimal("1234567890123456789012345678901"), "1234567890123456789012345678901"),
        (Decimal("-0.0000000011"), "-2n"),
    ],
)
def test_canonical_quantity_edges(value: int | float | Decimal, text: str) -> None:
    assert format_quantity(value) == text


def test_quantity_errors_say_what_is_accepted() -> None:
    with pytest.raises(QuantityError) as exc:
        parse_quantity("12 apples")
    assert str(exc.value) == (
        "quantity '12 apples' does not match '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' "
        "(examples: 12, 1500m, 2k, 1Gi, 1e3)"
    )
    with pytest.raises(QuantityError) as exc:
        format_quantity("1.5x")  # type: ignore[arg-type]
    assert str(exc.value) == "'1.5x' is not a number"
    with pytest.raises(QuantityError) as exc:
        format_quantity(float("inf"))
    assert str(exc.value) == "inf is not a finite number"


@pytest.mark.parametrize(("text", "value"), [("1500m", Decimal("1.5")), ("3E", 3 * 10**18), ("2e-3", Decimal("0.002"))])
def test_parse_quantity_suffixes(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value
