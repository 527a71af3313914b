"""Database tests of seed 003 made real: the same suite on SQLite and on PostgreSQL (started by a fixture).

Uniqueness that protects correctness is checked under real concurrency: two engines (separate connection
pools) race on one database.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPoolRepository, SqlPoOTRepository
from lucid.node.errors import InvalidPoOTError, NodeAlreadyExistsError, PoolNotFoundError, ResourceLimitError
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from lucid.node.models.poot_models import PoOTValidationResult
from lucid.node.poot import PoOTValidator
from tests.fixtures.node_fixtures import sample_node_data


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
        # another node may use the same nonce
        await SqlNodeRepository(dbs[0]).create(Node(node_id="node_racer_2", name="racer-2", status="active"))
        assert (await validators[0].validate_poot("node_racer_2", "out", ts, "shared-nonce-XK29")).is_valid
    finally:
        for db in dbs:
            await db.dispose()
