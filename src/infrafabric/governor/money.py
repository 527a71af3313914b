"""Exact money: budgets and costs are Decimals, so 5.0 - 5.0 is exactly 0 and a million charges do not drift.

Floats are converted through their shortest repr (`Decimal(str(0.1)) == Decimal('0.1')`), which is what
a caller who wrote 0.1 meant.

Every amount is bounded: at most ``MAX_AMOUNT`` and at most ``MAX_PLACES`` decimals. Why: an unbounded
Decimal is not harmless. ``1E+1000000`` was stored as a budget and every later read of it raised
``decimal.Overflow``; an amount with more digits than the default context (28) was silently rounded by
``spent += amount``, so the ledger recorded a charge nobody made. Ledger sums and differences are made
with ``add``/``sub`` in ``LEDGER``, a fixed context wide enough for any bounded amount that traps every
rounding: an answer is exact or an ``InvalidCostError``.
"""

from __future__ import annotations

from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    Clamped,
    Context,
    Decimal,
    DecimalException,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
    localcontext,
)

from infrafabric.errors import InvalidCostError

MAX_AMOUNT = Decimal(10) ** 15  # a quadrillion dollars: above any budget, below any rounding
MAX_PLACES = 24  # decimals: float costs down to 1e-7 keep all 17 of their digits
# 16 integer digits + 24 decimals = 40 digits per amount; 80 digits of precision keep sums of up to 10**24
# such amounts exact, and anything beyond is refused (Inexact/Rounded are traps), never rounded.
LEDGER = Context(prec=80, rounding=ROUND_HALF_EVEN, Emin=-999, Emax=999,
                 traps=[InvalidOperation, DivisionByZero, Overflow, Underflow, Subnormal, Inexact, Rounded, Clamped])
_QUANTUM = Decimal(1).scaleb(-MAX_PLACES)
# where rounding is the point (a share of an amount), always down: a share never exceeds what it is of
_CUT = Context(prec=80, rounding=ROUND_DOWN, Emin=-999, Emax=999, traps=[InvalidOperation, DivisionByZero, Overflow])


def to_money(value: object, what: str = "amount", *, allow_negative: bool = False) -> Decimal:
    """A caller's amount as an exact Decimal, or ``InvalidCostError`` (a ValueError) saying why not."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise InvalidCostError(f"{what} must be a number, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > 200:
        raise InvalidCostError(f"{what} is not a number: {value[:40]!r}...")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidCostError(f"{what} is not a number: {value!r}") from exc
    if not amount.is_finite():
        raise InvalidCostError(f"{what} must be finite, got {value!r}")
    if amount < 0 and not allow_negative:
        raise InvalidCostError(f"{what} must not be negative, got {value!r}")
    if amount.copy_abs() > MAX_AMOUNT:  # copy_abs: no context, so no Overflow on 1E+1000000
        raise InvalidCostError(f"{what} must be at most {MAX_AMOUNT:f}, got {_short(amount)}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_PLACES:
        raise InvalidCostError(f"{what} may have at most {MAX_PLACES} decimals, got {_short(amount)}")
    if isinstance(exponent, int) and exponent > 0:
        amount = amount.quantize(Decimal(1), context=LEDGER)  # 1E+3 -> 1000: the exact value, plain digits
    return amount


def add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` exactly (ledger context), or ``InvalidCostError``: a total is never silently rounded."""
    try:
        return LEDGER.add(a, b)
    except DecimalException as exc:
        raise InvalidCostError(f"the sum of {_short(a)} and {_short(b)} cannot be kept exactly") from exc


def sub(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` exactly (ledger context), or ``InvalidCostError``."""
    try:
        return LEDGER.subtract(a, b)
    except DecimalException as exc:
        raise InvalidCostError(f"the difference of {_short(a)} and {_short(b)} cannot be kept exactly") from exc


def part_of(amount: Decimal, fraction: Decimal) -> Decimal:
    """``amount × fraction`` rounded down to ``MAX_PLACES`` decimals: never more than the exact product, and
    itself a valid amount (shares of shares would otherwise gain decimals without end)."""
    return _CUT.multiply(amount, fraction).quantize(_QUANTUM, context=_CUT)


def share_of(total: Decimal, parts: int) -> Decimal:
    """``total / parts``: exact when it can be, else rounded down to ``MAX_PLACES`` decimals, so ``parts``
    shares never exceed ``total`` and each share is itself a valid amount (10/3 has too many decimals)."""
    if parts <= 0:
        raise InvalidCostError("a total is shared among at least one part")
    with localcontext(LEDGER) as ctx:
        ctx.traps[Inexact] = ctx.traps[Rounded] = False
        ctx.clear_flags()
        share = total / parts
        if not ctx.flags[Inexact] and share.as_tuple().exponent >= -MAX_PLACES:  # type: ignore[operator]
            return share
        return share.quantize(_QUANTUM, rounding=ROUND_DOWN)


def _short(amount: Decimal) -> str:
    text = str(amount)
    return text if len(text) <= 40 else f"{text[:37]}..."
