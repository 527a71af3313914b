"""The PoOT writer process: runs ``poot_sqlite.group_transaction`` for groups sent by its parent.

Run as ``python -m lucid.node.sqlite_writer.poot_writer_child <database file> <pragma>...`` by
``lucid.node.db.poot_writer_process``, which explains why a process. Standard library only (this package
holds nothing else), so it starts in tens of milliseconds.

Protocol, on stdin/stdout: ``backends.frames`` (a length, then a pickle). A request is
``(now, cutoff, store_output, items)``; the answer is ``("ok", {index: code})`` once the group is
committed, or ``("error", "<exception type>: <message>")`` once it is rolled back. Requests are
answered in order. Pickle is safe here: both ends are this package, over a private pipe.

Checkpoints run beside the commits, every ``CHECKPOINT_EVERY`` commits, as for the witness's writer
(``backends.sqlite_checkpoint``; the connection's automatic checkpoint is off).
"""

from __future__ import annotations

import functools
import sys
from typing import BinaryIO, Callable

from backends.frames import read_frame, write_frame
from backends.sqlite_checkpoint import BackgroundCheckpointer
from backends.sqlite_writer import connect_writer, immediate

from .poot_sqlite import group_transaction

CHECKPOINT_EVERY = 200




def serve(path: str, pragmas: list[str], requests: BinaryIO, answers: BinaryIO,
          after_commit: Callable[[int], None] | None = None) -> None:
    """Answer groups until the parent closes the pipe; ``after_commit`` is called with the number of commits
    so far, before the answer (the crash tests die there: ``tests/fixtures/crashing_poot_writer.py``)."""
    pragmas = [p for p in pragmas if not p.startswith("wal_autocheckpoint")] + ["wal_autocheckpoint=0"]
    con = connect_writer(path, pragmas)
    checkpoints = BackgroundCheckpointer(functools.partial(connect_writer, path, pragmas), CHECKPOINT_EVERY,
                                         name="poot-checkpoint")
    commits = 0
    while (request := read_frame(requests)) is not None:
        now, cutoff, store_output, items = request
        cur = con.cursor()
        try:
            with immediate(con):
                rejected = group_transaction(cur, items, now, cutoff, store_output)
            answer: tuple[object, ...] = ("ok", rejected)
        except Exception as exc:  # noqa: BLE001 - the group is rolled back and its waiters get the error
            answer = ("error", f"{type(exc).__name__}: {exc}")
        finally:
            cur.close()
        commits += answer[0] == "ok"
        if after_commit is not None:
            after_commit(commits)
        write_frame(answers, answer)
        checkpoints.after_commit(con, answer[0] == "ok")  # after the answer: off the group's path
    checkpoints.close()
    con.close()


def main(after_commit: Callable[[int], None] | None = None) -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m lucid.node.sqlite_writer.poot_writer_child <database file> [pragma ...]")
    serve(sys.argv[1], sys.argv[2:], sys.stdin.buffer, sys.stdout.buffer, after_commit)


if __name__ == "__main__":
    main()
