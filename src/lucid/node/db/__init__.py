"""Persistence: SQLAlchemy 2 async on SQLite (default) or PostgreSQL, chosen by URL."""

from .engine import NodeDatabase, default_db_url  # noqa: F401
from .node_repo import SqlNodeRepository  # noqa: F401
from .payout_repo import SqlPayoutRepository  # noqa: F401
from .pool_repo import SqlPoolRepository  # noqa: F401
from .poot_repo import SqlPoOTRepository  # noqa: F401
