"""A local outbox: messages accepted while the broker is away, kept on disk until the broker confirms them.

Why: a service that must not lose a message during a broker outage otherwise has to keep it itself. With
an outbox, ``send_message`` writes the message durably to a SQLite file (``synchronous=FULL``) when the
broker is down or its confirm does not come, and returns its id; a flusher publishes the outbox in the
order the messages were accepted, one confirmed message at a time, and deletes each only after its
confirm. While anything is waiting in the outbox, later sends queue behind it, so a sequential sender's
order holds. A message is sent again only with its own id (after a crash between the confirm and the
delete, or a confirm that never came), so a consumer can recognise the copy. A message the broker
refuses outright (it cannot be routed) is kept in the file as ``refused`` for the operator, never dropped.
A caller that resends with its own ``message_id`` while the first copy still waits adds nothing; a
different message under that id is refused, since keeping only one of the two would lose the other.

SQLite (stdlib ``sqlite3``) on one worker thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backends.mq import QueueMessage
from lucid.service_mesh.errors import InvalidServiceConfigError, MessageDeliveryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    body BLOB NOT NULL,
    priority INTEGER NOT NULL,
    ttl INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    correlation_id TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'refused')),
    error TEXT
)
"""
_COLUMNS = "seq, message_id, source, destination, body, priority, ttl, timestamp, correlation_id"


class Outbox:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lucid-outbox")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # accepted means on disk
        db.execute(_SCHEMA)
        self._db = db

    async def open(self) -> None:
        if self._db is None:
            await self._run(self._open)

    def _add(self, m: QueueMessage) -> bool:
        assert self._db is not None
        inserted = self._db.execute(
            f"INSERT OR IGNORE INTO outbox ({_COLUMNS.replace('seq, ', '')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.message_id, m.source, m.destination, m.body, m.priority, m.ttl, m.timestamp, m.correlation_id))
        if inserted.rowcount == 1:
            return True
        row = self._db.execute("SELECT source, destination, body, priority, ttl, correlation_id, state, error "
                               "FROM outbox WHERE message_id = ?", (m.message_id,)).fetchone()
        if row is None:  # cannot happen with one writer thread; refuse rather than report a lost message sent
            raise MessageDeliveryError(f"message {m.message_id} could not be written to the outbox")
        *kept, state, error = row
        if tuple(kept[:2]) + (bytes(kept[2]),) + tuple(kept[3:]) != (
                m.source, m.destination, m.body, m.priority, m.ttl, m.correlation_id):
            raise InvalidServiceConfigError(
                f"message id {m.message_id!r} is already in the outbox for a different message; a message id may "
                "be reused only to resend the same message", details={"field": "message_id"})
        if state == "refused":
            raise MessageDeliveryError(f"message {m.message_id} was refused by the broker before and is kept in the "
                                       f"outbox for the operator: {error}")
        return False

    async def add(self, message: QueueMessage) -> bool:
        """Keep ``message`` until the broker confirms it. True if it was added; False if the same message
        (a resend with its id) is already waiting. A different message under a waiting id is refused
        (InvalidServiceConfigError, 1004) instead of being dropped in silence; resending a message the broker
        refused outright is MessageDeliveryError (1301)."""
        return await self._run(self._add, message)

    def _pending(self, limit: int) -> list[tuple[int, QueueMessage]]:
        assert self._db is not None
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?",
                                (limit,)).fetchall()
        return [(r[0], QueueMessage(message_id=r[1], source=r[2], destination=r[3], body=bytes(r[4]),
                                    priority=r[5], ttl=r[6], timestamp=r[7], correlation_id=r[8])) for r in rows]

    async def pending(self, limit: int = 256) -> list[tuple[int, QueueMessage]]:
        """The oldest waiting messages, in the order they were accepted."""
        return await self._run(self._pending, limit)

    def _count(self, state: str) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT count(*) FROM outbox WHERE state = ?", (state,)).fetchone()[0])

    async def count(self, state: str = "pending") -> int:
        return await self._run(self._count, state)

    def _remove(self, seq: int) -> None:
        assert self._db is not None
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    async def remove(self, seq: int) -> None:
        await self._run(self._remove, seq)

    def _refuse(self, seq: int, error: str) -> None:
        assert self._db is not None
        self._db.execute("UPDATE outbox SET state = 'refused', error = ? WHERE seq = ?", (error[:1000], seq))

    async def refuse(self, seq: int, error: str) -> None:
        await self._run(self._refuse, seq, error)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._run(db.close)
        self._executor.shutdown(wait=False)
