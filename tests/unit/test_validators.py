"""The option validators of lensing_core.options: one copy each, finite and bounded."""

from __future__ import annotations

import argparse

import pytest

from lensing_core.options import MAX_NUMBER, boolean, non_negative_float, positive_float, positive_int, ratio


@pytest.mark.parametrize("parse", [positive_float, non_negative_float, ratio])
@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e10", "x", ""])
def test_numbers_are_finite_and_bounded(parse, text: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


@pytest.mark.parametrize(
    ("parse", "text", "value"),
    [
        (positive_float, "0.5", 0.5),
        (positive_float, str(MAX_NUMBER), MAX_NUMBER),
        (non_negative_float, "0", 0.0),
        (ratio, "0", 0.0),
        (positive_int, " 3 ", 3),
        (boolean, "Yes", True),
        (boolean, "off", False),
    ],
)
def test_accepted(parse, text: str, value: object) -> None:  # type: ignore[no-untyped-def]
    assert parse(text) == value


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (positive_float, "0", "must be a number above 0"),
        (non_negative_float, "-1", "must be a number >= 0"),
        (positive_int, "0", "must be a whole number >= 1"),
        (positive_int, "2000000000", "must be a whole number >= 1"),
        (positive_int, "1.5", "must be a whole number >= 1"),
        (ratio, "1", "must be a ratio from 0 up to (not including) 1"),
        (boolean, "maybe", "expected true or false"),
    ],
)
def test_refused_with_what_is_accepted(parse, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(argparse.ArgumentTypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "1e10", "10x"])
def test_durations_are_finite_and_bounded(text: str) -> None:
    from adapter.cli import duration

    with pytest.raises(argparse.ArgumentTypeError, match="expected a duration"):
        duration(text)
