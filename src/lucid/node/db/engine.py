"""Engine factory.

SQLite (aiosqlite) is run as one writer and several readers, the usual SQLite pattern: ``engine`` has a
single connection and starts every transaction with BEGIN IMMEDIATE (SQLAlchemy's documented aiosqlite
recipe), so writers queue instead of failing a read-to-write upgrade; ``reader`` is a second pool whose
connections run plain autocommit SELECTs concurrently under WAL. Each aiosqlite call is a thread hop, so
skipping the BEGIN/ROLLBACK around reads roughly halves their cost. On PostgreSQL both are one engine.
An in-memory SQLite URL gets the same arrangement on a private temporary file (see ``__init__``).

Hot paths (PoOT group commits and nonce look-ups, node-creation group commits) go through ``write`` and
``read`` instead: a whole transaction as one synchronous SQLAlchemy function, run on SQLite by a dedicated
pysqlite thread (one hop instead of several per statement), on PostgreSQL by ``run_sync``.

``node_cache`` and ``poot_history`` are read caches shared by every repository of one NodeDatabase (see
caches.py): they spare the PoOT hot path its per-proof reads, and are never the last word on a rule.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .caches import NodeSnapshotCache, PoOTHistoryCache
from .poot_writer_process import PoOTWriterProcess
from .tables import metadata

__all__ = ["NodeDatabase", "default_db_url", "ENV_DB_URL", "SQLITE_PRAGMAS"]

T = TypeVar("T")

ENV_DB_URL = "LUCID_NODE_DB_URL"


def default_db_url() -> str:
    return os.environ.get(ENV_DB_URL, "sqlite+aiosqlite:///./lucid_node.db")


# every SQLite connection's settings (see _install_sqlite_hooks for why wal_autocheckpoint is raised)
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000", "foreign_keys=ON",
                  "wal_autocheckpoint=10000")


class NodeDatabase:
    """One engine plus the dialect helpers the repositories need."""

    def __init__(self, url: str | None = None, *, echo: bool = False, readers: int = 4) -> None:
        self.url = url or default_db_url()
        self.is_sqlite = self.url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        self._sync_writer: Engine | None = None
        self._sync_reader: Engine | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_threads: ThreadPoolExecutor | None = None
        self._writer_conn: Connection | None = None  # the writer thread's own (SQLite file)
        self._poot_process: PoOTWriterProcess | None = None
        self.node_cache = NodeSnapshotCache()
        self.poot_history = PoOTHistoryCache()
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if self.is_sqlite:
            if self.url in ("sqlite+aiosqlite://", "sqlite+aiosqlite:///:memory:"):
                # One shared in-memory connection cannot hold concurrent transactions (a second BEGIN
                # inside the first fails), and the hot paths run several at once: an in-memory URL gets
                # a private database file in a temporary directory instead, removed by dispose().
                self._tempdir = tempfile.TemporaryDirectory(prefix="lucid-node-db-")
                self.url = f"sqlite+aiosqlite:///{os.path.join(self._tempdir.name, 'nodes.db')}"
            kwargs["connect_args"] = {"timeout": 30}
            self.engine: AsyncEngine = create_async_engine(self.url, pool_size=1, max_overflow=0, pool_timeout=60,
                                                           **kwargs)
            self._install_sqlite_hooks(self.engine, writer=True)
            self.reader: AsyncEngine = create_async_engine(self.url, pool_size=readers, max_overflow=0,
                                                           pool_timeout=60, pool_reset_on_return=None, **kwargs)
            self._install_sqlite_hooks(self.reader, writer=False)
            sync_url = make_url(self.url).set(drivername="sqlite+pysqlite")
            sync_args = {"timeout": 30, "check_same_thread": False}
            self._sync_writer = create_engine(sync_url, pool_size=1, max_overflow=0, pool_timeout=60,
                                              connect_args=sync_args, echo=echo)
            self._install_sqlite_hooks(self._sync_writer, writer=True)
            self._sync_reader = create_engine(sync_url, pool_size=2, max_overflow=0, pool_timeout=60,
                                              pool_reset_on_return=None, connect_args=sync_args, echo=echo)
            self._install_sqlite_hooks(self._sync_reader, writer=False)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="lucid-sqlite-writer")
            self._read_threads = ThreadPoolExecutor(2, thread_name_prefix="lucid-sqlite-reader")
        else:
            self.engine = create_async_engine(self.url, pool_size=10, max_overflow=20, **kwargs)
            self.reader = self.engine

    def poot_writer_process(self) -> PoOTWriterProcess | None:
        """The database's PoOT writer process (SQLite only; one per database, started by its first group,
        stopped by ``dispose``); None on PostgreSQL, whose server already commits beside the loop."""
        if not self.is_sqlite:
            return None
        if self._poot_process is None:
            self._poot_process = PoOTWriterProcess(make_url(self.url).database or "", SQLITE_PRAGMAS)
        return self._poot_process

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` (synchronous SQLAlchemy Core) in one write transaction.

        On an SQLite file the whole transaction is one hop to a dedicated writer thread with a pysqlite
        connection (BEGIN IMMEDIATE, as ``engine``): through aiosqlite every statement costs several
        thread hops (~0.5 ms each with SQLAlchemy's adapter), which made a group commit of a few
        statements cost milliseconds. On PostgreSQL it is ``run_sync`` on
        ``engine``. Writers of both kinds serialise on SQLite's write lock (busy_timeout)."""
        if self._sync_writer is not None and self._write_thread is not None:
            return await asyncio.get_running_loop().run_in_executor(self._write_thread, self._sync_write, fn)
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` read-only: one hop to a reader thread on an SQLite file (see ``write``)."""
        if self._sync_reader is not None and self._read_threads is not None:
            return await asyncio.get_running_loop().run_in_executor(self._read_threads, self._sync_read,
                                                                    self._sync_reader, fn)
        async with self.reader.connect() as conn:
            return await conn.run_sync(fn)

    def _sync_write(self, fn: Callable[[Connection], T]) -> T:
        """On the writer thread: one transaction on the thread's own connection, kept open between
        transactions (a pool checkout, and the ROLLBACK of the pool's reset on return, cost more than
        a small group commit's statements). A connection that failed is replaced on the next call."""
        assert self._sync_writer is not None
        conn = self._writer_conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self._writer_conn = self._sync_writer.connect()
        try:
            with conn.begin():
                return fn(conn)
        except BaseException:
            self._writer_conn = None
            conn.close()
            raise

    def _close_writer_conn(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    @staticmethod
    def _sync_read(engine: Engine, fn: Callable[[Connection], T]) -> T:
        with engine.connect() as conn:
            return fn(conn)

    @staticmethod
    def _install_sqlite_hooks(engine: AsyncEngine | Engine, *, writer: bool) -> None:
        sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cur = dbapi_connection.cursor()
            # wal_autocheckpoint: the commit that pushes the WAL past the limit copies it back into the
            # database file and syncs it, inside the committing transaction. At SQLite's default limit
            # (1,000 pages) that was every few PoOT group commits, a fifth of the in-process throughput;
            # at 10,000 pages (~40 MB of WAL) it is rare.
            for pragma in SQLITE_PRAGMAS:
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
        if self._poot_process is not None:
            await self._poot_process.close()
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()
        if self._write_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._write_thread, self._close_writer_conn)
        for pool in (self._write_thread, self._read_threads):
            if pool is not None:
                await asyncio.get_running_loop().run_in_executor(None, pool.shutdown, True)
        for sync_engine in (self._sync_writer, self._sync_reader):
            if sync_engine is not None:
                sync_engine.dispose()
        if self._tempdir is not None:  # an in-memory URL's private file: gone with the database
            self._tempdir.cleanup()
            self._tempdir = None

    async def ping(self) -> bool:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
