"""Exact money: every amount is a ``decimal.Decimal``; floats go through ``str`` so 0.1 stays 0.1."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import OptimiseInputError


def to_money(value: Any, *, field: str = "cost", allow_negative: bool = False) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise OptimiseInputError(f"{field} must be a number, got {value!r}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError, TypeError):
        raise OptimiseInputError(f"{field} is not a number: {value!r}") from None
    if not amount.is_finite():
        raise OptimiseInputError(f"{field} must be finite, got {value!r}")
    if amount < 0 and not allow_negative:
        raise OptimiseInputError(f"{field} must not be negative, got {value!r}")
    return amount + 0  # normalise -0 and context precision


def money_str(amount: Decimal) -> str:
    """Plain notation (no exponent), trailing zeros kept as entered."""
    return format(amount, "f")
