"""The PoOT writer process: runs ``poot_sqlite.group_transaction`` for groups sent by its parent.

Run as ``python -m lucid.node.db.poot_writer_child <database file> <pragma>...`` by poot_writer_process,
which explains why a process. Standard library only (``lucid.node.db`` imports its heavy modules
lazily), so it starts in tens of milliseconds.

Protocol, on stdin/stdout: frames of a 4-byte little-endian length and a pickle. A request is
``(now, cutoff, store_output, items)``; the answer is ``("ok", {index: code})`` once the group is
committed, or ``("error", "<exception type>: <message>")`` once it is rolled back. Requests are
answered in order. Pickle is safe here: both ends are this package, over a private pipe.

Checkpoints run beside the commits: the connection's automatic checkpoint is off, and a second
connection on a thread of this process copies the WAL back into the database (PASSIVE: it never
blocks the writer) every ``CHECKPOINT_EVERY`` commits. An automatic checkpoint ran inside the
committing transaction and, with its fsync, held a group for ~100 ms. A checkpoint that runs while
the writer appends never catches up with it, and SQLite restarts the WAL from its beginning only
after a complete one: so once the thread's pass is done, the writer finishes it between two groups
(only the frames appended meanwhile are left to copy), and its next transaction restarts the WAL
instead of growing it without end.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import struct
import sys
import threading
from typing import BinaryIO

from .poot_sqlite import group_transaction

CHECKPOINT_EVERY = 200
_HEADER = struct.Struct("<I")
# Fault injection for the crash tests: exit (as a kill would) right after the n-th commit, before its
# answer is written: the parent must then learn the group's fate from the database.
_EXIT_AFTER_COMMIT = int(os.environ.get("LUCID_POOT_WRITER_EXIT_AFTER_COMMIT", "0"))


def _connect(path: str, pragmas: list[str]) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    for pragma in pragmas:
        con.execute(f"PRAGMA {pragma}")
    return con


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    return payload if len(payload) == size else None


def _checkpointer(path: str, pragmas: list[str], due: threading.Event, copied: threading.Event) -> None:
    con = _connect(path, pragmas)
    while True:
        due.wait()
        due.clear()
        try:
            con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            continue  # busy or locked: the next one copies what this one could not
        copied.set()


def serve(path: str, pragmas: list[str], requests: BinaryIO, answers: BinaryIO) -> None:
    pragmas = [p for p in pragmas if not p.startswith("wal_autocheckpoint")] + ["wal_autocheckpoint=0"]
    con = _connect(path, pragmas)
    due, copied = threading.Event(), threading.Event()
    threading.Thread(target=_checkpointer, args=(path, pragmas, due, copied), daemon=True,
                     name="poot-checkpoint").start()
    commits = 0
    while (frame := _read_frame(requests)) is not None:
        now, cutoff, store_output, items = pickle.loads(frame)
        cur = con.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            rejected = group_transaction(cur, items, now, cutoff, store_output)
            cur.execute("COMMIT")
            answer: tuple[object, ...] = ("ok", rejected)
        except Exception as exc:  # noqa: BLE001 - the group is rolled back and its waiters get the error
            if con.in_transaction:
                con.rollback()
            answer = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            cur.close()
        commits += answer[0] == "ok"
        if _EXIT_AFTER_COMMIT and commits >= _EXIT_AFTER_COMMIT:
            os._exit(17)
        if commits % CHECKPOINT_EVERY == 0 and answer[0] == "ok":
            due.set()
        out = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(_HEADER.pack(len(out)) + out)
        answers.flush()
        if copied.is_set():  # finish the thread's pass: the WAL can then restart (see above)
            copied.clear()
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error:
                pass
    con.close()


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m lucid.node.db.poot_writer_child <database file> [pragma ...]")
    serve(sys.argv[1], sys.argv[2:], sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
