"""Every payout is audited through IF.witness: entries appear under component ``lucid.node.payouts``."""

from __future__ import annotations

import pytest

from lucid.node.db import NodeDatabase, SqlNodeRepository, SqlPayoutRepository
from lucid.node.models.node_models import Node
from lucid.node.payouts import PayoutProcessor, WitnessAuditLogger
from lucid.node.tron import LocalLedgerTronClient
from tests.fixtures.node_fixtures import TEST_WALLET

witness = pytest.importorskip("infrafabric.witness")


async def test_payouts_are_witnessed(fresh_witness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = NodeDatabase(f"sqlite+aiosqlite:///{tmp_path / 'n.db'}")
    await db.create_all()
    ledger = LocalLedgerTronClient(f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", initial_balance=5)
    try:
        await SqlNodeRepository(db).create(Node(node_id="node_audit_1", name="audit"))
        proc = PayoutProcessor(SqlPayoutRepository(db), ledger, WitnessAuditLogger())
        reqs = [{"node_id": "node_audit_1", "amount": "2", "wallet_address": TEST_WALLET} for _ in range(3)]
        res = await proc.process_batch_payouts(reqs, batch_id="batch_audit")
        assert [r["status"] for r in res["results"]] == ["completed", "completed", "failed"]
        logs = await witness.aget_logs(component="lucid.node.payouts")
        assert [e["operation"] for e in logs] == ["payout.completed", "payout.completed", "payout.failed"]
        keys = {e["params"]["idempotency_key"] for e in logs}
        assert keys == {"batch_audit/0", "batch_audit/1", "batch_audit/2"}
        assert logs[2]["severity"] == "WARN" and logs[0]["params"]["amount"] == "2"
        await proc.process_batch_payouts(reqs, batch_id="batch_audit")  # replay: nothing new happened
        assert len(await witness.aget_logs(component="lucid.node.payouts")) == 3
    finally:
        await ledger.close()
        await db.dispose()
