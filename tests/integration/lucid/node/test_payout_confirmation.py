"""Payouts on a chain that executes transfers in later blocks (TRON): an accepted broadcast is not a
payment; the receipt decides, and an unconfirmed payout is settled by a later reconciliation, once.

``BlockLedger`` is the persistent local ledger with TRON's timing: it accepts a broadcast, but the
receipt (``get_transaction``) appears only once a block includes it (``mine``), and a transfer can be
accepted and then fail in execution (out of energy) without moving any funds.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from lucid.node.db import NodeDatabase, SqlPayoutRepository
from lucid.node.models.payout_models import PayoutStatus
from lucid.node.payouts import PayoutProcessor
from lucid.node.tron import LocalLedgerTronClient
from lucid.node.tron.base import PreparedTransfer
from lucid.node.tron.tronpy_client import TronpyClient
from tests.fixtures.node_fixtures import TEST_WALLET

from .test_node_payouts import RecordingAudit, _nodes, _reqs


class BlockLedger(LocalLedgerTronClient):
    final_at_broadcast = False

    def __init__(self, url: str, *, doomed: set[str] = frozenset(), mine_after_polls: int | None = None) -> None:
        super().__init__(url)
        self.doomed_refs = set(doomed)  # references whose transfers fail in execution
        self.failed: dict[str, str] = {}
        self.accepted: list[str] = []
        self.mined: set[str] = set()
        self.polls = 0
        self.unmined_answers = 0
        self.mine_after_polls = mine_after_polls

    async def broadcast(self, prepared: PreparedTransfer):  # type: ignore[no-untyped-def, override]
        return (await self.broadcast_many([prepared]))[0]

    async def broadcast_many(self, prepared):  # type: ignore[no-untyped-def, override]
        results = []
        for p in prepared:
            if p.reference in self.doomed_refs:
                self.failed[p.txid] = "OUT_OF_ENERGY"
                result = {"success": True, "transaction_hash": p.txid, "error": None}
            else:
                result = (await super().broadcast_many([p]))[0]
            if result.get("success"):
                self.accepted.append(p.txid)
            results.append(result)
        return results

    def mine(self) -> None:
        self.mined.update(self.accepted)

    async def get_transaction(self, txid: str):  # type: ignore[no-untyped-def, override]
        self.polls += 1
        if self.mine_after_polls is not None and self.polls > self.mine_after_polls:
            self.mine()
        if txid not in self.mined:
            self.unmined_answers += 1
            return None
        if txid in self.failed:
            return {"success": False, "transaction_hash": txid, "error": self.failed[txid]}
        return await super().get_transaction(txid)


@pytest.fixture
async def chain(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    options = getattr(request, "param", {})
    ledger = BlockLedger(f"sqlite+aiosqlite:///{tmp_path / 'chain.db'}", **options)
    await ledger.initialize()
    yield ledger
    await ledger.close()


async def _paid_once(ledger: BlockLedger, repo: SqlPayoutRepository, completed: int) -> None:
    by_ref = await ledger.transactions_by_reference()
    done = await repo.list_payouts(status="completed", limit=10_000)
    assert len(done) == completed
    for p in done:
        assert [t["txid"] for t in by_ref.get(p.idempotency_key, []) if t["status"] == "SUCCESS"] == [p.transaction_hash]
    assert await ledger.get_balance(TEST_WALLET) == sum((p.amount for p in done), Decimal(0))


def test_tronpy_payouts_wait_for_receipts() -> None:
    assert TronpyClient.final_at_broadcast is False and LocalLedgerTronClient.final_at_broadcast is True


@pytest.mark.parametrize("chain", [{"mine_after_polls": 12}], indirect=True)
async def test_an_accepted_transfer_completes_only_once_its_receipt_is_read(node_db: NodeDatabase,
                                                                          chain: BlockLedger) -> None:
    ids = await _nodes(node_db, 12)
    repo, audit = SqlPayoutRepository(node_db), RecordingAudit()
    proc = PayoutProcessor(repo, chain, audit, chunk_size=5, confirm_timeout=30, confirm_interval=0.01)
    res = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_blocks")
    assert res["successful"] == 12 and res["in_progress"] == 0
    assert chain.unmined_answers >= 5, "the first chunk's receipts were read before a block held them"
    await _paid_once(chain, repo, 12)
    assert [op for op, _ in audit.entries] == ["payout.completed"] * 12


@pytest.mark.parametrize("chain", [{"doomed": {"batch_doom/1", "batch_doom/3"}, "mine_after_polls": 0}],
                         indirect=True)
async def test_a_transfer_that_fails_in_execution_is_failed_not_completed(node_db: NodeDatabase,
                                                                         chain: BlockLedger) -> None:
    ids = await _nodes(node_db, 5)
    repo = SqlPayoutRepository(node_db)
    proc = PayoutProcessor(repo, chain, RecordingAudit(), confirm_timeout=30, confirm_interval=0.01)
    res = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_doom")
    by_key = {r["idempotency_key"]: r for r in res["results"]}
    assert {k for k, r in by_key.items() if r["status"] == "failed"} == {"batch_doom/1", "batch_doom/3"}
    assert by_key["batch_doom/1"]["error_message"] == "OUT_OF_ENERGY"
    assert res["successful"] == 3
    await _paid_once(chain, repo, 3)


async def test_unconfirmed_payouts_stay_processing_until_reconciled_once(node_db: NodeDatabase,
                                                                        chain: BlockLedger) -> None:
    ids = await _nodes(node_db, 8)
    repo = SqlPayoutRepository(node_db)
    proc = PayoutProcessor(repo, chain, RecordingAudit(), chunk_size=3, confirm_timeout=0, confirm_interval=0.01)
    res = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_slow")
    assert res["successful"] == 0 and res["in_progress"] == 8
    assert all(r["status"] == PayoutStatus.PROCESSING.value and r["transaction_hash"] for r in res["results"])
    report = await proc.recover()  # no block yet: nothing is final, nothing is sent again
    assert report.get("deferred") == 8 and report["reconciled"] == 0
    assert len(chain.accepted) == 8 + 8  # the re-broadcasts are of the same signed transactions
    chain.mine()
    report = await proc.recover()
    assert report["reconciled"] == 8 and "deferred" not in report
    await _paid_once(chain, repo, 8)
    again = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_slow")
    assert again["successful"] == 8
    await _paid_once(chain, repo, 8)


async def test_the_api_settles_a_batch_once_its_receipts_arrive(tmp_path: Path, node_jwt_secret: str,
                                                              mint) -> None:  # type: ignore[no-untyped-def]
    """The batch endpoint answers 202, the batch waits in ``processing`` while no block holds its
    transfers, and the periodic reconciliation completes it once they are mined, paying each once."""
    import asyncio

    import httpx

    from lucid.node.api import create_app
    from lucid.node.models.node_models import Node
    from tests.fixtures.node_fixtures import node_api_settings

    ledger = BlockLedger(f"sqlite+aiosqlite:///{tmp_path / 'api-chain.db'}")
    app = create_app(node_api_settings(tmp_path, node_jwt_secret, reconcile_interval=0.05,
                                       payout_confirm_timeout=0.0), tron_client=ledger)
    hdr = {"Authorization": f"Bearer {mint('admin')}"}
    async with app.router.lifespan_context(app):
        container = app.state.container
        for i in range(3):
            await container.node_repo.create(Node(node_id=f"node_blk_{i:03d}", name=f"blk-{i}"))
        body = {"batch_id": "batch_blk_001", "payout_requests": [
            {"node_id": f"node_blk_{i:03d}", "amount": "2.5", "currency": "USDT", "wallet_address": TEST_WALLET}
            for i in range(3)]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
            assert (await client.post("/api/v1/nodes/payouts/batch", json=body, headers=hdr)).status_code == 202

            async def status() -> dict:
                return (await client.get("/api/v1/nodes/payouts/batch/batch_blk_001", headers=hdr)).json()

            async def until(predicate) -> dict:  # type: ignore[no-untyped-def]
                for _ in range(200):
                    st = await status()
                    if predicate(st):
                        return st
                    await asyncio.sleep(0.05)
                raise AssertionError(f"batch stuck: {st}")

            await until(lambda st: len(ledger.accepted) >= 3)
            for _ in range(3):  # several reconciliation passes: no block, so nothing is final
                polls = ledger.polls
                await until(lambda st: ledger.polls > polls)
                assert (await status())["status"] == "processing"
            ledger.mine()
            done = await until(lambda st: st["status"] == "completed")
            assert done["successful"] == 3
        await _paid_once(ledger, container.payout_repo, 3)
