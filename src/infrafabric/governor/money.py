"""Exact money: budgets and costs are Decimals, so 5.0 - 5.0 is exactly 0 and a million charges do not drift.

Floats are converted through their shortest repr (`Decimal(str(0.1)) == Decimal('0.1')`), which is what
a caller who wrote 0.1 meant.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from infrafabric.errors import InvalidCostError


def to_money(value: object, what: str = "amount", *, allow_negative: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidCostError(f"{what} must be a number, got {type(value).__name__}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidCostError(f"{what} is not a number: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidCostError(f"{what} must be finite, got {value!r}")
    if amount < 0 and not allow_negative:
        raise InvalidCostError(f"{what} must not be negative, got {value!r}")
    return amount
