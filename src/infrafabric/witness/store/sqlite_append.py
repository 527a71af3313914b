"""The SQLite append transaction, through the standard library's sqlite3 module only.

Shared by the witness's commit thread (``SqlStore`` with ``writer="thread"``) and the SQLite writer
process (``writer_child``), which must start without importing SQLAlchemy. The schema itself is
created by ``sql.py`` (a unit test holds the column list below to its table definition).

Why not through SQLAlchemy + aiosqlite like the reads: each statement there is a round trip between
the writer's event loop and the aiosqlite thread, and every statement gives up the GIL and then waits
for it behind the threads that log and seal (up to a switch interval, 5 ms, each time). So a batch is
as few statements as can keep it atomic: BEGIN IMMEDIATE (the database write lock, which serialises
writers in every process as the head-row UPDATE does on PostgreSQL), one multi-row INSERT, the
checkpoint, the head (a trigger prunes the old latest checkpoint), COMMIT. The head is not read back
when this appender wrote it last: the UPDATE of the head is guarded by the old size and hash, and
another writer's entries would collide on seq first, so a stale head rolls back and the batch is
retried after reading the head.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Sequence
from itertools import chain

from backends.sqlite_checkpoint import BackgroundCheckpointer
from backends.sqlite_writer import connect_writer, immediate

from ..checkpoint import Checkpoint
from ..errors import WitnessFormatError, WitnessHeadRewrittenError, WitnessStorageError
from ..trust import SignedHead, frontier_of
from .base import ROW_CONTENT_HASH, PendingEntry, Sealed, Sealer, is_milestone

ENTRIES_TABLE = "witness_entries"
HEAD_TABLE = "witness_head"
CHECKPOINTS_TABLE = "witness_checkpoints"
ENTRY_COLUMN_NAMES = ("seq", "id", "timestamp", "component", "operation", "params", "severity", "trace_id",
                      "prev_hash", "content_hash", "signature", "sig_seq")
_NAMES = ", ".join(ENTRY_COLUMN_NAMES)


# WAL: readers never block the writer; synchronous=FULL: a commit is on disk when acknowledged
PRAGMAS = ("journal_mode=WAL", "synchronous=FULL")


def sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object = None) -> None:
    """The log's pragmas on a connection SQLAlchemy opened (its ``connect`` event)."""
    cursor = dbapi_connection.cursor()
    for pragma in PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _rows_per_insert() -> int:
    """Largest power of two ≤ 16,384 rows whose 12 variables each fit this SQLite build's limit."""
    with contextlib.closing(sqlite3.connect(":memory:")) as probe:
        limit = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    rows = 16384
    while rows > 1 and rows * len(ENTRY_COLUMN_NAMES) > limit:
        rows //= 2
    return rows


_SQLITE_CHUNK = _rows_per_insert()


@functools.lru_cache(maxsize=32)
def _sqlite_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(ENTRY_COLUMN_NAMES)) + ")"
    return f"INSERT INTO {ENTRIES_TABLE} ({_NAMES}) VALUES " + ", ".join([one] * rows)


def _sqlite_chunks(n: int) -> list[int]:
    """Full chunks, then the rest as powers of two: at most a dozen statement shapes, all cached.

    One statement per chunk of rows, not one per row: the sqlite3 module releases the GIL around every
    statement step, and with executemany a busy logging thread made the writer wait for the GIL once
    per row (benchmarks/RESULTS.md, "Figures behind the code").
    """
    sizes = [_SQLITE_CHUNK] * (n // _SQLITE_CHUNK)
    rest, bit = n % _SQLITE_CHUNK, _SQLITE_CHUNK >> 1
    while rest:
        if rest >= bit:
            sizes.append(bit)
            rest -= bit
        bit >>= 1
    return sizes


READ_HEAD = f"SELECT size, head_hash, frontier FROM {HEAD_TABLE} WHERE id = 1"
# The head and the checkpoint at its size in one statement: one snapshot on every engine (a writer
# commits both in one transaction), so a concurrent append cannot make a genuine head look unsigned.
SIGNED_HEAD = (f"SELECT h.size, h.head_hash, h.frontier, c.size, c.root, c.timestamp, c.key_id, c.signature "
               f"FROM {HEAD_TABLE} h LEFT JOIN {CHECKPOINTS_TABLE} c ON c.size = h.size WHERE h.id = 1")
LINK_ROWS = f"SELECT content_hash, signature FROM {ENTRIES_TABLE} WHERE seq >= ? AND seq < ? ORDER BY seq"


def signed_head_of(row: Sequence[object] | None) -> SignedHead:
    """A SignedHead from a SIGNED_HEAD row; a checkpoint whose columns do not parse is absent."""
    if row is None:
        raise WitnessHeadRewrittenError("the log has no head row")
    checkpoint = None
    if row[3] is not None:
        try:
            checkpoint = Checkpoint.from_dict({"size": row[3], "root": row[4], "timestamp": row[5],
                                               "key_id": row[6], "signature": row[7]})
        except WitnessFormatError:
            checkpoint = None
    return SignedHead(row[0], row[1], row[2], checkpoint)
# The latest checkpoint is replaced by the next one unless it is a milestone; in SQLite a trigger does it,
# which saves the append transaction a statement (and a GIL hand-off).
PRUNE_TRIGGER = (
    f"CREATE TRIGGER IF NOT EXISTS witness_prune_latest_checkpoint AFTER UPDATE OF size ON {HEAD_TABLE} "
    f"WHEN NEW.size > OLD.size BEGIN DELETE FROM {CHECKPOINTS_TABLE} WHERE size = OLD.size AND milestone = 0; END"
)
_ADD_CHECKPOINT = (f"INSERT INTO {CHECKPOINTS_TABLE} (size, root, timestamp, key_id, signature, milestone)"
                   " VALUES (?, ?, ?, ?, ?, ?)")
_MOVE_HEAD = (f"UPDATE {HEAD_TABLE} SET size = ?, head_hash = ?, frontier = ? "
              "WHERE id = 1 AND size = ? AND head_hash = ?")


class _HeadMoved(Exception):
    """The head this appender remembered is stale: another writer appended. Retry after reading it."""


def open_raw_sqlite(database: str) -> sqlite3.Connection:
    """The append connection (``backends.sqlite_writer``), same pragmas as the engine's."""
    return connect_writer(database, PRAGMAS, timeout=60)


CHECKPOINT_EVERY_ENTRIES = 16384


class SqliteAppender:
    """One raw connection that appends sealed batches to one SQLite log (used from one thread at a time).

    ``background_checkpoints`` moves WAL checkpoints off the commit path (``backends.sqlite_checkpoint``);
    the writer process turns it on.
    """

    def __init__(self, database: str, *, background_checkpoints: bool = False) -> None:
        self.database = database
        self._con: sqlite3.Connection | None = None
        self._known_head: tuple[int, str, str] | None = None  # (size, hash, frontier) as this appender left it
        self._background = background_checkpoints
        self._checkpointer: BackgroundCheckpointer | None = None

    def _connect(self) -> sqlite3.Connection:
        con = open_raw_sqlite(self.database)
        if self._background:
            con.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = BackgroundCheckpointer(functools.partial(open_raw_sqlite, self.database),
                                                        CHECKPOINT_EVERY_ENTRIES, name="witness-checkpoint")
        return con

    def _after_commit(self, con: sqlite3.Connection, entries: int) -> None:
        if self._checkpointer is not None:
            self._checkpointer.after_commit(con, entries)

    def append(self, batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None) -> Sealed:
        """Commit ``batch`` after the current head: ``presealed`` if it still fits, else sealed under the lock."""
        con = self._con
        try:
            if con is None:
                con = self._con = self._connect()
            if self._known_head is not None:
                try:
                    return self._transaction(con, self._known_head, batch, seal, presealed)
                except _HeadMoved:
                    pass
            return self._transaction(con, None, batch, seal, presealed)
        except sqlite3.Error as exc:
            raise WitnessStorageError(f"append failed: {exc}") from exc

    def _transaction(self, con: sqlite3.Connection, known: tuple[int, str, str] | None,
                     batch: Sequence[PendingEntry], seal: Sealer, presealed: Sealed | None) -> Sealed:
        self._known_head = None
        with immediate(con):
            size, head_hash, frontier_text = known if known is not None else con.execute(READ_HEAD).fetchone()
            frontier = frontier_of(frontier_text, size)  # an unreadable head row is named, never a traceback
            if not isinstance(head_hash, str):
                raise WitnessHeadRewrittenError(f"the head row's hash is unreadable: {str(head_hash)[:70]!r}")
            sealed = presealed if presealed is not None and presealed.fits(size, head_hash) else \
                seal(size, head_hash, frontier, batch)
            rows, checkpoint = sealed.rows, sealed.checkpoint
            new_head = (size + len(rows), rows[-1][ROW_CONTENT_HASH], sealed.frontier.to_text())
            try:
                width = len(ENTRY_COLUMN_NAMES)
                params = sealed.params if sealed.params is not None else tuple(chain.from_iterable(rows))
                start = 0
                for chunk in _sqlite_chunks(len(rows)):
                    con.execute(_sqlite_insert(chunk), params[start * width : (start + chunk) * width]
                                if chunk != len(rows) else params)
                    start += chunk
                con.execute(_ADD_CHECKPOINT, (
                    checkpoint.size, checkpoint.root, checkpoint.timestamp, checkpoint.key_id, checkpoint.signature,
                    int(is_milestone(size, checkpoint.size))))
            except sqlite3.IntegrityError:
                if known is not None:  # another writer appended since: its seqs are taken
                    raise _HeadMoved from None
                raise
            if con.execute(_MOVE_HEAD, (*new_head, size, head_hash)).rowcount != 1:
                if known is not None:
                    raise _HeadMoved
                raise WitnessStorageError("the head row changed while this writer held the write lock")
        self._known_head = new_head
        self._after_commit(con, len(rows))
        return sealed

    def signed_head(self) -> SignedHead:
        """The head and its checkpoint, for a writer proving a head it did not seal (see ``trust.py``)."""
        try:
            if self._con is None:
                self._con = self._connect()
            return signed_head_of(self._con.execute(SIGNED_HEAD).fetchone())
        except sqlite3.Error as exc:
            raise WitnessStorageError(f"cannot read the log head: {exc}") from exc

    def link_rows(self, start: int, end: int) -> list[tuple[object, object]]:
        try:
            if self._con is None:
                self._con = self._connect()
            return self._con.execute(LINK_ROWS, (start, end)).fetchall()
        except sqlite3.Error as exc:
            raise WitnessStorageError(f"cannot read entries {start}..{end - 1}: {exc}") from exc

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.close()
        con, self._con = self._con, None
        if con is not None:
            con.close()
