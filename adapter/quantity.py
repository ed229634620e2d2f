"""Kubernetes quantity strings (``resource.Quantity``), written the way the API server writes them.

``format_quantity`` gives the canonical DecimalSI form the Go code marshals: trailing zeros folded
into an SI suffix in steps of three (``1000`` -> ``"1k"``, ``1.5`` -> ``"1500m"``, ``0`` -> ``"0"``),
finer than nano rounded up to the next nano, as ``Quantity`` does. ``parse_quantity`` reads every form
Kubernetes accepts (decimal and binary suffixes, exponents).
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Context, Decimal, InvalidOperation

_DECIMAL_SUFFIX_EXP = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_EXP_DECIMAL_SUFFIX = {exp: suffix for suffix, exp in _DECIMAL_SUFFIX_EXP.items()}
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_NANO = Decimal("1e-9")
_WIDE = Context(prec=200)


class QuantityError(ValueError):
    pass


def parse_quantity(text: str) -> Decimal:
    """The exact value of a quantity string; QuantityError names what is accepted."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise QuantityError(
            f"quantity {text!r} does not match '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' "
            "(examples: 12, 1500m, 2k, 1Gi, 1e3)"
        )
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY_SUFFIX:
        return number * _BINARY_SUFFIX[suffix]
    if suffix in _DECIMAL_SUFFIX_EXP:
        return number.scaleb(_DECIMAL_SUFFIX_EXP[suffix])
    return number.scaleb(int(suffix[1:]))


def format_quantity(value: int | float | Decimal) -> str:
    """The canonical DecimalSI string of ``value`` (what ``resource.NewQuantity``/``NewMilliQuantity`` marshal)."""
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise QuantityError(f"{value!r} is not a number") from None
    if not exact.is_finite():
        raise QuantityError(f"{value!r} is not a finite number")
    if exact == 0:
        return "0"
    negative = exact < 0
    magnitude = exact.copy_abs()  # abs() would round to the default context's 28 digits
    if int(magnitude.as_tuple().exponent) < -9:
        magnitude = magnitude.quantize(_NANO, rounding=ROUND_CEILING, context=_WIDE)
    # mantissa * 10**exponent with the mantissa an integer without trailing zeros
    _sign, digits, exponent = magnitude.normalize(_WIDE).as_tuple()
    mantissa = int("".join(map(str, digits)))
    exp = int(exponent)
    # the exponent goes down to a multiple of three; the mantissa grows to match
    shift = exp % 3
    mantissa, exp = mantissa * 10**shift, exp - shift
    if exp > 18:
        mantissa, exp = mantissa * 10 ** (exp - 18), 18
    suffix = _EXP_DECIMAL_SUFFIX[exp]
    return f"{'-' if negative else ''}{mantissa}{suffix}"
