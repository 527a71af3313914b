"""SQLAlchemy 2 (async) store: SQLite through aiosqlite by default, PostgreSQL through asyncpg.

Writers are serialised by the first statement of the append transaction, an UPDATE of the single
head row: in PostgreSQL it takes the row lock (a second writer waits, then reads the new head), in
SQLite it takes the database write lock (other processes wait in the busy handler). Everything a
batch writes (entries, head, checkpoint) commits in that one transaction, so a killed process leaves
either the whole batch or none of it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    func,
    insert,
    inspect,
    text,
    delete,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..canonical import GENESIS_HASH
from ..checkpoint import Checkpoint
from ..errors import WitnessInputError, WitnessKeyError, WitnessStorageError
from ..keys import WitnessKeys
from ..merkle import CompactRange
from .base import ROW_CONTENT_HASH, checkpoint_of_stored, stored_leaf, PendingEntry, Query, Sealed, Sealer, StoredEntry, WitnessStore, is_milestone
from ..errors import WitnessHeadRewrittenError
from ..trust import SignedHead, frontier_of
from .sqlite_append import PRUNE_TRIGGER, SIGNED_HEAD, SqliteAppender, signed_head_of, sqlite_pragmas

metadata = MetaData()

entries_table = Table(
    "witness_entries",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("id", String(64), nullable=False, unique=True),
    Column("timestamp", String(32), nullable=False),
    Column("component", String(128), nullable=False),
    Column("operation", String(128), nullable=False),
    Column("params", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("trace_id", String(256), nullable=True),
    # no unique index on prev_hash: seq is the key and writers are serialised, so a fork cannot be
    # stored; an index of random hashes would cost a third of the append throughput
    Column("prev_hash", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("sig_seq", BigInteger, nullable=False),
    Index("ix_witness_component_seq", "component", "seq"),
    Index("ix_witness_operation_seq", "operation", "seq"),
    # partial: most entries carry no trace id, and indexing their NULLs slowed every append
    Index("ix_witness_trace_seq", "trace_id", "seq", sqlite_where=text("trace_id IS NOT NULL"),
          postgresql_where=text("trace_id IS NOT NULL")),
    Index("ix_witness_timestamp", "timestamp"),
)

head_table = Table(
    "witness_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("frontier", Text, nullable=False),  # CompactRange text: the right edge of the Merkle tree
    Column("key_id", String(16), nullable=False),
    Column("public_key", Text, nullable=False),
)

checkpoints_table = Table(
    "witness_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", String(64), nullable=False),
    Column("timestamp", String(32), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("milestone", Boolean, nullable=False),  # kept forever; other checkpoints only while latest
)

_ENTRY_COLUMNS = [c for c in entries_table.c]


def _check_schema(sync_conn: Any) -> None:
    """Refuse a log written by an older entry format instead of failing on the first append."""
    present = {c["name"] for c in inspect(sync_conn).get_columns(entries_table.name)}
    missing = sorted(c.name for c in entries_table.c if c.name not in present)
    if missing:
        raise WitnessStorageError(
            f"the witness log at this URL has an older schema (no column {', '.join(missing)}); "
            "export it with the version that wrote it and start a new log", error_code="WITNESS_SCHEMA_MISMATCH")


def normalise_sql_url(url: str) -> str:
    """Map ``sqlite:///…`` and ``postgresql://…`` to their async drivers; reject in-memory SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise WitnessInputError("in-memory SQLite cannot be shared by the writer; use memory:// instead",
                                    error_code="WITNESS_BAD_URL")
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise WitnessInputError(f"unsupported witness URL scheme {parsed.drivername!r}", error_code="WITNESS_BAD_URL")


def _row_to_entry(row: Any) -> StoredEntry:
    return StoredEntry(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10],
                       row[11])


_NAMES = ", ".join(c.name for c in _ENTRY_COLUMNS)

# PostgreSQL gets the whole batch as 12 arrays in one statement.
_POSTGRES_INSERT = (
    f"INSERT INTO {entries_table.name} ({_NAMES}) SELECT * FROM unnest("
    "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::text[], $10::text[], $11::text[], $12::bigint[])"
)


class SqlStore(WitnessStore):
    def __init__(self, url: str) -> None:
        self.url = normalise_sql_url(url)
        self._engine: AsyncEngine | None = None
        self._sqlite = self.url.startswith("sqlite")
        self._sqlite_file = make_url(self.url).database if self._sqlite else None
        self._committer: ThreadPoolExecutor | None = None  # SQLite appends: one thread, one raw connection
        self._appender: SqliteAppender | None = None

    @property
    def sqlite_file(self) -> str | None:
        """The database file of a SQLite log (the writer process opens it), None on PostgreSQL."""
        return os.path.expanduser(self._sqlite_file) if self._sqlite_file else None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise WitnessStorageError("store is not open")
        return self._engine

    def _create_engine(self) -> AsyncEngine:
        if self._sqlite:
            database = make_url(self.url).database
            assert database is not None
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(self.url, connect_args={"timeout": 60})
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
            return engine
        # acknowledged means durable even on servers tuned with synchronous_commit=off
        return create_async_engine(self.url, pool_size=4, max_overflow=4, pool_pre_ping=True,
                                   connect_args={"server_settings": {"synchronous_commit": "on"}})

    async def open(self, keys: WitnessKeys) -> None:
        self._engine = self._create_engine()
        last: Exception | None = None
        for attempt in range(20):  # concurrent first opens race on CREATE TABLE; retry
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
                    await conn.run_sync(_check_schema)
                    if self._sqlite:
                        await conn.exec_driver_sql(PRUNE_TRIGGER)
                await self._init_head(keys)
                return
            except (WitnessKeyError, WitnessStorageError):
                await self.close()
                raise
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                text = str(exc).lower()
                if not isinstance(exc, IntegrityError) and "exist" not in text and "locked" not in text:
                    await self.close()
                    raise WitnessStorageError(f"cannot open witness store: {exc}") from exc
                last = exc
                await asyncio.sleep(0.05 * (attempt + 1))
            except (SQLAlchemyError, OSError) as exc:
                await self.close()
                raise WitnessStorageError(f"cannot open witness store: {exc}") from exc
        await self.close()
        raise WitnessStorageError(f"cannot create witness schema: {last}")

    async def open_readonly(self) -> None:
        self._engine = self._create_engine()
        try:
            async with self.engine.connect() as conn:
                tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        except (SQLAlchemyError, OSError) as exc:
            await self.close()
            raise WitnessStorageError(f"cannot open witness store: {exc}") from exc
        if not {entries_table.name, head_table.name, checkpoints_table.name} <= tables:
            await self.close()
            raise WitnessStorageError("no witness log at this URL", error_code="WITNESS_NO_LOG")

    async def _init_head(self, keys: WitnessKeys) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(head_table.c.key_id).where(head_table.c.id == 1))).first()
            if row is None:
                await conn.execute(insert(head_table).values(
                    id=1, size=0, head_hash=GENESIS_HASH, frontier=CompactRange().to_text(), key_id=keys.key_id, public_key=keys.public_pem))
                return
        if row[0] != keys.key_id:
            raise WitnessKeyError(
                f"the log at this URL is signed by key {row[0]}, this witness holds key {keys.key_id}",
                error_code="WITNESS_KEY_MISMATCH",
            )

    async def close(self) -> None:
        if self._committer is not None:
            committer, self._committer = self._committer, None
            committer.shutdown(wait=True)  # the last append has returned: the connection is idle
        if self._appender is not None:
            appender, self._appender = self._appender, None
            appender.close()
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def append(self, batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None = None) -> Sealed:
        if self._sqlite:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._commit_pool(), self._sqlite_appender().append, batch, seal, presealed)
            except RuntimeError as exc:  # executors refuse work once the interpreter is shutting down
                if "shutdown" not in str(exc):
                    raise
                return self._sqlite_appender().append(batch, seal, presealed)  # the final flush, on the writer thread
        try:
            async with self.engine.begin() as conn:
                return await conn.run_sync(self._append_in, batch, seal, presealed)
        except (SQLAlchemyError, DBAPIError, OSError) as exc:
            raise WitnessStorageError(f"append failed: {exc}") from exc

    def _commit_pool(self) -> ThreadPoolExecutor:
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="witness-commit")
        return self._committer

    def _sqlite_appender(self) -> SqliteAppender:
        """The raw sqlite3 connection that runs SQLite appends (see ``sqlite_append``), made on first use."""
        if self._appender is None:
            assert self._sqlite_file is not None
            self._appender = SqliteAppender(self._sqlite_file)
        return self._appender

    def _append_in(self, conn: Any, batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None) -> Sealed:
        """One append transaction (run through ``run_sync``): lock the head, seal unless presealed fits, write."""
        locked = conn.execute(
            update(head_table).where(head_table.c.id == 1).values(size=head_table.c.size)
            .returning(head_table.c.size, head_table.c.head_hash, head_table.c.frontier)
        ).one()
        size, head_hash = locked[0], locked[1]
        frontier = frontier_of(locked[2], size)  # an unreadable head row is named, never a traceback
        if not isinstance(head_hash, str):
            raise WitnessHeadRewrittenError(f"the head row's hash is unreadable: {str(head_hash)[:70]!r}")
        sealed = presealed if presealed is not None and presealed.fits(size, head_hash) else \
            seal(size, head_hash, frontier, batch)
        rows, checkpoint = sealed.rows, sealed.checkpoint
        conn.exec_driver_sql(_POSTGRES_INSERT, tuple(list(column) for column in zip(*rows)))
        cps = checkpoints_table.c
        conn.execute(delete(checkpoints_table).where(cps.milestone.is_(False), cps.size == size))
        conn.execute(insert(checkpoints_table).values(
            size=checkpoint.size, root=checkpoint.root, timestamp=checkpoint.timestamp,
            key_id=checkpoint.key_id, signature=checkpoint.signature,
            milestone=is_milestone(size, checkpoint.size)))
        conn.execute(update(head_table).where(head_table.c.id == 1).values(
            size=size + len(rows), head_hash=rows[-1][ROW_CONTENT_HASH], frontier=sealed.frontier.to_text()))
        return sealed

    @staticmethod
    async def _leaves(conn: Any, start: int, end: int) -> list[bytes]:
        result = await conn.execute(
            select(entries_table.c.content_hash, entries_table.c.signature)
            .where(entries_table.c.seq >= start, entries_table.c.seq < end)
            .order_by(entries_table.c.seq)
        )
        return [stored_leaf(h, s) for h, s in result]

    async def size(self) -> int:
        async with self.engine.connect() as conn:
            size = (await conn.execute(select(head_table.c.size).where(head_table.c.id == 1))).scalar_one()
        if type(size) is not int:  # the column as stored: an edited head row is named, not int()-ed
            raise WitnessStorageError(f"the head row's size is unreadable: {size!r:.40} (run verify)",
                                      error_code="WITNESS_ROW_UNREADABLE")
        return size

    async def leaves(self, start: int, end: int) -> list[bytes]:
        async with self.engine.connect() as conn:
            return await self._leaves(conn, start, end)

    async def query(self, q: Query) -> list[StoredEntry]:
        t = entries_table.c
        stmt = select(*_ENTRY_COLUMNS).order_by(t.seq.desc() if q.newest_first else t.seq)
        if q.start_seq:
            stmt = stmt.where(t.seq >= q.start_seq)
        if q.end_seq is not None:
            stmt = stmt.where(t.seq < q.end_seq)
        if q.component is not None:
            stmt = stmt.where(t.component == q.component)
        if q.operation is not None:
            stmt = stmt.where(t.operation == q.operation)
        if q.trace_id is not None:
            stmt = stmt.where(t.trace_id == q.trace_id)
        if q.since is not None:
            stmt = stmt.where(t.timestamp >= q.since)
        if q.until is not None:
            stmt = stmt.where(t.timestamp < q.until)
        if q.contains is not None:  # a literal, case-sensitive substring on both engines (LIKE is neither)
            find = func.instr if self._sqlite else func.strpos
            stmt = stmt.where(find(t.params, q.contains) > 0)
        if q.limit is not None:
            stmt = stmt.limit(q.limit)
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(stmt)
                return [_row_to_entry(r) for r in result]
        except (SQLAlchemyError, OSError) as exc:
            raise WitnessStorageError(f"query failed: {exc}") from exc
        except (OverflowError, UnicodeEncodeError) as exc:  # a filter the driver cannot bind (callers check first)
            raise WitnessInputError(f"query filter cannot be used: {exc}", error_code="WITNESS_INVALID_FILTER") from exc

    async def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are stored; asked 500 at a time (a writer process may leave 12,288 to check,
        more than some SQLite builds take as parameters of one statement)."""
        found: set[str] = set()
        async with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                result = await conn.execute(select(entries_table.c.id).where(entries_table.c.id.in_(chunk)))
                found.update(r[0] for r in result)
        return found

    async def checkpoints(self) -> list[Checkpoint]:
        c = checkpoints_table.c
        async with self.engine.connect() as conn:
            result = await conn.execute(select(c.size, c.root, c.timestamp, c.key_id, c.signature).order_by(c.size))
            return [checkpoint_of_stored(r) for r in result]

    async def signed_head(self) -> SignedHead:
        try:
            async with self.engine.connect() as conn:
                row = (await conn.exec_driver_sql(SIGNED_HEAD)).first()
        except (SQLAlchemyError, OSError) as exc:
            raise WitnessStorageError(f"cannot read the log head: {exc}") from exc
        return signed_head_of(row)

    async def link_rows(self, start: int, end: int) -> list[tuple[Any, Any]]:
        t = entries_table.c
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(select(t.content_hash, t.signature)
                                            .where(t.seq >= start, t.seq < end).order_by(t.seq))
                return [(r[0], r[1]) for r in result]
        except (SQLAlchemyError, OSError) as exc:
            raise WitnessStorageError(f"cannot read entries {start}..{end - 1}: {exc}") from exc

    async def checkpoint_rows(self) -> list[tuple[Any, ...]]:
        try:
            async with self.engine.connect() as conn:
                result = await conn.exec_driver_sql(
                    f"SELECT size, root, timestamp, key_id, signature FROM {checkpoints_table.name} ORDER BY size")
                return [tuple(r) for r in result]
        except (SQLAlchemyError, OSError) as exc:
            raise WitnessStorageError(f"cannot read checkpoints: {exc}") from exc

    async def latest_checkpoint(self) -> Checkpoint | None:
        c = checkpoints_table.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(c.size, c.root, c.timestamp, c.key_id, c.signature).order_by(c.size.desc()).limit(1)
            )).first()
        return None if row is None else checkpoint_of_stored(row)


def sqlite_path(url: str) -> str | None:
    parsed = make_url(url)
    return os.path.expanduser(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
