"""WAL checkpoints beside an SQLite writer instead of inside its commits (standard library only).

SQLite's automatic checkpoint runs inside the COMMIT that pushes the WAL past its limit: the writer's
transaction then waits for the copy and its fsync (benchmarks/RESULTS.md, "Figures behind the code").
Both single writers of the platform (the witness's appender and the PoOT writer process) turn it off and
use this instead: a second connection, on a thread of its own, runs a PASSIVE checkpoint (it never blocks
the writer) every ``every`` units of work (entries, groups) the writer reports. A checkpoint that runs
while the writer appends never catches up with it, and SQLite restarts the WAL from its beginning only
after a complete one, so once a pass is done the writer finishes it between two transactions (only the
frames appended meanwhile are left to copy) and its next transaction restarts the WAL instead of growing
it without end.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

__all__ = ["BackgroundCheckpointer", "PASSIVE"]

PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"


class BackgroundCheckpointer:
    """Checkpoints on its own connection (``connect()``, opened on its thread) every ``every`` units."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], every: int, *, name: str) -> None:
        self._connect = connect
        self.every = every
        self._since = 0
        self._due = threading.Event()
        self._copied = threading.Event()
        self._stop = False
        self.passes = 0  # checkpoints the thread completed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        con = self._connect()
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stop:
                    return
                try:
                    con.execute(PASSIVE).fetchall()
                except sqlite3.Error:
                    continue  # busy or locked: the next pass copies what this one could not
                self.passes += 1
                self._copied.set()
        finally:
            con.close()

    def after_commit(self, writer: sqlite3.Connection, units: int) -> None:
        """Called by the writer between two transactions, with the work its last commit did."""
        if self._copied.is_set():  # finish the thread's pass: the WAL can then restart
            self._copied.clear()
            try:
                writer.execute(PASSIVE).fetchall()
            except sqlite3.Error:
                pass
        self._since += units
        if self._since >= self.every:
            self._since = 0
            self._due.set()

    def close(self, timeout: float = 30.0) -> None:
        self._stop = True
        self._due.set()
        self._thread.join(timeout)
