"""The PoOT writer process (SQLite's default PoOT group committer): pipelining, loss and reconciliation.

A real child process on a real SQLite file. The process is killed (SIGKILL) with groups in flight, or
made to exit between a COMMIT and its answer: every waiter must learn its proof's true fate (stored
exactly once, or not at all), and the next proofs go to a new process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPoOTRepository
from lucid.node.db import poot_writer_process
from lucid.node.sqlite_writer import poot_sqlite
from lucid.node.db.tables import poot_validations
from lucid.node.errors import GroupCommitError, InvalidPoOTError, NonceReplayError
from lucid.node.models.node_models import Node, NodeStatus
from lucid.node.models.poot_models import PoOTValidationResult
from lucid.node.poot import PoOTValidator


def _proof(node_id: str, nonce: str) -> PoOTValidationResult:
    return PoOTValidationResult(node_id=node_id, output_hash="c" * 64, nonce=nonce, is_valid=True, score=60.0,
                                confidence=0.5, timestamp=datetime.now(UTC))


async def _db(tmp_path: Path, *nodes: str) -> NodeDatabase:
    db = NodeDatabase(f"sqlite+aiosqlite:///{tmp_path / 'nodes.db'}")
    await db.create_all()
    for nid in nodes:
        await SqlNodeRepository(db).create(Node(node_id=nid, name=nid.replace("_", "-"), status="active"))
    return db


def _rows(tmp_path: Path) -> dict[str, tuple[int, str]]:
    with sqlite3.connect(tmp_path / "nodes.db") as con:
        return {vid: (valid, errors) for vid, valid, errors in
                con.execute("SELECT validation_id, is_valid, errors FROM poot_validations")}


def _nonces(tmp_path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "nodes.db") as con:
        return set(con.execute("SELECT node_id, nonce FROM poot_nonces"))


def test_group_item_columns_are_the_tables() -> None:
    assert poot_sqlite.COLUMNS == tuple(c.name for c in poot_validations.columns)


async def test_process_is_the_default_and_groups_overlap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validating and committing overlap: a second group is sent while the first is being committed."""
    monkeypatch.delenv("LUCID_NODE_POOT_WRITER", raising=False)
    db = await _db(tmp_path, "node_pipe_0001")
    try:
        repo = SqlPoOTRepository(db, store_output=False)
        proc = db.poot_writer_process()
        assert repo.commits.process is proc and proc is not None
        deepest = 0
        submit = proc.submit

        def counting_submit(*args: object) -> asyncio.Future[dict[int, str]]:
            nonlocal deepest
            fut = submit(*args)  # type: ignore[arg-type]
            deepest = max(deepest, proc.in_flight)
            return fut

        proc.submit = counting_submit  # type: ignore[method-assign]
        validator = PoOTValidator(repo)
        ts = datetime.now(UTC)
        results = await asyncio.gather(*(validator.validate_poot("node_pipe_0001", "out", ts, f"pipe-nonce-{i:04d}")
                                         for i in range(200)))
        assert deepest == 2 and proc.starts == 1 and proc.pid is not None
        rows = _rows(tmp_path)
        assert set(rows) == {r.validation_id for r in results}
        assert len(_nonces(tmp_path)) == 200
        pid = proc.pid
    finally:
        await db.dispose()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # dispose stopped (and reaped) it


async def test_killed_process_loses_nothing_acknowledged_and_stores_nothing_refused(tmp_path: Path) -> None:
    """SIGKILL once the first group is answered, with more in flight and queued: a waiter told None has its
    row and its nonce exactly once, a waiter told GroupCommitError has neither (and may retry), and the
    queued proofs are committed by a new process."""
    db = await _db(tmp_path, "node_kill_0001")
    try:
        repo = SqlPoOTRepository(db, store_output=False)
        proc = db.poot_writer_process()
        assert proc is not None
        await proc.start()
        proofs = [_proof("node_kill_0001", f"kill-{i:04d}") for i in range(400)]
        saves = [asyncio.ensure_future(repo.save_validation(v, claim_nonce=True)) for v in proofs]
        saves[0].add_done_callback(lambda _f: os.kill(proc.pid or 0, signal.SIGKILL))
        results = await asyncio.gather(*saves, return_exceptions=True)
        lost = [v for v, r in zip(proofs, results) if isinstance(r, GroupCommitError)]
        kept = [v for v, r in zip(proofs, results) if r is None]
        assert len(lost) + len(kept) == 400, [r for r in results if r is not None and not isinstance(r, GroupCommitError)]
        assert proc.starts == 2 and kept
        rows = _rows(tmp_path)
        assert set(rows) == {v.validation_id for v in kept}
        assert _nonces(tmp_path) == {("node_kill_0001", v.nonce) for v in kept}
        # a refused proof may be sent again; an acknowledged one is a replay
        if lost:
            await repo.save_validation(_proof("node_kill_0001", lost[0].nonce), claim_nonce=True)
        with pytest.raises(NonceReplayError):
            await repo.save_validation(_proof("node_kill_0001", kept[0].nonce), claim_nonce=True)
    finally:
        await db.dispose()


async def test_group_committed_before_the_process_died_is_reported_from_the_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process exits right after its second COMMIT, before answering. That group was stored: its
    waiters must hear so (and a replay in it as a replay, a refused proof as refused), not be told to
    retry a proof whose nonce is now taken."""
    db = await _db(tmp_path, "node_rec_0001", "node_rec_0002")
    try:
        repo = SqlPoOTRepository(db, store_output=False)
        proc = db.poot_writer_process()
        assert proc is not None
        with monkeypatch.context() as patched:  # this process dies after its second commit; the next lives
            patched.setattr(poot_writer_process, "CHILD_MODULE", "tests.fixtures.crashing_poot_writer")
            await proc.start()
        first = _proof("node_rec_0001", "rec-first")
        await repo.save_validation(first, claim_nonce=True)  # commit 1, answered
        nodes = SqlNodeRepository(db)
        inactive = (await nodes.get_by_id("node_rec_0002")).model_copy(update={"status": NodeStatus.INACTIVE})
        assert await nodes.update(inactive)
        group = [_proof("node_rec_0001", f"rec-{i}") for i in range(3)]
        group.append(_proof("node_rec_0001", "rec-first"))  # a replay of commit 1
        group.append(_proof("node_rec_0002", "rec-inactive"))  # its node is no longer active
        checks = [(None,)] * 5
        results = await asyncio.gather(*(repo.save_validation(v, claim_nonce=True, checked_against=c)
                                         for v, c in zip(group, checks)), return_exceptions=True)
        assert results[:3] == [None, None, None]
        assert isinstance(results[3], NonceReplayError)
        assert isinstance(results[4], InvalidPoOTError) and not isinstance(results[4], NonceReplayError)
        assert results[4].message == "Node not found or inactive"
        rows = _rows(tmp_path)
        assert set(rows) == {first.validation_id, *(v.validation_id for v in group[:4])}
        assert rows[group[3].validation_id][0] == 0 and "Nonce already used" in rows[group[3].validation_id][1]
        # the history cache heard the reconciled outcome as it would have heard the answer
        window = db.poot_history.window("node_rec_0001")
        assert window is None or len(window) >= 4
        # and a new process takes the next group
        await repo.save_validation(_proof("node_rec_0001", "rec-after"), claim_nonce=True)
        assert proc.starts == 2
    finally:
        await db.dispose()


async def test_a_process_that_cannot_start_fails_the_queued_proofs_clearly(tmp_path: Path) -> None:
    db = await _db(tmp_path, "node_bad_0001")
    try:
        repo = SqlPoOTRepository(db)
        proc = db.poot_writer_process()
        assert proc is not None
        proc.path = str(tmp_path / "no-such-dir" / "nodes.db")  # the child cannot open it and exits
        with pytest.raises(GroupCommitError):
            await asyncio.wait_for(repo.save_validation(_proof("node_bad_0001", "bad-1"), claim_nonce=True), 30)
        assert _rows(tmp_path) == {}
    finally:
        await db.dispose()


def test_writer_mode_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_NODE_POOT_WRITER", "fork")
    db = NodeDatabase(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="LUCID_NODE_POOT_WRITER"):
        SqlPoOTRepository(db)


def test_a_database_used_from_a_second_event_loop_gets_its_own_process(tmp_path: Path) -> None:
    """Pipes belong to the loop that started the process: a second loop starts another, and the first
    process, its stdin closed, exits."""
    async def setup() -> tuple[NodeDatabase, SqlPoOTRepository, int]:
        db = await _db(tmp_path, "node_loop_0001")
        repo = SqlPoOTRepository(db)
        await repo.save_validation(_proof("node_loop_0001", "loop-1"), claim_nonce=True)
        proc = db.poot_writer_process()
        assert proc is not None and proc.pid is not None
        return db, repo, proc.pid

    db, repo, first_pid = asyncio.run(setup())

    async def again() -> None:
        await repo.save_validation(_proof("node_loop_0001", "loop-2"), claim_nonce=True)
        proc = db.poot_writer_process()
        assert proc is not None and proc.starts == 2 and proc.pid != first_pid
        await db.dispose()

    asyncio.run(again())
    assert {n for _, n in _nonces(tmp_path)} == {"loop-1", "loop-2"}


async def test_no_process_starts_after_dispose(tmp_path: Path) -> None:
    db = await _db(tmp_path, "node_gone_0001")
    repo = SqlPoOTRepository(db)
    await repo.save_validation(_proof("node_gone_0001", "gone-1"), claim_nonce=True)
    proc = db.poot_writer_process()
    assert proc is not None
    await db.dispose()
    with pytest.raises(GroupCommitError):
        await asyncio.wait_for(repo.save_validation(_proof("node_gone_0001", "gone-2"), claim_nonce=True), 30)
    assert proc.starts == 1 and not proc.running


async def test_the_wal_restarts_under_steady_commits(tmp_path: Path) -> None:
    """Checkpoints run beside the commits and the writer completes them between groups, so the WAL is
    restarted instead of growing by every commit. 1,000 commits write at least ~20 MB of WAL frames
    (five 4 KiB pages each, at the least); a restarted WAL stays at the frames between checkpoints."""
    db = await _db(tmp_path, "node_wal_0001")
    try:
        repo = SqlPoOTRepository(db, store_output=False)
        for i in range(1000):
            await repo.save_validation(_proof("node_wal_0001", f"wal-{i:04d}"), claim_nonce=True)
        wal = (tmp_path / "nodes.db-wal").stat().st_size
        assert wal < 10 * 2**20, wal
        assert len(_rows(tmp_path)) == 1000
    finally:
        await db.dispose()
