"""The background checkpointer keeps a busy writer's WAL from growing without end, off the commit path."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from backends.sqlite_checkpoint import BackgroundCheckpointer


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")  # as the writers run: no checkpoint inside a commit
    return con


def _write(con: sqlite3.Connection, checkpoints: BackgroundCheckpointer | None, rounds: int) -> int:
    """Commits of 50 rows of 1 KiB; returns the largest WAL size seen."""
    wal, largest = Path(con.execute("PRAGMA database_list").fetchone()[2] + "-wal"), 0
    for _ in range(rounds):
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT INTO t (v) VALUES (?)", [(b"x" * 1024,)] * 50)
        con.execute("COMMIT")
        if checkpoints is not None:
            checkpoints.after_commit(con, 50)
        largest = max(largest, wal.stat().st_size)
    return largest


def test_the_wal_restarts_instead_of_growing_and_only_with_the_checkpointer(tmp_path: Path) -> None:
    free, bounded = _connect(tmp_path / "free.db"), _connect(tmp_path / "bounded.db")
    for con in (free, bounded):
        con.execute("CREATE TABLE t (v BLOB)")
    checkpoints = BackgroundCheckpointer(lambda: _connect(tmp_path / "bounded.db"), 500, name="test-checkpoint")
    try:
        unbounded_wal = _write(free, None, 400)  # 20 MB appended with no checkpoint: the WAL holds it all
        bounded_wal = _write(bounded, checkpoints, 400)
    finally:
        checkpoints.close()
        free.close()
    assert checkpoints.passes > 0
    assert unbounded_wal > 15_000_000
    assert bounded_wal < unbounded_wal / 3  # restarted from its beginning after the passes
    assert bounded.execute("SELECT count(*) FROM t").fetchone()[0] == 20_000  # nothing lost on the way
    bounded.close()


def test_close_ends_the_thread_even_when_no_pass_was_asked_for(tmp_path: Path) -> None:
    con = _connect(tmp_path / "idle.db")
    checkpoints = BackgroundCheckpointer(lambda: _connect(tmp_path / "idle.db"), 10**9, name="idle")
    checkpoints.close(timeout=5)
    assert not checkpoints._thread.is_alive() and checkpoints.passes == 0
    con.close()
