"""Persistence: SQLAlchemy 2 async on SQLite (default) or PostgreSQL, chosen by URL."""

from __future__ import annotations

from .engine import NodeDatabase, default_db_url
from .node_repo import SqlNodeRepository
from .payout_repo import SqlPayoutRepository
from .pool_repo import SqlPoolRepository
from .poot_repo import SqlPoOTRepository

__all__ = ["NodeDatabase", "default_db_url", "SqlNodeRepository", "SqlPayoutRepository", "SqlPoolRepository",
           "SqlPoOTRepository"]
