"""Engine factory.

SQLite (aiosqlite) is run as one writer and several readers, the usual SQLite pattern: ``engine`` has a
single connection and starts every transaction with BEGIN IMMEDIATE (SQLAlchemy's documented aiosqlite
recipe), so writers queue instead of failing a read-to-write upgrade; ``reader`` is a second pool whose
connections run plain autocommit SELECTs concurrently under WAL. Each aiosqlite call is a thread hop, so
skipping the BEGIN/ROLLBACK around reads roughly halves their cost. On PostgreSQL both are one engine.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .tables import metadata

__all__ = ["NodeDatabase", "default_db_url", "ENV_DB_URL"]

ENV_DB_URL = "LUCID_NODE_DB_URL"


def default_db_url() -> str:
    return os.environ.get(ENV_DB_URL, "sqlite+aiosqlite:///./lucid_node.db")


class NodeDatabase:
    """One engine plus the dialect helpers the repositories need."""

    def __init__(self, url: str | None = None, *, echo: bool = False, readers: int = 4) -> None:
        self.url = url or default_db_url()
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            memory = self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:")
            kwargs["connect_args"] = {"timeout": 30}
            if memory:
                self.engine: AsyncEngine = create_async_engine(self.url, poolclass=StaticPool, **kwargs)
                self._install_sqlite_hooks(self.engine, writer=True)
                self.reader: AsyncEngine = self.engine
            else:
                self.engine = create_async_engine(self.url, pool_size=1, max_overflow=0, pool_timeout=60, **kwargs)
                self._install_sqlite_hooks(self.engine, writer=True)
                self.reader = create_async_engine(self.url, pool_size=readers, max_overflow=0, pool_timeout=60,
                                                  pool_reset_on_return=None, **kwargs)
                self._install_sqlite_hooks(self.reader, writer=False)
        else:
            self.engine = create_async_engine(self.url, pool_size=10, max_overflow=20, **kwargs)
            self.reader = self.engine

    @staticmethod
    def _install_sqlite_hooks(engine: AsyncEngine, *, writer: bool) -> None:
        sync_engine = engine.sync_engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        if writer:
            @event.listens_for(sync_engine, "begin")
            def _on_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    def insert_ignore(self, table: Any) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING for either engine (atomic insert-if-absent)."""
        mod = sqlite if self.is_sqlite else postgresql
        return mod.insert(table)

    async def create_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def drop_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()

    async def ping(self) -> bool:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
