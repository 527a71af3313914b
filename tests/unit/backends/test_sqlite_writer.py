"""The single writers' connection and transaction: explicit, holding the write lock from the start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backends.sqlite_writer import connect_writer, immediate


def test_a_transaction_commits_at_the_end_and_holds_the_write_lock_throughout(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    con = connect_writer(path, ("journal_mode=WAL", "synchronous=FULL"))
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.isolation_level is None  # autocommit: nothing is a transaction unless opened explicitly
    con.execute("CREATE TABLE t (x INTEGER)")
    other = connect_writer(path, (), timeout=0)
    with immediate(con):
        con.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(sqlite3.OperationalError):  # another writer cannot even start (not only commit)
            other.execute("BEGIN IMMEDIATE")
        assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 0  # readers see nothing yet
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1


@pytest.mark.parametrize("leaving", [ValueError("a rule refused"), KeyboardInterrupt()])
def test_anything_that_leaves_the_block_early_rolls_it_back(tmp_path: Path, leaving: BaseException) -> None:
    con = connect_writer(str(tmp_path / "w.db"), ())
    con.execute("CREATE TABLE t (x INTEGER)")
    with pytest.raises(type(leaving)):
        with immediate(con):
            con.execute("INSERT INTO t VALUES (1)")
            raise leaving
    assert not con.in_transaction and con.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with immediate(con):  # the connection is usable again at once
        con.execute("INSERT INTO t VALUES (2)")
    assert con.execute("SELECT x FROM t").fetchall() == [(2,)]
