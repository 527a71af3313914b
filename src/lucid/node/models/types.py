"""Boundary types for request fields whose raw form breaks arithmetic later.

Why here, once: a naive datetime compared with an aware one raises ``TypeError``; one near year 1 or
9999 overflows the first ``timedelta`` added to it; ``1e400``, ``Infinity`` and ``NaN`` are JSON numbers to
Python's parser and pass ``ge=0``. Each of those reached a route as a 500. Every request model takes its
times and prices through these types, so the refusal is a 400 at the boundary, on both API paths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

__all__ = ["UtcDatetime", "ProofDatetime", "FiniteFloat", "NonNegativePrice", "EARLIEST", "LATEST"]

# Wide enough for any real schedule or proof time, far enough from datetime's limits that adding the
# API's offsets (days, not centuries) cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def _bounded_utc(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ValueError("datetime out of range") from exc
    if not EARLIEST <= utc < LATEST:
        raise ValueError(f"datetime must be between {EARLIEST.date()} and {LATEST.date()}")
    return utc


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_bounded_utc)]
"""An ISO 8601 time with its offset (a naive one is refused), within [1970, 9000), returned in UTC."""



def _naive_is_utc(value: datetime) -> datetime:
    return _bounded_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


ProofDatetime = Annotated[datetime, AfterValidator(_naive_is_utc)]
"""A proof's time: the seed's clients send ``datetime.utcnow().isoformat()`` (no offset), read as UTC;
bounded and returned in UTC like :data:`UtcDatetime`."""

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativePrice = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
