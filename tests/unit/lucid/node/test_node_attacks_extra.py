"""Extra attacks on lucid.node through its REST API, in process (embedded SQLite, httpx.ASGITransport).

What is attacked here and not in tests/security/test_node_*.py: hostile payout amounts (raw JSON tokens,
odd strings) and exact settlement of valid ones, hostile ids and pagination parameters, JWT forgeries in
public-key mode, audience and permission-narrowing rules, claims of the wrong JSON type in a signed token,
PoOT nonce races with conflicting payloads, the 1 MiB output rule in bytes, a heartbeat racing a key
rotation, weak (small-order) Ed25519 node keys, pool membership races, and a node deleted while a payout
for it is queued."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.loop_thread import LoopThread
from lucid.node.api import create_app
from lucid.node.api.auth import mint_token
from lucid.node.models.node_models import Node
from lucid.node.models.pool_models import NodePool
from lucid.node.poot.signing import sign_poot
from tests.fixtures.node_fixtures import TEST_WALLET, node_api_settings, sample_hardware_info

SECRET = "extra-attacks-secret-" * 2
ISS = "lucid-node-management"
NODE = "node_extra_001"
PAYOUT = "/api/v1/nodes/payouts/batch"


def _hdr(role: str = "super_admin", **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, role=role, **kw)}"}


def _raw_pub(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)).decode()


def _envelope(r: httpx.Response, status: int | tuple[int, ...], code: str | None = None) -> dict[str, Any]:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["code"].startswith("LUCID_ERR_") and err["request_id"] == r.headers["x-request-id"]
    if code is not None:
        assert err["code"] == code, r.text[:300]
    return err


def _proof(nonce: str, output: str = "output-data", ts: datetime | None = None, sig: str | None = None) -> dict:
    body: dict[str, Any] = {"output_data": output, "timestamp": (ts or datetime.now(UTC)).isoformat(),
                            "nonce": nonce}
    if sig is not None:
        body["signature"] = sig
    return body


# ---------------------------------------------------------------- per-test app (async)
@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Any]:
    a = create_app(node_api_settings(tmp_path, SECRET))
    async with a.router.lifespan_context(a):
        c = a.state.container
        await c.pool_repo.create(NodePool(pool_id="pool_extra", name="extra", max_nodes=1000))
        await c.node_repo.create(Node(node_id=NODE, name="extra-node-1", status="active"))
        yield a


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://node") as c:
        yield c


async def _settle(client: httpx.AsyncClient, batch_id: str) -> dict[str, Any]:
    """Poll (bounded) until the batch has nothing pending or processing."""
    last: dict[str, Any] = {}
    for _ in range(300):
        r = await client.get(f"/api/v1/nodes/payouts/batch/{batch_id}", headers=_hdr())
        last = r.json()
        if last.get("status") in ("completed", "failed", "partial") and not (
                set(last["counts"]) & {"pending", "processing"}):
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} never settled: {last}")


# ---------------------------------------------------------------- module app on a loop thread (hypothesis)
class _Shared:
    def __init__(self, tmp: Path) -> None:
        self.loop = LoopThread("node-extra-attacks")
        self.loop.run(self._start(tmp), timeout=60)

    async def _start(self, tmp: Path) -> None:
        self.app = create_app(node_api_settings(tmp, SECRET))
        self.cm = self.app.router.lifespan_context(self.app)
        await self.cm.__aenter__()
        c = self.app.state.container
        await c.node_repo.create(Node(node_id=NODE, name="extra-node-1", status="active"))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
                                        base_url="http://node")

    def run(self, coro: Any) -> Any:
        return self.loop.run(coro, timeout=60)

    def close(self) -> None:
        async def _stop() -> None:
            await self.client.aclose()
            await self.cm.__aexit__(None, None, None)
        self.loop.run(_stop(), timeout=60)
        self.loop.stop()


@pytest.fixture(scope="module")
def shared() -> Iterator[_Shared]:
    with tempfile.TemporaryDirectory() as tmp:
        s = _Shared(Path(tmp))
        try:
            yield s
        finally:
            s.close()


_counter = iter(range(10**9))

# ---------------------------------------------------------------- payouts: hostile and exact amounts
_HOSTILE_AMOUNTS = ["0", "-1", "-0", "0.0000001", "1e-7", "1000000.000001", "1000001", "1e400", "-1e400", "NaN",
                    "Infinity", "1e-400", "9" * 5000, '"NaN"', '"sNaN"', '"Infinity"', '"-Infinity"', '"1e999999999"',
                    '"1e-999999999"', '"0x10"', '"1,5"', '""', '" "', "true", "false", "null", "[]", "{}", '"abc"',
                    "0.30000000000000004", "1.0000000000000002", '"1.0000005"', '"-0.000001"', '"0E+5"']


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(raw=st.sampled_from(_HOSTILE_AMOUNTS)
       | st.decimals(allow_nan=False, allow_infinity=False).filter(
           lambda d: d <= 0 or d > 1_000_000 or d != d.quantize(Decimal("0.000001"))).map(lambda d: f'"{d}"'),
       where=st.sampled_from(["batch", "schedule"]))
def test_hostile_payout_amounts_are_a_400_envelope_and_record_nothing(shared: _Shared, raw: str, where: str) -> None:
    bid = f"batch_hostile_{next(_counter)}"
    body = ('{"batch_id":"%s",%s"payout_requests":[{"node_id":"%s","amount":%s,"wallet_address":"%s"}]}'
            % (bid, '"scheduled_at":"%s",' % (datetime.now(UTC) + timedelta(days=1)).isoformat()
               if where == "schedule" else "", NODE, raw, TEST_WALLET))
    url = PAYOUT if where == "batch" else "/api/v1/nodes/payouts/schedule"
    r = shared.run(shared.client.post(url, content=body.encode(),
                                      headers={**_hdr(), "Content-Type": "application/json"}))
    _envelope(r, 400)
    assert shared.run(shared.client.get(f"/api/v1/nodes/payouts/batch/{bid}", headers=_hdr())).status_code == 404


_amount = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6, allow_nan=False,
                      allow_infinity=False)


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(amounts=st.lists(_amount, min_size=1, max_size=4), as_number=st.booleans())
def test_valid_amounts_are_paid_exactly_once_to_the_micro(shared: _Shared, amounts: list[Decimal],
                                                          as_number: bool) -> None:
    """Sent as JSON strings or as raw JSON numbers (parsed to float by the framework): the ledger moves the
    exact decimal sum, the history shows each exact amount, a re-submission pays nothing more."""
    bid = f"batch_exact_{next(_counter)}"
    items = ",".join('{"node_id":"%s","amount":%s,"wallet_address":"%s"}'
                     % (NODE, str(a) if as_number else f'"{a}"', TEST_WALLET) for a in amounts)
    body = f'{{"batch_id":"{bid}","payout_requests":[{items}]}}'.encode()
    hdr = {**_hdr(), "Content-Type": "application/json"}
    ledger = shared.app.state.container.tron

    async def scenario() -> None:
        before = await ledger.get_balance(TEST_WALLET)
        assert (await shared.client.post(PAYOUT, content=body, headers=hdr)).status_code == 202
        await _settle(shared.client, bid)
        again = await shared.client.post(PAYOUT, content=body, headers=hdr)
        assert again.status_code == 202  # same id, same payload: the same batch
        await _settle(shared.client, bid)
        assert await ledger.get_balance(TEST_WALLET) - before == sum(amounts, Decimal(0))
        hist = (await shared.client.get("/api/v1/nodes/payouts/history", params={"batch_id": bid, "limit": 100},
                                        headers=_hdr())).json()["payouts"]
        assert sorted(Decimal(p["amount"]) for p in hist) == sorted(amounts)
        assert {p["status"] for p in hist} == {"completed"} and {p["node_id"] for p in hist} == {NODE}

    shared.run(scenario())


# ---------------------------------------------------------------- ids and pagination
_BAD_IDS = ["node_..%2F..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "node_%00abc", "node_abc%0A", "node_a",
            "node_" + "a" * 80, "NODE_abc_1", "node_abc;drop", "node_abc'--", "%2e%2e", "node_abc%20x"]


@pytest.mark.parametrize("bad", _BAD_IDS)
async def test_hostile_path_ids_are_4xx_envelopes_on_every_node_route(client: httpx.AsyncClient, bad: str) -> None:
    for method, path in [("GET", f"/api/v1/nodes/{bad}"), ("PUT", f"/api/v1/nodes/{bad}"),
                         ("DELETE", f"/api/v1/nodes/{bad}"), ("POST", f"/api/v1/nodes/{bad}/start"),
                         ("POST", f"/api/v1/nodes/{bad}/poot/validate"), ("GET", f"/api/v1/nodes/{bad}/payouts"),
                         ("GET", f"/api/v1/nodes/pools/{bad.replace('node_', 'pool_')}"),
                         ("GET", f"/api/v1/nodes/payouts/batch/{bad.replace('node_', 'batch_')}")]:
        r = await client.request(method, path, headers=_hdr(), json=_proof("n-" + str(next(_counter))))
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text[:200])
        _envelope(r, r.status_code)


@pytest.mark.parametrize("params", [{"page": "0"}, {"page": "-1"}, {"page": "100001"}, {"limit": "0"},
                                    {"limit": "101"}, {"limit": "1e3"}, {"page": "9" * 400}, {"page": "NaN"},
                                    {"status": "paid"}, {"limit": "-5"}, {"page": "1.5"}])
async def test_hostile_pagination_is_a_400_envelope(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    for url in ["/api/v1/nodes", "/api/v1/nodes/pools", "/api/v1/nodes/payouts/history",
                f"/api/v1/nodes/{NODE}/poot/history", f"/api/v1/nodes/{NODE}/payouts"]:
        if "status" in params and "pools" in url or "status" in params and "poot" in url:
            continue  # these routes take no status filter
        r = await client.get(url, params=params, headers=_hdr())
        _envelope(r, 400, "LUCID_ERR_5000")


# ---------------------------------------------------------------- JWT
def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


async def test_public_key_mode_refuses_alg_confusion_and_foreign_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    a = create_app(node_api_settings(tmp_path, None, jwt_public_key=pem))
    now = int(time.time())
    claims = {"sub": "mallory", "role": "super_admin", "iat": now, "exp": now + 600, "iss": ISS}
    head_hs = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    head_rs = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    forged = {
        "hs256_keyed_with_the_public_pem": f"{head_hs}.{body}."
        + _b64(hmac.new(pem.encode(), f"{head_hs}.{body}".encode(), hashlib.sha256).digest()),
        "rs256_header_over_an_eddsa_signature": f"{head_rs}.{body}." + _b64(key.sign(f"{head_rs}.{body}".encode())),
        "other_rsa_key": jwt.encode(claims, rsa.generate_private_key(65537, 2048), algorithm="RS256"),
        "other_ec_key": jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "other_ed_key": jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "expired": jwt.encode(dict(claims, exp=now - 1), key, algorithm="EdDSA"),
    }
    async with a.router.lifespan_context(a), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=a, raise_app_exceptions=False), base_url="http://node") as c:
        good = jwt.encode(claims, key, algorithm="EdDSA")
        assert (await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {good}"})).status_code == 200
        for name, token in forged.items():
            r = await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, name
            _envelope(r, 401, "LUCID_ERR_1203")


async def test_audience_is_enforced_when_configured(tmp_path: Path) -> None:
    a = create_app(node_api_settings(tmp_path, SECRET, jwt_audience="lucid-node-api"))
    async with a.router.lifespan_context(a), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=a, raise_app_exceptions=False), base_url="http://node") as c:
        ok = mint_token(SECRET, role="admin", audience="lucid-node-api")
        assert (await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {ok}"})).status_code == 200
        for token in (mint_token(SECRET, role="admin"), mint_token(SECRET, role="admin", audience="lucid-services")):
            _envelope(await c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}), 401,
                      "LUCID_ERR_1203")


async def test_permissions_claim_narrows_and_never_widens(client: httpx.AsyncClient, app: Any) -> None:
    widen = _hdr("worker", permissions=["payout:process", "node:write", "pool:write", "node:read"])
    body = {"batch_id": "batch_widen_1",
            "payout_requests": [{"node_id": NODE, "amount": "1", "wallet_address": TEST_WALLET}]}
    _envelope(await client.post(PAYOUT, json=body, headers=widen), 403, "LUCID_ERR_1203")
    _envelope(await client.post("/api/v1/nodes", json={"name": "widened-node"}, headers=widen), 403)
    assert (await client.get("/api/v1/nodes", headers=widen)).status_code == 200  # kept what the role has
    narrow = _hdr("admin", permissions=["node:read"])
    _envelope(await client.post(PAYOUT, json=body, headers=narrow), 403, "LUCID_ERR_1203")
    assert (await client.get("/api/v1/nodes/payouts/batch/batch_widen_1", headers=_hdr())).status_code == 404


def _signed(claims: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def _claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": f"odd-{next(_counter)}", "iat": now, "exp": now + 600, "iss": ISS, **kw}


@pytest.mark.parametrize("role", [{"name": "admin"}, ["admin"]])
async def test_signed_token_with_a_non_string_role_is_a_401(client: httpx.AsyncClient, role: Any) -> None:
    _envelope(await client.get("/api/v1/nodes", headers=_signed(_claims(role=role))), 401, "LUCID_ERR_1203")


@pytest.mark.parametrize("case", ["permissions_as_string", "node_id_as_number"])
async def test_malformed_narrowing_claims_never_widen(client: httpx.AsyncClient, case: str) -> None:
    if case == "permissions_as_string":  # meant: an admin token that may only read nodes
        hdr = _signed(_claims(role="admin", permissions="node:read"))
        body = {"batch_id": "batch_odd_perm1",
                "payout_requests": [{"node_id": NODE, "amount": "1", "wallet_address": TEST_WALLET}]}
        r = await client.post(PAYOUT, json=body, headers=hdr)
    else:  # meant: a worker bound to node 424242, submitting for another node
        hdr = _signed(_claims(role="worker", node_id=424242))
        r = await client.post(f"/api/v1/nodes/{NODE}/poot/validate", json=_proof("odd-node-id-nonce-01"),
                              headers=hdr)
    _envelope(r, (401, 403), "LUCID_ERR_1203")


# ---------------------------------------------------------------- PoOT
async def test_concurrent_proofs_with_one_nonce_and_different_payloads_store_exactly_one(
        client: httpx.AsyncClient, app: Any) -> None:
    hdr = _hdr("validator")
    ts = datetime.now(UTC)
    bodies = [_proof("race-nonce-Zq81xK3p", output=f"output-{i}" * (i + 1), ts=ts) for i in range(12)]
    answers = await asyncio.gather(*(client.post(f"/api/v1/nodes/{NODE}/poot/validate", json=b, headers=hdr)
                                     for b in bodies))
    ok = [r for r in answers if r.status_code == 200]
    assert len(ok) == 1, [r.status_code for r in answers]
    for r in answers:
        if r.status_code != 200:
            _envelope(r, 409, "LUCID_ERR_5005")
    hist = (await client.get(f"/api/v1/nodes/{NODE}/poot/history", params={"limit": 100},
                             headers=_hdr("validator"))).json()["validations"]
    assert len(hist) == 12 and sum(v["is_valid"] for v in hist) == (1 if ok[0].json()["is_valid"] else 0)
    assert [v["output_hash"] for v in hist if not v["errors"] or v["errors"] != ["Nonce already used"]] == [
        ok[0].json()["output_hash"]]


async def test_batch_validate_duplicate_nonces_and_unsigned_items_for_a_keyed_node(
        client: httpx.AsyncClient, app: Any) -> None:
    key = Ed25519PrivateKey.generate()
    await app.state.container.node_repo.create(Node(node_id="node_keyed_001", name="keyed-1", status="active",
                                                    public_key=_raw_pub(key)))
    ts = datetime.now(UTC)
    items = [dict(_proof("dup-nonce-AAAA1111", ts=ts), node_id=NODE),
             dict(_proof("dup-nonce-AAAA1111", output="other", ts=ts), node_id=NODE),
             dict(_proof("keyed-nonce-unsigned", ts=ts), node_id="node_keyed_001"),
             dict(_proof("keyed-nonce-signed1", ts=ts,
                         sig=sign_poot(key, "node_keyed_001", "output-data", ts, "keyed-nonce-signed1")),
                  node_id="node_keyed_001"),
             dict(_proof("keyed-nonce-wrongnode", ts=ts,  # a signature made for another node id
                         sig=sign_poot(key, NODE, "output-data", ts, "keyed-nonce-wrongnode")),
                  node_id="node_keyed_001")]
    r = await client.post("/api/v1/nodes/poot/batch-validate", json={"validations": items}, headers=_hdr("validator"))
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert sum("error" not in x for x in res[:2]) == 1  # one nonce, one winner
    assert res[2]["error_code"] == "LUCID_ERR_5005" and "signature" in res[2]["error"]
    assert "error" not in res[3]
    assert res[4]["error_code"] == "LUCID_ERR_5005" and "signature" in res[4]["error"]


async def test_output_over_one_mib_in_utf8_bytes_is_refused(client: httpx.AsyncClient) -> None:
    output = "é" * (512 * 1024 + 10)
    assert len(output.encode()) > 1024 * 1024
    r = await client.post(f"/api/v1/nodes/{NODE}/poot/validate", json=_proof("big-utf8-nonce-01", output=output),
                          headers=_hdr("validator"))
    _envelope(r, 400, "LUCID_ERR_5005")


async def test_a_small_order_node_key_cannot_make_signatures_forgeable(client: httpx.AsyncClient) -> None:
    identity = bytes([1]) + bytes(31)
    r = await client.post("/api/v1/nodes", json={"name": "weak-key-node", "public_key": base64.b64encode(
        identity).decode()}, headers=_hdr())
    if r.status_code == 400:  # refused at registration: the control holds
        return
    assert r.status_code == 201, r.text
    nid = r.json()["node_id"]
    assert (await client.post(f"/api/v1/nodes/{nid}/start", headers=_hdr())).status_code == 200
    forged = base64.b64encode(identity + bytes(32)).decode()  # made without any private key
    r = await client.post(f"/api/v1/nodes/{nid}/poot/validate",
                          json=_proof("forged-sig-nonce-01", sig=forged), headers=_hdr("validator"))
    _envelope(r, 400, "LUCID_ERR_5005")


async def test_heartbeat_racing_a_key_rotation_keeps_the_new_key(client: httpx.AsyncClient, app: Any) -> None:
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    c = app.state.container
    await c.node_repo.create(Node(node_id="node_rotate_01", name="rotate-1", status="active",
                                  public_key=_raw_pub(old)))
    worker = _hdr("worker", node_id="node_rotate_01")
    repo = c.nodes.repository
    original = repo.get_by_id
    rotated: list[httpx.Response] = []
    armed = [True]

    async def read_then_rotate(node_id: str, *a: Any, **kw: Any) -> Any:
        node = await original(node_id, *a, **kw)
        if armed[0]:  # the heartbeat has read the node; the operator's rotation commits now
            armed[0] = False
            rotated.append(await client.put("/api/v1/nodes/node_rotate_01", json={"public_key": _raw_pub(new)},
                                            headers=_hdr()))
        return node

    repo.get_by_id = read_then_rotate
    try:
        assert (await client.post("/api/v1/nodes/node_rotate_01/heartbeat", headers=worker)).status_code == 200
    finally:
        repo.get_by_id = original
    assert rotated[0].status_code == 200 and rotated[0].json()["public_key"] == _raw_pub(new)
    ts = datetime.now(UTC)
    stale = await client.post("/api/v1/nodes/node_rotate_01/poot/validate", headers=worker, json=_proof(
        "rotated-nonce-0001", ts=ts, sig=sign_poot(old, "node_rotate_01", "output-data", ts, "rotated-nonce-0001")))
    node = (await client.get("/api/v1/nodes/node_rotate_01", headers=_hdr())).json()
    assert node["public_key"] == _raw_pub(new)
    _envelope(stale, 400, "LUCID_ERR_5005")


# the 8 points of small order (libsodium's list, with both x signs) and non-canonical encodings of them
_WEAK_KEYS = ["01" + "00" * 31, "ec" + "ff" * 30 + "7f", "00" * 32, "00" * 31 + "80", "01" + "00" * 30 + "80",
              "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
              "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
              "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
              "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
              "ed" + "ff" * 30 + "7f", "ee" + "ff" * 30 + "7f", "ff" * 32]


@pytest.mark.parametrize("weak", _WEAK_KEYS)
async def test_small_order_and_non_canonical_keys_are_refused_at_registration_and_update(
        client: httpx.AsyncClient, weak: str) -> None:
    key = base64.b64encode(bytes.fromhex(weak)).decode()
    _envelope(await client.post("/api/v1/nodes", json={"name": f"weak-{weak[:6]}", "public_key": key},
                                headers=_hdr()), 400)
    _envelope(await client.put(f"/api/v1/nodes/{NODE}", json={"public_key": key}, headers=_hdr()), 400)
    good = _raw_pub(Ed25519PrivateKey.generate())
    assert (await client.post("/api/v1/nodes", json={"name": f"strong-{weak[:6]}", "public_key": good},
                              headers=_hdr())).status_code == 201


def test_a_weak_key_stored_before_the_check_verifies_nothing() -> None:
    """A row written before keys were checked: R = identity, S = 0 must not verify under it."""
    from lucid.node.poot.signing import verify_poot_signature

    identity = bytes([1]) + bytes(31)
    assert not verify_poot_signature(base64.b64encode(identity).decode(),
                                     base64.b64encode(identity + bytes(32)).decode(), b"any message")


# ---------------------------------------------------------------- nodes and pools
async def test_update_cannot_set_limits_a_create_would_refuse(client: httpx.AsyncClient) -> None:
    too_big = {"configuration": {"resource_limits": {"memory_bytes": 2**50}}}
    created = await client.post("/api/v1/nodes", json={"name": "hw-node-1", "hardware_info": sample_hardware_info(),
                                                       **too_big}, headers=_hdr())
    _envelope(created, 400, "LUCID_ERR_5000")  # the rule exists
    nid = (await client.post("/api/v1/nodes", json={"name": "hw-node-2", "hardware_info": sample_hardware_info()},
                             headers=_hdr())).json()["node_id"]
    r = await client.put(f"/api/v1/nodes/{nid}", json=too_big, headers=_hdr())
    stored = (await client.get(f"/api/v1/nodes/{nid}", headers=_hdr())).json()
    assert (stored["configuration"] or {}).get("resource_limits") is None, stored["configuration"]
    _envelope(r, 400, "LUCID_ERR_5000")


async def test_an_update_racing_another_is_validated_against_the_node_that_won(
        client: httpx.AsyncClient, app: Any) -> None:
    """A PUT of limits that fit the hardware it read, while another PUT shrinks that hardware: the limits
    PUT must not land on the new hardware unchecked (compare-and-set, re-applied to a fresh read)."""
    hw = sample_hardware_info()
    nid = (await client.post("/api/v1/nodes", json={"name": "race-hw-1", "hardware_info": hw},
                             headers=_hdr())).json()["node_id"]
    small = dict(hw, memory={"total_bytes": 2**30, "type": "DDR4"})
    repo = app.state.container.nodes.repository
    original = repo.get_by_id
    armed = [True]

    async def read_then_shrink(node_id: str, *a: Any, **kw: Any) -> Any:
        node = await original(node_id, *a, **kw)
        if armed[0]:
            armed[0] = False
            r = await client.put(f"/api/v1/nodes/{nid}", json={"hardware_info": small}, headers=_hdr())
            assert r.status_code == 200, r.text
        return node

    repo.get_by_id = read_then_shrink
    try:
        r = await client.put(f"/api/v1/nodes/{nid}", headers=_hdr(), json={
            "configuration": {"resource_limits": {"memory_bytes": hw["memory"]["total_bytes"]}}})
    finally:
        repo.get_by_id = original
    _envelope(r, 400, "LUCID_ERR_5000")
    stored = (await client.get(f"/api/v1/nodes/{nid}", headers=_hdr())).json()
    assert stored["hardware_info"]["memory"]["total_bytes"] == 2**30
    assert (stored["configuration"] or {}).get("resource_limits") is None


async def test_racing_pool_joins_and_a_delete_keep_every_pool_count_true(client: httpx.AsyncClient) -> None:
    pools = ["pool_race_a1", "pool_race_b2", "pool_race_c3"]
    for p in pools:
        assert (await client.post("/api/v1/nodes/pools", json={"pool_id": p, "name": p.replace("_", "-"),
                                                               "max_nodes": 3}, headers=_hdr())).status_code == 201
    ids = [(await client.post("/api/v1/nodes", json={"name": f"racer-{i}"}, headers=_hdr())).json()["node_id"]
           for i in range(6)]
    reqs = [client.post(f"/api/v1/nodes/pools/{p}/nodes", json={"node_id": n}, headers=_hdr())
            for n in ids for p in pools]
    reqs += [client.delete(f"/api/v1/nodes/{ids[0]}", headers=_hdr()),
             client.delete(f"/api/v1/nodes/pools/{pools[2]}", headers=_hdr())]
    answers = await asyncio.gather(*reqs)
    for r in answers:
        assert r.status_code < 500, r.text
    joined = sum(r.status_code == 200 for r in answers[:18])
    assert joined <= 6  # a node joins one pool at most
    total = 0
    for p in (await client.get("/api/v1/nodes/pools", headers=_hdr())).json()["pools"]:
        members = (await client.get("/api/v1/nodes", params={"pool_id": p["pool_id"], "limit": 100},
                                    headers=_hdr())).json()["pagination"]["total"]
        assert p["node_count"] == members <= p["max_nodes"], p
        total += members
    assert total <= 6


async def test_a_refused_create_or_rename_leaves_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/v1/nodes/pools", json={"pool_id": "pool_tiny_01", "name": "tiny", "max_nodes": 1},
                              headers=_hdr())).status_code == 201
    first = await client.post("/api/v1/nodes", json={"name": "tiny-1", "initial_pool_id": "pool_tiny_01"},
                              headers=_hdr())
    assert first.status_code == 201
    _envelope(await client.post("/api/v1/nodes", json={"name": "tiny-2", "initial_pool_id": "pool_tiny_01"},
                                headers=_hdr()), 409, "LUCID_ERR_5004")
    assert (await client.get("/api/v1/nodes", params={"name": "tiny-2"}, headers=_hdr())).json()["nodes"] == []
    _envelope(await client.put(f"/api/v1/nodes/{first.json()['node_id']}", json={"name": "extra-node-1"},
                               headers=_hdr()), 409, "LUCID_ERR_5007")
    assert (await client.get(f"/api/v1/nodes/{first.json()['node_id']}", headers=_hdr())).json()["name"] == "tiny-1"
    pool = (await client.get("/api/v1/nodes/pools/pool_tiny_01", headers=_hdr())).json()
    assert pool["node_count"] == 1


# ---------------------------------------------------------------- payouts and node lifecycle
async def test_a_batch_naming_one_unknown_node_is_refused_whole(client: httpx.AsyncClient, app: Any) -> None:
    before = await app.state.container.tron.get_balance(TEST_WALLET)
    body = {"batch_id": "batch_unknown_1", "payout_requests": [
        {"node_id": NODE, "amount": "3", "wallet_address": TEST_WALLET},
        {"node_id": "node_does_not_exist", "amount": "4", "wallet_address": TEST_WALLET}]}
    _envelope(await client.post(PAYOUT, json=body, headers=_hdr()), 404, "LUCID_ERR_5001")
    assert (await client.get("/api/v1/nodes/payouts/batch/batch_unknown_1", headers=_hdr())).status_code == 404
    hist = (await client.get("/api/v1/nodes/payouts/history", params={"batch_id": "batch_unknown_1"},
                             headers=_hdr())).json()
    assert hist["pagination"]["total"] == 0
    assert await app.state.container.tron.get_balance(TEST_WALLET) == before


async def test_a_node_deleted_before_its_payout_is_sent_is_not_paid(client: httpx.AsyncClient, app: Any) -> None:
    ledger = app.state.container.tron
    nid = (await client.post("/api/v1/nodes", json={"name": "leaving-node"}, headers=_hdr())).json()["node_id"]
    before = await ledger.get_balance(TEST_WALLET)
    when = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    r = await client.post("/api/v1/nodes/payouts/schedule", headers=_hdr(), json={
        "batch_id": "batch_leaving_1", "scheduled_at": when,
        "payout_requests": [{"node_id": nid, "amount": "7", "wallet_address": TEST_WALLET}]})
    assert r.status_code == 202
    deleted = await client.delete(f"/api/v1/nodes/{nid}", headers=_hdr())
    if deleted.status_code == 200:  # deletion allowed: the queued payout must then not go out
        await _settle(client, "batch_leaving_1")
        assert await ledger.get_balance(TEST_WALLET) == before
    else:  # or deletion refused while a payout is pending
        _envelope(deleted, 409)


async def test_a_payout_whose_node_vanished_after_queuing_is_cancelled_not_sent(
        client: httpx.AsyncClient, app: Any) -> None:
    """The DELETE refusal cannot see a payout queued after its check (enqueue checks the node, then
    inserts): the claim step must re-check the node, so such a payout ends cancelled and nothing is sent."""
    from lucid.node.db.tables import nodes

    c = app.state.container
    ledger = c.tron
    nid = (await client.post("/api/v1/nodes", json={"name": "vanishing-node"}, headers=_hdr())).json()["node_id"]
    before = await ledger.get_balance(TEST_WALLET)
    when = (datetime.now(UTC) + timedelta(seconds=0.5)).isoformat()
    r = await client.post("/api/v1/nodes/payouts/schedule", headers=_hdr(), json={
        "batch_id": "batch_vanish_1", "scheduled_at": when,
        "payout_requests": [{"node_id": nid, "amount": "5", "wallet_address": TEST_WALLET}]})
    assert r.status_code == 202
    async with c.db.engine.begin() as conn:  # the row goes as a racing DELETE would have taken it
        await conn.execute(nodes.delete().where(nodes.c.node_id == nid))
    c.db.node_cache.invalidate(nid)
    batch = await _settle(client, "batch_vanish_1")
    assert batch["counts"] == {"cancelled": 1} and batch["status"] == "failed", batch
    assert await ledger.get_balance(TEST_WALLET) == before
    hist = (await client.get("/api/v1/nodes/payouts/history", params={"batch_id": "batch_vanish_1"},
                             headers=_hdr())).json()["payouts"]
    assert [p["status"] for p in hist] == ["cancelled"]


async def test_delete_is_refused_while_a_payout_is_pending_and_allowed_once_it_settles(
        client: httpx.AsyncClient, app: Any) -> None:
    nid = (await client.post("/api/v1/nodes", json={"name": "paid-then-gone"}, headers=_hdr())).json()["node_id"]
    when = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
    assert (await client.post("/api/v1/nodes/payouts/schedule", headers=_hdr(), json={
        "batch_id": "batch_refuse_del1", "scheduled_at": when,
        "payout_requests": [{"node_id": nid, "amount": "2", "wallet_address": TEST_WALLET}]})).status_code == 202
    err = _envelope(await client.delete(f"/api/v1/nodes/{nid}", headers=_hdr()), 409, "LUCID_ERR_5003")
    assert "payout" in err["message"]
    assert (await client.get(f"/api/v1/nodes/{nid}", headers=_hdr())).status_code == 200
    assert (await _settle(client, "batch_refuse_del1"))["counts"] == {"completed": 1}
    assert (await client.delete(f"/api/v1/nodes/{nid}", headers=_hdr())).status_code == 200
