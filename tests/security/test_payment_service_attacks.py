"""tron-payment's routes under attack: hostile fields, and prepared transfers changed on their way back.

The node API and api-gateway carry a prepared transfer between prepare and broadcast; a compromised one
must not be able to change the payee or the amount, replay another ledger's transaction, or get a partial
batch broadcast. The real local ledger (SQLite) is behind the handler, so "nothing broadcast" is read
back from it.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lucid.node.tron.local_ledger import LocalLedgerTronClient
from lucid.node.tron.mesh import MeshTronClient, payment_handler
from lucid.service_mesh.policy.mesh_server import MeshRequest

PAYEE = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
OTHER = "TJRabPrwbZy45sbavfcjinPJC18kjpRTv8"
KEY = b"k" * 32


def request(method: str, path: str, body: Any = None, raw: bytes | None = None) -> MeshRequest:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    return MeshRequest(method=method, path=path, headers={}, body=data, caller=None)  # type: ignore[arg-type]


@pytest.fixture()
def ledger(tmp_path: Path) -> Any:
    client = LocalLedgerTronClient(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    yield client
    asyncio.run(client.close())


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def prepare(handler: Any, amount: str = "5", to: str = PAYEE, reference: str = "batch/1") -> dict[str, Any]:
    reply = await handler(request("POST", "/payments/prepare", {"to_address": to, "amount": amount,
                                                                 "reference": reference}))
    assert reply.status == 200, reply.body
    return reply.body["prepared"]  # type: ignore[no-any-return]


def test_an_honest_transfer_goes_through_once(ledger: Any) -> None:
    handler = payment_handler(ledger, KEY)

    async def go() -> None:
        prepared = await prepare(handler)
        first = await handler(request("POST", "/payments/broadcast", {"prepared": [prepared]}))
        again = await handler(request("POST", "/payments/broadcast", {"prepared": [prepared]}))
        assert first.status == 200 and first.body["results"][0]["success"] is True
        assert again.body["results"][0].get("duplicate") is True  # idempotent by txid
        assert await ledger.get_balance(PAYEE) == Decimal("5")

    run(go())


@pytest.mark.parametrize("tamper", [
    lambda p: p["raw"].__setitem__("to", OTHER),
    lambda p: p["raw"].__setitem__("amount_micros", p["raw"]["amount_micros"] * 1000),
    lambda p: p["raw"].pop("tag"),
    lambda p: p["raw"].__setitem__("tag", "0" * 64),
    lambda p: p.__setitem__("to_address", OTHER),
    lambda p: p.__setitem__("txid", "f" * 64),
    lambda p: p["raw"].__setitem__("expiration", p["raw"]["expiration"] + 10**9),
    lambda p: p["raw"].__setitem__("from", OTHER),
], ids=["payee", "amount", "no-tag", "forged-tag", "outer-payee", "txid", "expiry", "payer"])
def test_a_prepared_transfer_changed_on_the_way_is_refused_and_nothing_moves(ledger: Any, tamper: Any) -> None:
    handler = payment_handler(ledger, KEY)

    async def go() -> None:
        honest = await prepare(handler)
        changed = json.loads(json.dumps(honest))
        tamper(changed)
        reply = await handler(request("POST", "/payments/broadcast", {"prepared": [honest, changed]}))
        assert reply.status == 403 and reply.body["error"]["code"] == "LUCID_ERR_1203"
        # all verified before any is broadcast: the honest one in the same batch did not move either
        assert await ledger.get_balance(PAYEE) == 0 and await ledger.get_balance(OTHER) == 0
        assert await ledger.get_transaction(honest["txid"]) is None

    run(go())


def test_a_transfer_signed_by_another_tron_payment_is_refused(ledger: Any) -> None:
    ours, theirs = payment_handler(ledger, KEY), payment_handler(ledger, b"x" * 32)

    async def go() -> None:
        foreign = await prepare(theirs)
        reply = await ours(request("POST", "/payments/broadcast", {"prepared": [foreign]}))
        assert reply.status == 403
        assert await ledger.get_balance(PAYEE) == 0

    run(go())


hostile_text = st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "T" * 34, "0x41" + "0" * 40, "../../etc",
                                                                  "\x00", "T" + "l" * 33, PAYEE + "\n"]))
hostile_value = st.one_of(hostile_text, st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                          st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(to=hostile_value, amount=st.one_of(hostile_value, st.sampled_from(
    ["0", "-1", "1e9", "1000000001", "0.0000001", "NaN", "Infinity", "1e-7", "5", "  5 "])), reference=hostile_value)
def test_hostile_prepare_fields_get_a_400_never_a_crash_or_a_transfer(ledger: Any, to: Any, amount: Any,
                                                                       reference: Any) -> None:
    handler = payment_handler(ledger, KEY)
    reply = run(handler(request("POST", "/payments/prepare", {"to_address": to, "amount": amount,
                                                               "reference": reference})))
    assert reply.status in (200, 400)
    if reply.status == 400:
        assert reply.body["error"]["code"] == "LUCID_ERR_1001"
    else:  # only a genuinely valid request is prepared, and preparing moves nothing
        assert to == PAYEE and isinstance(reference, str)
        assert Decimal(str(amount)) > 0
    assert run(ledger.get_balance(PAYEE)) == 0


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"prepared": []}', b'{"prepared": "x"}',
                                  b'{"prepared": [1]}', b'{"prepared": [{"raw": []}]}',
                                  json.dumps({"prepared": [{}] * 501}).encode(), b"[" * 5000])
def test_malformed_broadcasts_are_refused_with_a_code(ledger: Any, body: bytes) -> None:
    reply = run(payment_handler(ledger, KEY)(request("POST", "/payments/broadcast", raw=body)))
    assert reply.status in (400, 403) and reply.body["error"]["code"].startswith("LUCID_ERR_")


@pytest.mark.parametrize("path", ["/payments/transactions/../../x", "/payments/transactions/" + "g" * 64,
                                  "/payments/balances/notanaddress", "/payments/balances/", "/payments/other"])
def test_lookups_validate_their_path(ledger: Any, path: str) -> None:
    reply = run(payment_handler(ledger, KEY)(request("GET", path)))
    assert reply.status in (400, 404)


def test_the_mesh_client_round_trip_pays_and_reads_back(ledger: Any) -> None:
    """MeshTronClient over the handler (the mesh hop replaced by a direct call): what the node API sees."""
    handler = payment_handler(ledger, KEY)

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reply = await handler(request(method, path, body))
        return reply.status, json.loads(json.dumps(reply.body))

    async def go() -> None:
        client = MeshTronClient(call)
        prepared = await client.prepare_usdt_transfer(PAYEE, Decimal("2.5"), "single/abc")
        [result] = await client.broadcast_many([prepared])
        assert result["success"] is True
        found = await client.get_transaction(prepared.txid)
        assert found is not None and found["success"] is True and Decimal(found["amount"]) == Decimal("2.5")
        assert await client.get_balance(PAYEE) == Decimal("2.5")

    run(go())


def test_a_batch_prepare_validates_every_transfer_first_and_pays_through_the_client(ledger: Any) -> None:
    handler = payment_handler(ledger, KEY)

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        reply = await handler(request(method, path, body))
        return reply.status, json.loads(json.dumps(reply.body))

    async def go() -> None:
        bad = await handler(request("POST", "/payments/prepare", {"transfers": [
            {"to_address": PAYEE, "amount": "1", "reference": "a"}, {"to_address": "nope", "amount": "1",
                                                                     "reference": "b"}]}))
        assert bad.status == 400
        for body in ({"transfers": []}, {"transfers": "x"}, {"transfers": [{}] * 501}):
            assert (await handler(request("POST", "/payments/prepare", body))).status == 400
        client = MeshTronClient(call)
        made = await client.prepare_many([(PAYEE, Decimal("1.5"), f"batch/{i}") for i in range(3)])
        assert [m.reference for m in made] == ["batch/0", "batch/1", "batch/2"]
        results = await client.broadcast_many(made)
        assert all(r["success"] for r in results)
        assert await ledger.get_balance(PAYEE) == Decimal("4.5")

    run(go())
