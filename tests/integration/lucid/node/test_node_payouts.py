"""PayoutProcessor against real databases (SQLite and PostgreSQL) and the persistent local TRON ledger:
exactly-once by idempotency key, concurrent processors, insufficient balance, crash recovery paths."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPayoutRepository
from lucid.node.db.payout_repo import Claim
from lucid.node.errors import NodeNotFoundError, TronNodeUnavailableError
from lucid.node.models.node_models import Node
from lucid.node.models.payout_models import Payout, PayoutStatus
from lucid.node.payouts import PayoutProcessor
from lucid.node.tron import LocalLedgerTronClient
from tests.fixtures.node_fixtures import TEST_WALLET


class RecordingAudit:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict]] = []

    async def log_payout_operation(self, operation: str, payout: dict, severity: str = "INFO",
                                   trace_id: str | None = None) -> None:
        self.entries.append((operation, payout))


async def _nodes(db: NodeDatabase, n: int) -> list[str]:
    repo = SqlNodeRepository(db)
    ids = [f"node_pay_{i:04d}" for i in range(n)]
    for i in ids:
        await repo.create(Node(node_id=i, name=i.replace("_", "-")))
    return ids


def _reqs(ids: list[str], amount: str = "1.5") -> list[dict]:
    return [{"node_id": i, "amount": amount, "currency": "USDT", "wallet_address": TEST_WALLET} for i in ids]


async def _chain_ok(ledger: LocalLedgerTronClient, repo: SqlPayoutRepository, expected: int) -> None:
    """Every completed payout has exactly one successful chain transaction, and nothing else was paid."""
    by_ref = await ledger.transactions_by_reference()
    completed = await repo.list_payouts(status="completed", limit=100_000)
    assert len(completed) == expected
    for p in completed:
        txs = [t for t in by_ref.get(p.idempotency_key, []) if t["status"] == "SUCCESS"]
        assert len(txs) == 1, p.idempotency_key
        assert txs[0]["txid"] == p.transaction_hash
    assert sum(1 for txs in by_ref.values() for t in txs if t["status"] == "SUCCESS") == expected
    paid = sum((p.amount for p in completed), Decimal(0))
    assert await ledger.get_balance(TEST_WALLET) == paid


async def test_batch_pays_each_once_and_resubmission_pays_nothing(node_db: NodeDatabase,
                                                                  local_ledger: LocalLedgerTronClient) -> None:
    ids = await _nodes(node_db, 30)
    repo, audit = SqlPayoutRepository(node_db), RecordingAudit()
    proc = PayoutProcessor(repo, local_ledger, audit, chunk_size=7)
    res = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_once")
    assert res["successful"] == 30 and res["failed"] == 0 and res["total_processed"] == 30
    assert all(r["transaction_hash"] for r in res["results"])
    again = await proc.process_batch_payouts(_reqs(ids), batch_id="batch_once")
    assert again["successful"] == 30
    assert [r["transaction_hash"] for r in again["results"]] == [r["transaction_hash"] for r in res["results"]]
    await _chain_ok(local_ledger, repo, 30)
    assert len(audit.entries) == 30 and {op for op, _ in audit.entries} == {"payout.completed"}


async def test_two_processors_race_on_one_batch(node_db_url: str, local_ledger: LocalLedgerTronClient) -> None:
    dbs = [NodeDatabase(node_db_url) for _ in range(2)]
    await dbs[0].create_all()
    try:
        ids = await _nodes(dbs[0], 40)
        procs = [PayoutProcessor(SqlPayoutRepository(db), local_ledger, RecordingAudit(), chunk_size=10)
                 for db in dbs]
        results = await asyncio.gather(*(p.process_batch_payouts(_reqs(ids), batch_id="batch_race") for p in procs),
                                       return_exceptions=True)
        won = [r for r in results if isinstance(r, dict)]
        assert won, results  # at least one processor ran the batch; a loser may be refused, never paid twice
        hashes = [{x["transaction_hash"] for x in r["results"] if x.get("transaction_hash")} for r in won]
        assert all(h == hashes[0] for h in hashes)  # both callers see the same transfers
        await procs[0].recover()
        await _chain_ok(local_ledger, SqlPayoutRepository(dbs[0]), 40)
    finally:
        for db in dbs:
            await db.dispose()


async def test_insufficient_balance_fails_cleanly(node_db: NodeDatabase, tmp_path: Path) -> None:
    ledger = LocalLedgerTronClient(f"sqlite+aiosqlite:///{tmp_path / 'poor.db'}", initial_balance=Decimal("10"))
    try:
        ids = await _nodes(node_db, 3)
        proc = PayoutProcessor(SqlPayoutRepository(node_db), ledger, RecordingAudit())
        res = await proc.process_batch_payouts(_reqs(ids, "4"), batch_id="batch_poor")
        assert [r["status"] for r in res["results"]] == ["completed", "completed", "failed"]
        assert "Insufficient balance" in res["results"][2]["error_message"]
        assert await ledger.get_balance(TEST_WALLET) == Decimal(8)
        assert await ledger.get_balance(ledger.treasury) == Decimal(2)
    finally:
        await ledger.close()


async def test_unknown_node_and_invalid_items_fail_alone(node_db: NodeDatabase,
                                                         local_ledger: LocalLedgerTronClient) -> None:
    ids = await _nodes(node_db, 1)
    proc = PayoutProcessor(SqlPayoutRepository(node_db), local_ledger, RecordingAudit())
    reqs = _reqs(ids) + _reqs(["node_nobody_1"]) + [{"node_id": ids[0], "amount": "-5", "wallet_address": TEST_WALLET}]
    res = await proc.process_batch_payouts(reqs, batch_id="batch_mixed")
    assert [r["status"] for r in res["results"]] == ["completed", "failed", "failed"]
    with pytest.raises(NodeNotFoundError):
        await proc.process_payout(_reqs(["node_nobody_1"])[0])


async def test_recovery_of_claimed_but_never_broadcast(node_db: NodeDatabase,
                                                       local_ledger: LocalLedgerTronClient) -> None:
    """Crash after the claim (txid stored) and before broadcast: recovery re-broadcasts the same tx."""
    ids = await _nodes(node_db, 1)
    repo = SqlPayoutRepository(node_db)
    [p] = await repo.save_payouts([Payout(idempotency_key="crash/0", node_id=ids[0], amount=Decimal(3),
                                          wallet_address=TEST_WALLET)])
    tx = await local_ledger.prepare_usdt_transfer(TEST_WALLET, Decimal(3), reference="crash/0")
    assert await repo.claim([Claim(p.payout_id, tx.txid, tx.to_payload())]) == {p.payout_id}
    report = await PayoutProcessor(repo, local_ledger, RecordingAudit()).recover()
    assert report == {"reconciled": 1, "resumed": 0}
    stored = await repo.get_by_key("crash/0")
    assert stored.status == PayoutStatus.COMPLETED and stored.transaction_hash == tx.txid
    await _chain_ok(local_ledger, repo, 1)


async def test_recovery_of_broadcast_but_not_recorded(node_db: NodeDatabase,
                                                      local_ledger: LocalLedgerTronClient) -> None:
    """Crash after the chain applied the transfer and before the ledger recorded it: no second transfer."""
    ids = await _nodes(node_db, 1)
    repo = SqlPayoutRepository(node_db)
    [p] = await repo.save_payouts([Payout(idempotency_key="crash/1", node_id=ids[0], amount=Decimal(2),
                                          wallet_address=TEST_WALLET)])
    tx = await local_ledger.prepare_usdt_transfer(TEST_WALLET, Decimal(2), reference="crash/1")
    await repo.claim([Claim(p.payout_id, tx.txid, tx.to_payload())])
    assert (await local_ledger.broadcast(tx))["success"]
    await PayoutProcessor(repo, local_ledger, RecordingAudit()).recover()
    assert (await repo.get_by_key("crash/1")).status == PayoutStatus.COMPLETED
    await _chain_ok(local_ledger, repo, 1)


async def test_expired_unsent_transaction_is_replaced(node_db: NodeDatabase, tmp_path: Path) -> None:
    ledger = LocalLedgerTronClient(f"sqlite+aiosqlite:///{tmp_path / 'exp.db'}", expiration_seconds=-1)
    try:
        ids = await _nodes(node_db, 1)
        repo = SqlPayoutRepository(node_db)
        [p] = await repo.save_payouts([Payout(idempotency_key="exp/0", node_id=ids[0], amount=Decimal(1),
                                              wallet_address=TEST_WALLET)])
        old = await ledger.prepare_usdt_transfer(TEST_WALLET, Decimal(1), reference="exp/0")
        await repo.claim([Claim(p.payout_id, old.txid, old.to_payload())])
        assert (await ledger.broadcast(old))["error"] == "TRANSACTION_EXPIRED"  # the chain refuses it
        ledger.expiration = ledger.expiration.__class__(seconds=60)
        await PayoutProcessor(repo, ledger, RecordingAudit()).recover()
        stored = await repo.get_by_key("exp/0")
        assert stored.status == PayoutStatus.COMPLETED and stored.transaction_hash != old.txid
        assert stored.retry_count == 1
        assert await ledger.get_transaction(old.txid) is None
        await _chain_ok(ledger, repo, 1)
    finally:
        await ledger.close()


async def test_recovery_defers_a_payout_whose_fate_cannot_be_read(node_db: NodeDatabase,
                                                                 local_ledger: LocalLedgerTronClient,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain cannot be asked about one stuck payout: it stays in processing (never re-sent blindly),
    the other stuck payout and the pending one are still finished, and a later pass settles it once."""
    ids = await _nodes(node_db, 3)
    repo = SqlPayoutRepository(node_db)
    stuck = await repo.save_payouts([Payout(idempotency_key=f"defer/{i}", node_id=ids[i], amount=Decimal(2),
                                            wallet_address=TEST_WALLET) for i in range(3)])
    txs = [await local_ledger.prepare_usdt_transfer(TEST_WALLET, Decimal(2), reference=f"defer/{i}") for i in range(2)]
    await repo.claim([Claim(p.payout_id, t.txid, t.to_payload()) for p, t in zip(stuck, txs)])
    assert (await local_ledger.broadcast(txs[0]))["success"]  # the first one did reach the chain
    unreachable, read = {txs[0].txid}, local_ledger.get_transaction

    async def get_transaction(txid: str) -> dict | None:  # as an unreachable full node fails
        if txid in unreachable:
            raise TronNodeUnavailableError("TRON node request failed: ConnectError")
        return await read(txid)

    monkeypatch.setattr(local_ledger, "get_transaction", get_transaction)
    report = await PayoutProcessor(repo, local_ledger, RecordingAudit()).recover()
    assert report == {"reconciled": 1, "resumed": 1, "deferred": 1}
    assert (await repo.get_by_key("defer/0")).status == PayoutStatus.PROCESSING
    assert {(await repo.get_by_key(f"defer/{i}")).status for i in (1, 2)} == {PayoutStatus.COMPLETED}
    unreachable.clear()
    assert await PayoutProcessor(repo, local_ledger, RecordingAudit()).recover() == {"reconciled": 1, "resumed": 0}
    assert (await repo.get_by_key("defer/0")).transaction_hash == txs[0].txid
    await _chain_ok(local_ledger, repo, 3)
