"""Floors from seed 003 with wide margins (real speed is measured in benchmarks/bench_node.py), and the
seed's resource/memory-leak checks made real: repeated operations must not grow memory without bound."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPayoutRepository, SqlPoOTRepository
from lucid.node.models.node_models import Node
from lucid.node.payouts import PayoutProcessor
from lucid.node.poot import PoOTValidator
from lucid.node.tron import LocalLedgerTronClient
from tests.fixtures.node_fixtures import TEST_WALLET

pytestmark = pytest.mark.performance


class _NullAudit:
    async def log_payout_operation(self, *a: object, **k: object) -> None:
        return None


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    d = NodeDatabase(f"sqlite+aiosqlite:///{tmp_path / 'perf.db'}")
    await d.create_all()
    yield d
    await d.dispose()


async def test_single_and_batch_poot_floors(db: NodeDatabase) -> None:
    """Reference notes: a single validation < 500 ms, a batch < 2 s."""
    await SqlNodeRepository(db).create(Node(node_id="node_perf_001", name="perf", status="active"))
    v = PoOTValidator(SqlPoOTRepository(db))
    t = time.perf_counter()
    assert (await v.validate_poot("node_perf_001", "x" * 2000, datetime.now(UTC), "nonce-perf-0001")).is_valid
    assert time.perf_counter() - t < 0.5
    items = [{"node_id": "node_perf_001", "output_data": "y" * 500, "timestamp": datetime.now(UTC),
              "nonce": f"batch-nonce-{i}-{uuid.uuid4().hex[:6]}"} for i in range(100)]
    t = time.perf_counter()
    res = await v.batch_validate_poot(items)
    assert time.perf_counter() - t < 2.0
    assert res["summary"]["valid"] == 100


async def test_batch_payout_floor(db: NodeDatabase, tmp_path: Path) -> None:
    """Reference notes: a batch payout < 5 s (1,000 payouts on the local ledger)."""
    await SqlNodeRepository(db).create(Node(node_id="node_perf_001", name="perf"))
    ledger = LocalLedgerTronClient(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}")
    try:
        proc = PayoutProcessor(SqlPayoutRepository(db), ledger, _NullAudit(), chunk_size=250)
        t = time.perf_counter()
        res = await proc.process_batch_payouts(
            [{"node_id": "node_perf_001", "amount": "0.5", "wallet_address": TEST_WALLET}] * 1000)
        assert time.perf_counter() - t < 5.0
        assert res["successful"] == 1000
    finally:
        await ledger.close()


async def test_concurrent_node_creation_all_succeed(db: NodeDatabase) -> None:
    repo = SqlNodeRepository(db)
    await asyncio.gather(*(repo.create(Node(name=f"conc-{i}")) for i in range(100)))
    assert await repo.count() == 100


async def test_memory_leak_detection(db: NodeDatabase) -> None:
    """The seed's leak check on real operations: RSS growth over the last 1,000 of 2,000 operations
    stays under 10 MiB; keeping the 40 kB output of each of its 500 validations alive would add 20 MiB."""
    await SqlNodeRepository(db).create(Node(node_id="node_leak_001", name="leak", status="active"))
    repo = SqlPoOTRepository(db, store_output=False)
    v = PoOTValidator(repo)
    nodes = SqlNodeRepository(db)
    proc = psutil.Process()
    samples = []
    for i in range(2000):
        if i % 2:
            await nodes.get_by_id("node_leak_001")
        else:
            await v.validate_poot("node_leak_001", "z" * 40_000, datetime.now(UTC), f"leak-{i}-{uuid.uuid4().hex[:8]}")
        if i % 500 == 499:
            gc.collect()
            samples.append(proc.memory_info().rss)
    growth = (samples[-1] - samples[1]) / 2**20
    assert growth < 10, f"RSS grew {growth:.1f} MiB over 1,000 operations"
