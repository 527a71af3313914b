"""Database tests of seed 003 made real: the same suite on SQLite and on PostgreSQL (started by a fixture).

Uniqueness that protects correctness is checked under real concurrency: two engines (separate connection
pools) race on one database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sqlalchemy import Connection, select

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPoolRepository, SqlPoOTRepository
from lucid.node.errors import (
    GroupCommitError, InvalidPoOTError, NodeAlreadyExistsError, NonceReplayError, PoolNotFoundError, ResourceLimitError,
)
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from lucid.node.models.poot_models import PoOTValidationResult
from lucid.node.poot import PoOTValidator
from lucid.node.db.poot_repo import NONCE_WINDOW, STALE_SERVE
from lucid.node.db.node_repo import node_to_row
from lucid.node.db.tables import nodes, poot_nonces, poot_validations
from tests.fixtures.node_fixtures import sample_node_data


@pytest.fixture(autouse=True, params=["process", "thread"])
def poot_writer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each of the two PoOT group committers of an SQLite file: the writer
    process (the default) and the writer thread. (PostgreSQL has one path; it runs under both names.)"""
    monkeypatch.setenv("LUCID_NODE_POOT_WRITER", request.param)
    return str(request.param)


async def _pool(db: NodeDatabase, pool_id: str = "pool_test_001", max_nodes: int = 100) -> NodePool:
    return await SqlPoolRepository(db).create(NodePool(pool_id=pool_id, name=pool_id.replace("_", "-"),
                                                       max_nodes=max_nodes))


async def test_node_crud_operations(node_db: NodeDatabase) -> None:
    repo = SqlNodeRepository(node_db)
    await _pool(node_db, "pool_workers")
    node = Node(**sample_node_data())
    await repo.create(node)
    got = await repo.get_by_id(node.node_id)
    assert got is not None and got.name == node.name and got.hardware_info == node.hardware_info
    assert got.created_at.tzinfo is not None
    got.status = "inactive"
    assert await repo.update(got, expected_status="active") is True
    assert await repo.update(got, expected_status="active") is False  # compare-and-set on status
    assert (await repo.get_by_id(node.node_id)).status == "inactive"
    assert await repo.delete(node.node_id) is True
    assert await repo.get_by_id(node.node_id) is None
    assert await repo.delete(node.node_id) is False


async def test_pool_node_relationship(node_db: NodeDatabase) -> None:
    pools, nodes = SqlPoolRepository(node_db), SqlNodeRepository(node_db)
    await _pool(node_db)
    data = sample_node_data()
    data["pool_id"] = "pool_test_001"
    await nodes.create(Node(**data))
    assert (await pools.get_by_id("pool_test_001")).node_count == 1
    assert await nodes.count(pool_id="pool_test_001") == 1
    await nodes.unassign_pool("node_test_001", "pool_test_001")
    assert (await pools.get_by_id("pool_test_001")).node_count == 0
    await nodes.assign_pool("node_test_001", "pool_test_001", priority=70)
    assert (await nodes.get_by_id("node_test_001")).pool_priority == 70
    with pytest.raises(PoolNotFoundError):
        await nodes.create(Node(name="orphan-node", pool_id="pool_missing"))
    assert await nodes.get_by_id("node_test_001") is not None


async def test_poot_validation_storage(node_db: NodeDatabase) -> None:
    repo = SqlPoOTRepository(node_db)
    v = PoOTValidationResult(node_id="node_test_001", output_data="base64_data", output_hash="a" * 64,
                             timestamp=datetime.now(UTC), nonce="n-1", score=85.5, confidence=0.95, is_valid=True,
                             validation_time_ms=150)
    await repo.save_validation(v)
    history = await repo.list_history("node_test_001")
    assert len(history) == 1 and history[0].score == 85.5 and history[0].output_data == "base64_data"
    assert len(await repo.find_by_min_score(80)) == 1
    assert await repo.find_by_min_score(90) == []


async def test_concurrent_same_name_exactly_one(node_db_url: str) -> None:
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        async def create(i: int) -> str:
            try:
                await SqlNodeRepository(dbs[i % 2]).create(Node(name="same-name"))
                return "ok"
            except NodeAlreadyExistsError as exc:
                assert exc.error_code == "LUCID_ERR_5007"
                return "exists"

        results = await asyncio.gather(*(create(i) for i in range(8)))
        assert results.count("ok") == 1 and results.count("exists") == 7
        assert await SqlNodeRepository(dbs[0]).count(name="same-name") == 1
    finally:
        for db in dbs:
            await db.dispose()


async def test_concurrent_pool_joins_respect_capacity(node_db_url: str) -> None:
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        await _pool(dbs[0], "pool_small", max_nodes=3)

        async def join(i: int) -> bool:
            try:
                await SqlNodeRepository(dbs[i % 2]).create(Node(name=f"joiner-{i}", pool_id="pool_small"))
                return True
            except ResourceLimitError:
                return False

        assert sum(await asyncio.gather(*(join(i) for i in range(10)))) == 3
        assert (await SqlPoolRepository(dbs[0]).get_by_id("pool_small")).node_count == 3
        assert await SqlNodeRepository(dbs[0]).count(pool_id="pool_small") == 3
    finally:
        for db in dbs:
            await db.dispose()


async def test_concurrent_nonce_replay_exactly_one_wins(node_db_url: str) -> None:
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        await SqlNodeRepository(dbs[0]).create(Node(node_id="node_racer_1", name="racer", status="active"))
        validators = [PoOTValidator(SqlPoOTRepository(db)) for db in dbs]
        ts = datetime.now(UTC)

        async def submit(i: int) -> str:
            try:
                r = await validators[i % 2].validate_poot("node_racer_1", f"output-{i}", ts, "shared-nonce-XK29")
                return "valid" if r.is_valid else "scored"
            except InvalidPoOTError as exc:
                assert exc.message == "Nonce already used"
                return "replay"

        results = await asyncio.gather(*(submit(i) for i in range(6)))
        assert results.count("valid") == 1 and results.count("replay") == 5
        stored = await SqlPoOTRepository(dbs[0]).list_history("node_racer_1", limit=50)
        assert sum(1 for v in stored if v.is_valid) == 1
        # every refused replay is on record as a failed attempt, whichever way it was caught
        assert sorted(v.errors for v in stored if not v.is_valid) == [["Nonce already used"]] * 5
        # another node may use the same nonce
        await SqlNodeRepository(dbs[0]).create(Node(node_id="node_racer_2", name="racer-2", status="active"))
        assert (await validators[0].validate_poot("node_racer_2", "out", ts, "shared-nonce-XK29")).is_valid
    finally:
        for db in dbs:
            await db.dispose()


# ------------------------------------------------------------------ hot-path mechanisms (both engines)
def _proof(node_id: str, nonce: str, **kw: object) -> PoOTValidationResult:
    fields: dict[str, object] = {"is_valid": True, "score": 60.0, "confidence": 0.5, "timestamp": datetime.now(UTC),
                                 **kw}
    return PoOTValidationResult(node_id=node_id, output_hash="b" * 64, nonce=nonce, **fields)


async def test_group_commit_failure_fails_every_waiter_and_loses_nothing_acknowledged(node_db: NodeDatabase) -> None:
    """A group whose transaction fails: every waiter gets GroupCommitError, none of the group is stored (its
    nonces stay free), and what was acknowledged before is untouched."""
    repo = SqlPoOTRepository(node_db)
    acked = [_proof("node_gc_0001", f"acked-{i}") for i in range(10)]
    await asyncio.gather(*(repo.save_validation(v, claim_nonce=True) for v in acked))
    group = [_proof("node_gc_0001", f"doomed-{i}") for i in range(9)]
    group.append(_proof("node_gc_0001", "doomed-dup", validation_id=acked[0].validation_id))  # PK clash
    results = await asyncio.gather(*(repo.save_validation(v, claim_nonce=True) for v in group),
                                   return_exceptions=True)
    assert all(isinstance(r, GroupCommitError) for r in results), results
    assert results[0].error_code == "LUCID_ERR_5999" and "none of them was stored" in results[0].message
    assert results[0].__cause__ is not None
    stored = await repo.list_history("node_gc_0001", limit=100)
    assert {v.validation_id for v in stored} == {v.validation_id for v in acked}
    # nothing of the failed group was claimed: the same proofs (fresh ids) go through
    retry = [_proof("node_gc_0001", f"doomed-{i}") for i in range(9)]
    await asyncio.gather(*(repo.save_validation(v, claim_nonce=True) for v in retry))
    assert await repo.count_history("node_gc_0001") == 19
    # and an acknowledged nonce is still taken
    with pytest.raises(NonceReplayError):
        await repo.save_validation(_proof("node_gc_0001", "acked-3"), claim_nonce=True)


async def test_stored_validation_reads_back_field_for_field(node_db: NodeDatabase) -> None:
    """The group commit writes SQLite rows through the driver, without SQLAlchemy's column processors:
    what it stores must read back exactly as SQLAlchemy itself would have stored it, on both engines."""
    repo = SqlPoOTRepository(node_db)
    await SqlNodeRepository(node_db).create(Node(node_id="node_rt_0001", name="round-trip", status="active"))
    ts = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)  # microsecond 0: isoformat would drop it by default
    kept = _proof("node_rt_0001", "rt-1", output_data="out put", timestamp=ts, score=61.25, confidence=0.75,
                  score_parts={"output": 10.0, "nonce": 11.25}, errors=[], batch_id="batch_rt", validation_time_ms=1.5)
    failed = _proof("node_rt_0001", "rt-2", is_valid=False, score=0.0, errors=["Score below threshold", "é"])
    for v in (kept, failed):
        await repo.save_validation(v, claim_nonce=True)
    stored = {v.validation_id: v for v in await repo.list_history("node_rt_0001", limit=10)}
    for v in (kept, failed):
        assert stored[v.validation_id].model_dump() == v.model_dump()
    assert [v.validation_id for v in await repo.find_by_min_score(61.25)] == [kept.validation_id]
    assert (await SqlNodeRepository(node_db).get_by_id("node_rt_0001")).poot_score == 61.25
    # and the stored bytes equal SQLAlchemy's own binding of the same rows (ordering compares them as text)
    twins = [v.model_copy(update={"validation_id": f"twin-{i}", "nonce": f"twin-{i}"}) for i, v in enumerate((kept, failed))]

    def raw_rows(conn: Connection, ids: list[str]) -> list[tuple[object, ...]]:
        return [tuple(r)[1:] for r in conn.execute(select(poot_validations).where(
            poot_validations.c.validation_id.in_(ids)).order_by(poot_validations.c.score)).all()]

    await node_db.write(lambda conn: conn.execute(poot_validations.insert(), [v.model_dump() for v in twins]))
    ours, theirs = await node_db.read(lambda conn: (raw_rows(conn, [kept.validation_id, failed.validation_id]),
                                                   raw_rows(conn, [t.validation_id for t in twins])))
    assert [r[:5] + r[6:] for r in ours] == [r[:5] + r[6:] for r in theirs]  # all but the nonce
    if node_db.is_sqlite:
        ours_text = await node_db.read(lambda conn: conn.exec_driver_sql(
            "SELECT timestamp, created_at, score_parts, errors, is_valid FROM poot_validations "
            "WHERE nonce IN ('rt-1', 'rt-2', 'twin-0', 'twin-1') ORDER BY nonce").all())
        assert ours_text[0] == ours_text[2] and ours_text[1] == ours_text[3], ours_text


async def test_group_commit_decides_each_waiter_separately(node_db: NodeDatabase) -> None:
    """One group mixing fresh nonces, a nonce repeated inside the group and an already used one."""
    repo = SqlPoOTRepository(node_db)
    await repo.save_validation(_proof("node_gc_0002", "used-before"), claim_nonce=True)
    group = [_proof("node_gc_0002", f"fresh-{i}") for i in range(5)]
    group += [_proof("node_gc_0002", "twice"), _proof("node_gc_0002", "twice"), _proof("node_gc_0002", "used-before")]
    results = await asyncio.gather(*(repo.save_validation(v, claim_nonce=True) for v in group),
                                   return_exceptions=True)
    assert results[:6] == [None] * 6
    assert isinstance(results[6], NonceReplayError) and isinstance(results[7], NonceReplayError)
    # the two replays are on record as failed attempts, under their own ids; only the winners scored
    stored = {v.validation_id: v for v in await repo.list_history("node_gc_0002", limit=50)}
    assert len(stored) == 9
    for lost in group[6:]:
        assert stored[lost.validation_id].is_valid is False and stored[lost.validation_id].score == 0
        assert stored[lost.validation_id].errors == ["Nonce already used"]
    assert all(stored[v.validation_id].errors == [] for v in group[:6])


async def test_nonce_is_free_again_after_the_window_and_only_then(node_db: NodeDatabase) -> None:
    """A nonce last used more than 24 h ago may be used again (the claim is renewed); one used inside the
    window may not, whether it sits alone or amid fresh nonces in one group."""
    repo = SqlPoOTRepository(node_db)
    now = datetime.now(UTC)
    await node_db.write(lambda conn: conn.execute(poot_nonces.insert(), [
        {"node_id": "node_win_0001", "nonce": "old", "used_at": now - NONCE_WINDOW - timedelta(minutes=1)},
        {"node_id": "node_win_0001", "nonce": "recent", "used_at": now - NONCE_WINDOW + timedelta(minutes=5)}]))
    group = [_proof("node_win_0001", n) for n in ("fresh-1", "old", "recent", "fresh-2")]
    results = await asyncio.gather(*(repo.save_validation(v, claim_nonce=True) for v in group), return_exceptions=True)
    assert results[0] is None and results[1] is None and results[3] is None
    assert isinstance(results[2], NonceReplayError)
    used = dict(await node_db.read(lambda conn: [(r.nonce, r.used_at) for r in conn.execute(select(poot_nonces)).all()]))
    assert used["old"] > now - timedelta(minutes=1)  # renewed by the claim that won
    assert used["recent"] < now - NONCE_WINDOW + timedelta(minutes=6)  # untouched by the claim that lost
    with pytest.raises(NonceReplayError):
        await repo.save_validation(_proof("node_win_0001", "old"), claim_nonce=True)
    stored = await repo.list_history("node_win_0001", limit=10)
    assert sorted((v.nonce, v.is_valid) for v in stored) == [
        ("fresh-1", True), ("fresh-2", True), ("old", False), ("old", True), ("recent", False)]


async def test_concurrent_node_creations_group_failure(node_db: NodeDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node creations share one transaction too: a failing group fails every creator, stores none."""
    repo = SqlNodeRepository(node_db)
    await asyncio.gather(*(repo.create(Node(name=f"kept-{i}")) for i in range(5)))

    def broken(batch: object, conn: object) -> dict[int, Exception]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(repo, "_write_tx", broken)
    results = await asyncio.gather(*(repo.create(Node(name=f"lost-{i}")) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, GroupCommitError) and isinstance(r.__cause__, RuntimeError) for r in results)
    monkeypatch.undo()
    assert await repo.count() == 5
    await repo.create(Node(name="lost-0"))  # the name was never taken
    assert await repo.count() == 6


async def test_node_group_decides_each_creator_and_reads_back_field_for_field(node_db: NodeDatabase) -> None:
    """One group mixing new nodes, a name taken before, a name twice in the group, an id taken before, a
    missing pool and a full one. On SQLite the group is written as SQL text (node_sqlite): every node
    must read back exactly as created, and its row equal SQLAlchemy's own binding of the same node."""
    repo = SqlNodeRepository(node_db)
    await _pool(node_db, "pool_roomy", max_nodes=10)
    await _pool(node_db, "pool_tiny", max_nodes=1)
    await repo.create(Node(node_id="node_taken_01", name="taken-name"))
    await repo.create(Node(name="tiny-member", pool_id="pool_tiny"))
    data = sample_node_data()
    full = Node(**{**data, "node_id": "node_full_001", "name": "full-node", "pool_id": "pool_roomy",
                   "status": "inactive", "public_key": None, "last_heartbeat": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                   "created_at": datetime.now(UTC), "updated_at": datetime.now(UTC)})
    plain = Node(name="plain-node-é")
    group = [full, plain, Node(name="taken-name"), Node(name="twice-name", pool_id="pool_roomy"),
             Node(name="twice-name", pool_id="pool_roomy"), Node(node_id="node_taken_01", name="other-name"),
             Node(name="lost-pool", pool_id="pool_nowhere"), Node(name="no-seat", pool_id="pool_tiny")]
    results = await asyncio.gather(*(repo.create(n) for n in group), return_exceptions=True)
    kinds = [type(r).__name__ if isinstance(r, Exception) else "ok" for r in results]
    assert kinds == ["ok", "ok", "NodeAlreadyExistsError", "ok", "NodeAlreadyExistsError", "NodeAlreadyExistsError",
                     "PoolNotFoundError", "ResourceLimitError"]
    for created in (full, plain, group[3]):
        assert (await repo.get_by_id(created.node_id)).model_dump() == created.model_dump()
    assert (await SqlPoolRepository(node_db).get_by_id("pool_roomy")).node_count == 2
    assert (await SqlPoolRepository(node_db).get_by_id("pool_tiny")).node_count == 1
    assert await repo.count() == 5
    # the stored row equals SQLAlchemy's binding of a twin (JSON compared as values: its spacing may differ)
    twin = full.model_copy(update={"node_id": "node_twin_001", "name": "twin-node"})
    await node_db.write(lambda conn: conn.execute(nodes.insert(), [node_to_row(twin)]))
    rows = await node_db.read(lambda conn: {r.node_id: r._mapping for r in conn.execute(
        select(nodes).where(nodes.c.node_id.in_([full.node_id, twin.node_id]))).all()})
    ours, theirs = dict(rows[full.node_id]), dict(rows[twin.node_id])
    for k in ("node_id", "name"):
        ours.pop(k), theirs.pop(k)
    assert ours == theirs


async def test_node_cache_never_decides_status_or_key(node_db_url: str) -> None:
    """Validator B has the node cached as active and keyless; another engine (A) stops it, then re-keys it:
    B's next proofs are refused inside the storing transaction, and nothing of them is stored."""
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        nodes_a = SqlNodeRepository(dbs[0])
        await nodes_a.create(Node(node_id="node_cache_001", name="cached", status="active"))
        repo_b = SqlPoOTRepository(dbs[1])
        b = PoOTValidator(repo_b)
        assert (await b.validate_poot("node_cache_001", "out", datetime.now(UTC), "cache-nonce-1")).is_valid
        assert dbs[1].node_cache.get("node_cache_001") is not None
        node = await nodes_a.get_by_id("node_cache_001")
        node.status = "inactive"
        assert await nodes_a.update(node)
        with pytest.raises(InvalidPoOTError, match="Node not found or inactive"):
            await b.validate_poot("node_cache_001", "out", datetime.now(UTC), "cache-nonce-2")
        assert dbs[1].node_cache.get("node_cache_001") is None  # the stale snapshot was dropped
        with pytest.raises(InvalidPoOTError, match="Node not found or inactive"):
            await b.validate_poot("node_cache_001", "out", datetime.now(UTC), "cache-nonce-3")
        node.status = "active"
        assert await nodes_a.update(node)
        assert (await b.validate_poot("node_cache_001", "out", datetime.now(UTC), "cache-nonce-4")).is_valid
        node.public_key = "A" * 43 + "="
        assert await nodes_a.update(node)
        with pytest.raises(InvalidPoOTError, match="Invalid or missing signature"):
            await b.validate_poot("node_cache_001", "out", datetime.now(UTC), "cache-nonce-5")
        stored = await repo_b.list_history("node_cache_001", limit=50)
        assert sorted(v.nonce for v in stored) == ["cache-nonce-1", "cache-nonce-4"]
        assert await repo_b.get_by_nonce("node_cache_001", "cache-nonce-2") is None  # not claimed
    finally:
        for db in dbs:
            await db.dispose()


async def test_node_cache_invalidated_by_every_node_write(node_db: NodeDatabase) -> None:
    nodes_repo, poot = SqlNodeRepository(node_db), SqlPoOTRepository(node_db)
    await SqlPoolRepository(node_db).create(NodePool(pool_id="pool_cache_001", name="cache-pool", max_nodes=5))
    await nodes_repo.create(Node(node_id="node_cache_002", name="cache-2", status="active"))
    for change in ("update", "assign", "unassign", "delete"):
        assert await poot.get_by_id("node_cache_002") is not None
        assert node_db.node_cache.get("node_cache_002") is not None
        if change == "update":
            node = await nodes_repo.get_by_id("node_cache_002")
            node.name = "cache-2-renamed"
            await nodes_repo.update(node)
        elif change == "assign":
            await nodes_repo.assign_pool("node_cache_002", "pool_cache_001")
        elif change == "unassign":
            await nodes_repo.unassign_pool("node_cache_002", "pool_cache_001")
        else:
            await nodes_repo.delete("node_cache_002")
        assert node_db.node_cache.get("node_cache_002") is None, change
        if change == "update":
            assert (await poot.get_by_id("node_cache_002")).name == "cache-2-renamed"
    assert await poot.get_by_id("node_cache_002") is None
    with pytest.raises(InvalidPoOTError, match="Node not found or inactive"):
        await PoOTValidator(poot).validate_poot("node_cache_002", "out", datetime.now(UTC), "gone-nonce")


async def test_history_cache_follows_writes(node_db_url: str) -> None:
    """This process's saves are appended at once; another engine's show up once the entry expires."""
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        a, b = SqlPoOTRepository(dbs[0]), SqlPoOTRepository(dbs[1])
        for i in range(3):
            await a.save_validation(_proof("node_hist_001", f"h-{i}"), claim_nonce=True)
        assert len(await b.get_recent_validations("node_hist_001")) == 3
        await b.save_validation(_proof("node_hist_001", "h-b", is_valid=False, score=0.0), claim_nonce=True)
        recent = await b.get_recent_validations("node_hist_001")
        assert len(recent) == 4 and recent[0].is_valid is False  # appended, newest first
        await a.save_validation(_proof("node_hist_001", "h-3"), claim_nonce=True)
        dbs[1].poot_history.ttl = 0.0  # expire: the next read goes to the database
        assert len(await b.get_recent_validations("node_hist_001")) == 5
        assert len(await b.get_recent_validations("node_hist_001", limit=2)) == 2
    finally:
        for db in dbs:
            await db.dispose()


async def test_expired_history_is_scored_while_it_reloads_in_the_background(node_db_url: str) -> None:
    """An expired window is served at once and reloaded behind the proof; another engine's validation
    is in it once that reload is done. Past STALE_SERVE the read is waited for again."""
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        a, b = SqlPoOTRepository(dbs[0]), SqlPoOTRepository(dbs[1])
        await a.save_validation(_proof("node_bg_0001", "bg-a"), claim_nonce=True)
        assert len(await b.get_score_window("node_bg_0001")) == 1
        await a.save_validation(_proof("node_bg_0001", "bg-b", is_valid=False, score=0.0), claim_nonce=True)
        reads: list[str] = []
        real_read = dbs[1].read

        async def slow_read(fn):  # type: ignore[no-untyped-def]
            reads.append("read")
            await asyncio.sleep(0.05)
            return await real_read(fn)

        dbs[1].read = slow_read  # type: ignore[method-assign]
        dbs[1].poot_history.ttl = 0.001
        await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        stale = await b.get_score_window("node_bg_0001")
        assert asyncio.get_running_loop().time() - started < 0.04  # not the 50 ms read
        assert len(stale) == 1 and list(b._history_reads) == ["node_bg_0001"]  # served, a reload under way
        await asyncio.sleep(0.01)
        again = await b.get_score_window("node_bg_0001")
        assert len(again) == 1  # still the old window while the read runs
        for _ in range(100):
            if not b._history_reads:
                break
            await asyncio.sleep(0.01)
        assert reads == ["read"]  # one reload, not one per proof
        dbs[1].poot_history.ttl = 60.0
        fresh = await b.get_score_window("node_bg_0001")
        assert len(fresh) == 2 and fresh.newest(1)[0].is_valid is False
        # long past expiry the proof waits for the read
        dbs[1].poot_history.ttl = 0.0
        monkey = dbs[1].poot_history._entries["node_bg_0001"]
        dbs[1].poot_history._entries["node_bg_0001"] = (monkey[0] - STALE_SERVE - 1, *monkey[1:])
        reads.clear()
        started = asyncio.get_running_loop().time()
        await b.get_score_window("node_bg_0001")
        assert reads == ["read"] and asyncio.get_running_loop().time() - started >= 0.05
    finally:
        for db in dbs:
            await db.dispose()


async def test_concurrent_nonce_lookups_share_one_query(node_db: NodeDatabase,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = SqlPoOTRepository(node_db)
    await repo.save_validation(_proof("node_look_001", "seen-7"), claim_nonce=True)
    reads = 0
    real = node_db.read

    async def counting(fn):  # type: ignore[no-untyped-def]
        nonlocal reads
        reads += 1
        return await real(fn)

    monkeypatch.setattr(node_db, "read", counting)
    found = await asyncio.gather(*(repo.get_by_nonce("node_look_001", f"seen-{i}") for i in range(20)))
    assert reads == 1
    assert [f is not None for f in found] == [i == 7 for i in range(20)]
    assert await repo.get_by_nonce("node_look_001", "seen-7", since=datetime.now(UTC) + timedelta(hours=1)) is None


async def test_node_rekeyed_elsewhere_is_judged_on_a_fresh_read(node_db_url: str) -> None:
    """B has the node cached with key 1; A re-keys it to key 2. A proof signed with key 2 is accepted
    (B re-reads before refusing a signature), one signed with key 1 is refused and recorded."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from lucid.node.poot import sign_poot

    def raw(key: Ed25519PrivateKey) -> str:
        return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    k1, k2 = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        nodes_a = SqlNodeRepository(dbs[0])
        await nodes_a.create(Node(node_id="node_rekey_001", name="rekey", status="active", public_key=raw(k1)))
        repo_b = SqlPoOTRepository(dbs[1])
        b = PoOTValidator(repo_b)
        ts = datetime.now(UTC)
        assert (await b.validate_poot("node_rekey_001", "out", ts, "rk-1",
                                      signature=sign_poot(k1, "node_rekey_001", "out", ts, "rk-1"))).is_valid
        assert dbs[1].node_cache.get("node_rekey_001").public_key == raw(k1)
        node = await nodes_a.get_by_id("node_rekey_001")
        node.public_key = raw(k2)
        assert await nodes_a.update(node)
        assert (await b.validate_poot("node_rekey_001", "out", ts, "rk-2",
                                      signature=sign_poot(k2, "node_rekey_001", "out", ts, "rk-2"))).is_valid
        with pytest.raises(InvalidPoOTError, match="Invalid or missing signature"):
            await b.validate_poot("node_rekey_001", "out", ts, "rk-3",
                                  signature=sign_poot(k1, "node_rekey_001", "out", ts, "rk-3"))
        stored = {v.nonce: v.is_valid for v in await repo_b.list_history("node_rekey_001", limit=10)}
        assert stored == {"rk-1": True, "rk-2": True, "rk-3": False}
    finally:
        for db in dbs:
            await db.dispose()


async def test_in_memory_url_holds_concurrent_transactions_and_leaves_nothing() -> None:
    """``sqlite+aiosqlite://`` used to share one connection, so two concurrent transactions failed
    ("cannot start a transaction within a transaction"); it is now a private temporary file."""
    import os

    db = NodeDatabase("sqlite+aiosqlite://")
    path = db.url.removeprefix("sqlite+aiosqlite:///")
    await db.create_all()
    await SqlNodeRepository(db).create(Node(node_id="node_mem_0001", name="mem", status="active"))
    validator = PoOTValidator(SqlPoOTRepository(db))
    ts = datetime.now(UTC)
    results = await asyncio.gather(*(validator.validate_poot("node_mem_0001", "output" * 20, ts, f"mem-{i % 5}-XK29aq")
                                     for i in range(20)), return_exceptions=True)
    assert sum(1 for r in results if isinstance(r, PoOTValidationResult)) == 5
    assert all(isinstance(r, PoOTValidationResult) or isinstance(r, NonceReplayError) for r in results), results
    assert os.path.exists(path)
    await db.dispose()
    assert not os.path.exists(path)
