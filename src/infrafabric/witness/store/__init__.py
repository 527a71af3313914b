"""Witness stores selected by URL: ``memory://[name]``, ``sqlite:///path``, ``postgresql://…``."""

from __future__ import annotations

from ..errors import WitnessInputError
from .base import Pending, Query, Sealed, StoredEntry, WitnessStore
from .memory import MemoryStore, drop_memory_log


def make_store(url: str) -> WitnessStore:
    if url in ("memory", "memory:") or url.startswith("memory://"):
        return MemoryStore(url if "://" in url else "memory://")
    if url.startswith(("sqlite", "postgres")):
        from .sql import SqlStore  # imported lazily: SQLAlchemy is only needed for SQL URLs

        return SqlStore(url)
    raise WitnessInputError(f"unsupported witness URL {url!r}", error_code="WITNESS_BAD_URL")


__all__ = ["MemoryStore", "Pending", "Query", "Sealed", "StoredEntry", "WitnessStore", "drop_memory_log", "make_store"]
