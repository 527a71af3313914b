"""Persistence: SQLAlchemy 2 async on SQLite (default) or PostgreSQL, chosen by URL.

The public names are imported on first use (PEP 562): the PoOT writer process imports
``lucid.node.db.poot_writer_child``, which needs only the standard library, and must not pay for
SQLAlchemy and pydantic at every start."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["NodeDatabase", "default_db_url", "SqlNodeRepository", "SqlPayoutRepository", "SqlPoolRepository",
           "SqlPoOTRepository"]

_WHERE = {"NodeDatabase": "engine", "default_db_url": "engine", "SqlNodeRepository": "node_repo",
          "SqlPayoutRepository": "payout_repo", "SqlPoolRepository": "pool_repo", "SqlPoOTRepository": "poot_repo"}

if TYPE_CHECKING:
    from .engine import NodeDatabase, default_db_url
    from .node_repo import SqlNodeRepository
    from .payout_repo import SqlPayoutRepository
    from .pool_repo import SqlPoolRepository
    from .poot_repo import SqlPoOTRepository


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
