"""Attacks on the payout path, as an outside client would make them through the HTTP API.

Racing payloads for one batch id, idempotency keys reused with other amounts or in other batches. The
invariant checked after every attack: what the ledger paid is exactly what the winning payload asked for,
once, and every refused request left nothing behind (no batch, no payout row, no transfer)."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucid.node.api import create_app
from lucid.node.api.auth import mint_token
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from tests.fixtures.node_fixtures import TEST_WALLET, node_api_settings, sample_node_data

PAYOUT = "/api/v1/nodes/payouts/batch"
NODES = ["node_test_001", "node_test_002", "node_test_003"]


async def _seed(app: Any) -> None:
    c = app.state.container
    await c.pool_repo.create(NodePool(pool_id="pool_workers", name="workers"))
    for nid in NODES:
        await c.node_repo.create(Node(**dict(sample_node_data(), node_id=nid, name=f"n-{nid}")))


def _payload(batch_id: str, amounts: tuple[str, ...], keys: tuple[str | None, ...] | None = None) -> dict[str, Any]:
    reqs = []
    for i, amount in enumerate(amounts):
        r: dict[str, Any] = {"node_id": NODES[i % len(NODES)], "amount": amount, "wallet_address": TEST_WALLET}
        if keys is not None and keys[i] is not None:
            r["idempotency_key"] = keys[i]
        reqs.append(r)
    return {"batch_id": batch_id, "payout_requests": reqs}


async def _settle(client: httpx.AsyncClient, batch_id: str, hdr: dict[str, str]) -> dict[str, Any]:
    """Wait until nothing of the batch is pending/processing (bounded)."""
    for _ in range(400):
        st_ = (await client.get(f"/api/v1/nodes/payouts/batch/{batch_id}", headers=hdr)).json()
        if st_.get("status") in ("completed", "failed", "partial") and not (
                set(st_["counts"]) & {"pending", "processing"}):
            return st_
        await asyncio.sleep(0.025)
    raise AssertionError(f"batch {batch_id} never settled: {st_}")


async def _paid(client: httpx.AsyncClient, hdr: dict[str, str], batch_id: str | None = None) -> list[tuple[str, str, str]]:
    params: dict[str, Any] = {"limit": 100}
    if batch_id:
        params["batch_id"] = batch_id
    hist = (await client.get("/api/v1/nodes/payouts/history", params=params, headers=hdr)).json()
    return sorted((p["node_id"], p["amount"], p["status"]) for p in hist["payouts"])


async def _race(client: httpx.AsyncClient, hdr: dict[str, str], ledger: Any, batch_id: str,
                variants: list[tuple[str, ...]], picks: list[int]) -> None:
    """Send ``variants[picks[i]]`` for one batch id all at once; check the exactly-once invariant."""
    before = await ledger.get_balance(TEST_WALLET)
    bodies = [_payload(batch_id, variants[k]) for k in picks]
    answers = await asyncio.gather(*(client.post(PAYOUT, json=b, headers=hdr) for b in bodies))
    winners = {k for k, r in zip(picks, answers, strict=True) if r.status_code == 202}
    for k, r in zip(picks, answers, strict=True):
        assert r.status_code in (202, 409), r.text
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "LUCID_ERR_5010"
    # exactly one payload won the id (identical payloads may all be answered 202: they are one batch)
    assert len(winners) == 1, (winners, [r.status_code for r in answers])
    won = variants[winners.pop()]
    await _settle(client, batch_id, hdr)
    paid = await _paid(client, hdr, batch_id)
    assert Counter((n, Decimal(a)) for n, a, _ in paid) == Counter(
        (NODES[i % len(NODES)], Decimal(a)) for i, a in enumerate(won)), (paid, won)
    assert {s for _, _, s in paid} == {"completed"}
    spent = (await ledger.get_balance(TEST_WALLET)) - before
    assert spent == sum(Decimal(a) for a in won), (spent, won)


# ---------------------------------------------------------------- both engines, in process
@pytest.fixture
async def payout_app(node_app_factory: Any, node_db_url: str) -> Any:
    app = await node_app_factory(db_url=node_db_url)
    await _seed(app)
    return app


@pytest.fixture
async def client(payout_app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=payout_app), base_url="http://node") as c:
        yield c


async def test_racing_payloads_for_one_batch_id_pay_only_the_winner(client: httpx.AsyncClient, payout_app: Any,
                                                                     auth_headers: dict[str, str]) -> None:
    ledger = payout_app.state.container.tron
    variants = [("100",), ("5", "7"), ("1", "2", "3"), ("0.5",)]
    for round_ in range(3):
        await _race(client, auth_headers, ledger, f"batch_race_{round_}", variants,
                    picks=[i % len(variants) for i in range(16)])


async def test_reused_idempotency_key_with_another_amount_is_409_and_leaves_nothing(
        client: httpx.AsyncClient, payout_app: Any, auth_headers: dict[str, str]) -> None:
    ledger = payout_app.state.container.tron
    first = _payload("batch_key_a", ("10",), keys=("payout-key-0001",))
    assert (await client.post(PAYOUT, json=first, headers=auth_headers)).status_code == 202
    await _settle(client, "batch_key_a", auth_headers)
    balance = await ledger.get_balance(TEST_WALLET)
    for amounts, keys in [(("999",), ("payout-key-0001",)),          # same key, another amount
                          (("10",), ("payout-key-0001",)),           # same key and amount, another batch
                          (("1", "2"), (None, "payout-key-0001")),   # hidden behind an honest payout
                          (("1", "2"), ("dup-key-00001", "dup-key-00001"))]:  # one key twice in a batch
        body = _payload("batch_key_b", amounts, keys)
        r = await client.post(PAYOUT, json=body, headers=auth_headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "LUCID_ERR_5010"
        missing = await client.get("/api/v1/nodes/payouts/batch/batch_key_b", headers=auth_headers)
        assert missing.status_code == 404  # the refused batch left no batch row...
        assert await _paid(client, auth_headers, "batch_key_b") == []  # ...and no payout row
    assert await ledger.get_balance(TEST_WALLET) == balance
    # the id stays free: an honest payload can still use it
    ok = await client.post(PAYOUT, json=_payload("batch_key_b", ("3",)), headers=auth_headers)
    assert ok.status_code == 202
    await _settle(client, "batch_key_b", auth_headers)
    assert await ledger.get_balance(TEST_WALLET) == balance + 3


async def test_processor_refuses_a_key_reused_for_another_payment(payout_app: Any) -> None:
    """The library path (seed API) holds the same rule: no silent 'already done' for another amount."""
    from lucid.node.errors import IdempotencyKeyConflictError

    proc = payout_app.state.container.payouts
    req = {"node_id": NODES[0], "amount": "4", "wallet_address": TEST_WALLET}
    done = await proc.process_payout(req, idempotency_key="lib-key-0001")
    assert done["status"] == "completed"
    again = await proc.process_payout(req, idempotency_key="lib-key-0001")
    assert again["payout_id"] == done["payout_id"]  # the same payment: idempotent
    with pytest.raises(IdempotencyKeyConflictError):
        await proc.process_payout(dict(req, amount="40"), idempotency_key="lib-key-0001")
    batch = await proc.process_batch_payouts([dict(req, amount="40", idempotency_key="lib-key-0001"),
                                              dict(req, amount="1")])
    assert batch["results"][0]["error_code"] == "LUCID_ERR_5010"
    assert batch["results"][1]["status"] == "completed"
    ledger = payout_app.state.container.tron
    assert await ledger.get_balance(TEST_WALLET) == Decimal("5")


# ---------------------------------------------------------------- hypothesis: any interleaving
_amount = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("5000"), places=6, allow_nan=False,
                      allow_infinity=False).map(lambda d: str(d.normalize()) if d == d.to_integral() else str(d))


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(variants=st.lists(st.lists(_amount, min_size=1, max_size=4).map(tuple), min_size=2, max_size=4, unique=True),
       picks=st.lists(st.integers(0, 3), min_size=2, max_size=12))
def test_any_set_of_racing_payloads_pays_exactly_one(variants: list[tuple[str, ...]], picks: list[int]) -> None:
    picks = [p % len(variants) for p in picks]

    async def scenario(tmp: Path) -> None:
        secret = "s" * 32
        app = create_app(node_api_settings(tmp, secret))
        async with app.router.lifespan_context(app):
            await _seed(app)
            hdr = {"Authorization": f"Bearer {mint_token(secret, role='admin')}"}
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as c:
                await _race(c, hdr, app.state.container.tron, "batch_hypothesis", variants, picks)

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))
