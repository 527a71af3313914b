"""The connection and transaction of an SQLite single writer (standard library only).

Both single writers of the platform (the witness's appender and the PoOT writer process) write through a
connection in autocommit mode, so that every transaction is explicit, and take the database's write lock
at the start of each (``BEGIN IMMEDIATE``): their rules read and then write, which is sound only while no
other writer can come in between. WAL checkpoints run beside them (``sqlite_checkpoint``), the writer
process that hosts them is ``writer_process``, and their pipe frames are ``frames``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence

__all__ = ["connect_writer", "immediate"]


def connect_writer(path: str, pragmas: Sequence[str], *, timeout: float = 30.0) -> sqlite3.Connection:
    """A writer's connection: autocommit (transactions are explicit), then each ``PRAGMA`` in order."""
    con = sqlite3.connect(os.path.expanduser(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    for pragma in pragmas:
        con.execute(f"PRAGMA {pragma}")
    return con


@contextlib.contextmanager
def immediate(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction holding the write lock from its start: committed at the end of the block, rolled
    back if anything (an error, a cancellation) leaves it early."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.rollback()
        raise
