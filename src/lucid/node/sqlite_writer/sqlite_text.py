"""Helpers for the group commits that run SQL text on the SQLite writer's own cursor (poot_sqlite,
node_sqlite): SQLite's datetime text, and multi-row VALUES statements kept under SQLite's bound-variable
limit. Why text at all is explained in poot_sqlite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = ["sqlite_datetime", "chunks", "values_clause", "flat", "MAX_VARIABLES"]

MAX_VARIABLES = 32_000  # SQLite's limit is 32,766 since 3.32


def sqlite_datetime(value: datetime | None) -> str | None:
    """What UTCDateTime + SQLite's DATETIME store: naive UTC, 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # the services' datetimes: drop the '+00:00' instead of converting
        return value.isoformat(sep=" ", timespec="microseconds")[:26]
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def chunks(items: Sequence[Any], per_row: int) -> Iterable[Sequence[Any]]:
    """``items`` in runs that fit one statement of ``per_row`` variables a row."""
    size = max(1, MAX_VARIABLES // per_row)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def values_clause(rows: int, per_row: int) -> str:
    """'(?, ?), (?, ?)' for ``rows`` rows of ``per_row`` placeholders."""
    one = "(" + ", ".join("?" * per_row) + ")"
    return ", ".join([one] * rows)


def flat(rows: Iterable[Sequence[Any]]) -> list[Any]:
    out: list[Any] = []
    for row in rows:
        out += row
    return out
