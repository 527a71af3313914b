"""Attacks on the mesh's live enforcement, made as an outside client would: raw bytes over a real mTLS
connection (not our MeshClient), the discovery API with hostile bodies, and denials that must reach
IF.witness. Each test names the hole it holds closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.witness import Witness
from lucid.service_mesh.api import create_app
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.policy import CLUSTER_PLANE
from lucid.service_mesh.policy.mesh_client import MeshClient, TokenSource
from lucid.service_mesh.policy.mesh_server import MeshRequest, MeshResponse
from lucid.service_mesh.policy.service import MeshService
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.mtls_manager import MTLSManager

pytestmark = pytest.mark.security


class Recorder:
    """A handler that records the method it was given and treats anything but GET/HEAD as a write, as
    the careless handler of the report did."""

    def __init__(self) -> None:
        self.methods: list[str] = []
        self.writes = 0

    async def __call__(self, request: MeshRequest) -> MeshResponse:
        self.methods.append(request.method)
        if request.method not in ("GET", "HEAD"):
            self.writes += 1
        return MeshResponse(200, {"method": request.method, "caller": request.caller.identity.spiffe_id})


@contextlib.asynccontextmanager
async def chain_service(cert_manager: CertificateManager, auth: ServiceAuthProvider,
                        audit: Any = None) -> AsyncIterator[tuple[MeshService, Recorder]]:
    handler = Recorder()
    svc = MeshService("blockchain-core", "blockchain-core", "chain", cert_manager, auth, handler, audit=audit)
    await svc.start()
    try:
        yield svc, handler
    finally:
        await svc.close()


def _raw_client(cert_manager: CertificateManager, name: str) -> tuple[ssl.SSLContext, str]:
    mtls = MTLSManager(cert_manager)
    cert, key = cert_manager.generate_service_certificate(name, f"{name}-raw", name, CLUSTER_PLANE[name])
    return mtls.client_context(cert, key), name


async def _raw_exchange(ctx: ssl.SSLContext, port: int, raw: bytes, expect_responses: int = 1) -> bytes:
    """Send raw request bytes over mTLS; read until ``expect_responses`` status lines arrived or EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname=MTLSManager.server_hostname("blockchain-core"))
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(5):
            while data.count(b"HTTP/1.1 ") < expect_responses or not data.endswith((b"}", b"\r\n\r\n")):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                data += chunk
    except TimeoutError:
        pass
    writer.close()
    return data


def _request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: blockchain-core\r\nauthorization: Bearer {token}\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------- item 13: one canonical method
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "HEAD"]).flatmap(
    lambda m: st.lists(st.booleans(), min_size=len(m), max_size=len(m)).map(
        lambda flips: "".join(c.lower() if f else c for c, f in zip(m, flips, strict=True))))
    | st.sampled_from(["POST", "PUT", "DELETE", "PATCH", "post", "Delete", "FOO", "TRACE"]))
def test_method_policy_approves_is_method_handler_gets(cert_manager: CertificateManager,
                                                       mesh_auth: ServiceAuthProvider, method: str) -> None:
    """ops -> chain is read-only. Whatever the case of the method, either the handler gets exactly the
    approved GET/HEAD, or the request is refused before it (the handler ran a write for 'GeT' before)."""

    async def scenario() -> None:
        async with chain_service(cert_manager, mesh_auth) as (svc, handler):
            ctx, name = _raw_client(cert_manager, "api-gateway")
            token = mesh_auth.generate_service_token(name, f"{name}-raw", name, "ops")
            data = await _raw_exchange(ctx, svc.port, _request(method, "/api/v1/blocks", token))
            status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
            assert handler.writes == 0, (method, handler.methods)
            if method in ("GET", "HEAD"):
                assert status == 200 and handler.methods == [method]
            else:
                assert status in (403, 405), (method, data[:200])
                assert handler.methods == []
                if method != "HEAD":
                    assert b"LUCID_ERR_1203" in data

    asyncio.run(scenario())


# ---------------------------------------------------------------- item 14: HEAD keeps the connection
async def test_head_answers_without_body_and_keeps_the_pipelined_request(
        cert_manager: CertificateManager, mesh_auth: ServiceAuthProvider, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with chain_service(cert_manager, mesh_auth) as (svc, handler):
        ctx, name = _raw_client(cert_manager, "api-gateway")
        token = mesh_auth.generate_service_token(name, f"{name}-raw", name, "ops")
        raw = _request("HEAD", "/x", token) + _request("GET", "/y", token)
        data = await _raw_exchange(ctx, svc.port, raw, expect_responses=2)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert rest.startswith(b"HTTP/1.1 200"), data  # no body after the HEAD answer; the GET was answered
        assert handler.methods == ["HEAD", "GET"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_204_with_a_body_from_the_handler_does_not_kill_the_connection(
        cert_manager: CertificateManager, mesh_auth: ServiceAuthProvider) -> None:
    async def handler(request: MeshRequest) -> MeshResponse:
        return MeshResponse(204 if request.path == "/empty" else 200, {"ignored": True})

    svc = MeshService("blockchain-core", "blockchain-core", "chain", cert_manager, mesh_auth, handler)
    await svc.start()
    try:
        ctx, name = _raw_client(cert_manager, "api-gateway")
        token = mesh_auth.generate_service_token(name, f"{name}-raw", name, "ops")
        data = await _raw_exchange(ctx, svc.port, _request("GET", "/empty", token) + _request("GET", "/full", token),
                                   expect_responses=2)
        assert data.startswith(b"HTTP/1.1 204") and b"HTTP/1.1 200" in data and data.endswith(b'{"ignored": true}')
    finally:
        await svc.close()


# ---------------------------------------------------------------- item 17: denials reach IF.witness
async def test_denied_calls_and_refused_handshakes_are_audited(cert_manager: CertificateManager,
                                                               mesh_auth: ServiceAuthProvider, tmp_path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="lucid.service_mesh.policy.mesh_server")
    witness = Witness(f"sqlite:///{tmp_path / 'audit.db'}", key_dir=tmp_path / "keys")
    try:
        async with chain_service(cert_manager, mesh_auth, audit=witness) as (svc, handler):
            gw = MeshService("api-gateway", "api-gateway", "ops", cert_manager, mesh_auth)
            tp = MeshService("tron-payment", "tron-payment", "wallet", cert_manager, mesh_auth)
            with pytest.raises(Exception):
                await gw.call(svc, "POST", "/api/v1/blocks")  # ops -> chain write: 1203
            with pytest.raises(Exception):
                await tp.call(svc, "GET", "/api/v1/blocks")  # wallet -> chain: 1203
            await gw.client.aclose()
            await tp.client.aclose()
            # an expired client certificate: refused in the TLS handshake, before any request
            mtls = MTLSManager(cert_manager)
            expired = cert_manager.generate_service_certificate("api-gateway", "old", "api-gateway", "ops",
                                                                validity_days=-1)
            stale = MeshClient(mtls.client_context(*expired), TokenSource(mesh_auth, "api-gateway", "old",
                                                                          "api-gateway", "ops"))
            stale.own_certificate = None  # act as a client that does not check itself: the server must
            with pytest.raises(Exception):
                await stale.call("blockchain-core", "127.0.0.1", svc.port, "GET", "/x")
            await stale.aclose()
            for _ in range(100):
                if svc.server.handshakes_refused:
                    break
                await asyncio.sleep(0.02)
            assert handler.methods == []
        denied = witness.query(component="lucid.service_mesh", operation="mesh.call_denied")
        refused = witness.query(component="lucid.service_mesh", operation="mesh.handshake_refused")
        assert sorted((e["params"]["source"], e["params"]["method"]) for e in denied) == [
            ("spiffe://lucid.onion/ops/api-gateway/api-gateway", "POST"),
            ("spiffe://lucid.onion/wallet/tron-payment/tron-payment", "GET")]
        assert all(e["params"]["error_code"] == "LUCID_ERR_1203" and e["severity"] == "WARN" for e in denied)
        assert len(refused) == 1 and refused[0]["params"]["error_code"] == "LUCID_ERR_1204"
        assert "expired" in refused[0]["params"]["reason"].lower() or refused[0]["params"]["reason"]
        assert any("handshake_refused" in r.getMessage() for r in caplog.records)
        assert witness.verify().ok
    finally:
        witness.close()


# ---------------------------------------------------------------- item 15: discovery API
class LeaseCounter:
    """The KV store, counting leases granted and revoked (a proxy: every other call passes through)."""

    def __init__(self, kv: Any, fail_txn: bool = False) -> None:
        self._kv = kv
        self.live: set[int] = set()
        self.fail_txn = fail_txn

    async def grant_lease(self, ttl: float) -> int:
        lease = await self._kv.grant_lease(ttl)
        self.live.add(lease)
        return lease

    async def revoke_lease(self, lease: int) -> Any:
        self.live.discard(lease)
        return await self._kv.revoke_lease(lease)

    async def txn(self, *a: Any, **kw: Any) -> Any:
        if self.fail_txn:
            raise RuntimeError("store failed after the grants")
        return await self._kv.txn(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kv, name)


@pytest.fixture
async def discovery_api() -> AsyncIterator[tuple[httpx.AsyncClient, ServiceAuthProvider, LeaseCounter]]:
    issuer = ServiceAuthProvider()
    kv = open_kv("memory://")
    await kv.connect()
    counted = LeaseCounter(kv)
    discovery = AsyncServiceDiscoveryClient(kv, prefix="/attack")
    await discovery.start()
    app = create_app(AsyncServiceRegistry(counted, prefix="/attack"), discovery,  # type: ignore[arg-type]
                     ServiceAuthProvider.verifier_from_jwks(issuer.jwks()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mesh") as client:
        yield client, issuer, counted
    await discovery.close()
    await kv.close()


def _body(metadata: Any) -> dict[str, Any]:
    return {"serviceName": "api-gateway", "cluster": "api-gateway", "plane": "ops", "host": "gw.internal",
            "port": 8080, "version": "1.0.0", "metadata": metadata}


def _assert_envelope(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert err["code"].startswith("LUCID_ERR_1") and err["message"] and err["request_id"], r.text[:300]


@pytest.mark.parametrize("depth", [33, 200, 600, 900, 5000, 50_000])
async def test_deep_metadata_is_a_400_envelope_and_leaves_no_lease(discovery_api, depth: int) -> None:
    client, issuer, leases = discovery_api
    hdr = {"authorization": f"Bearer {issuer.generate_service_token('api-gateway', 'gw-1', 'api-gateway', 'ops')}",
           "content-type": "application/json"}
    import json

    body = json.dumps(_body({"k": 1})).replace('{"k": 1}', '{"a":' * depth + "1" + "}" * depth)
    r = await client.post("/service-discovery/services", content=body, headers=hdr)
    _assert_envelope(r, 400)
    assert leases.live == set()
    ok = await client.post("/service-discovery/services", json=_body({"tags": ["x"], "n": {"a": {"b": 1}}}),
                           headers=hdr)
    assert ok.status_code == 201, ok.text  # nesting a real service uses is fine
    assert len(leases.live) == 2


async def test_a_failure_after_the_grants_revokes_the_leases(discovery_api) -> None:
    client, issuer, leases = discovery_api
    leases.fail_txn = True
    hdr = {"authorization": f"Bearer {issuer.generate_service_token('api-gateway', 'gw-1', 'api-gateway', 'ops')}"}
    r = await client.post("/service-discovery/services", json=_body({}), headers=hdr)
    _assert_envelope(r, 500)
    assert leases.live == set()


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/nowhere", 404), ("PATCH", "/service-discovery/services", 405),
    ("GET", "/service-discovery/services/x/health", 405), ("POST", "/service-discovery/services/x/resolve", 405)])
async def test_unknown_routes_and_methods_answer_the_envelope(discovery_api, method: str, path: str,
                                                              status: int) -> None:
    client, issuer, _ = discovery_api
    hdr = {"authorization": f"Bearer {issuer.generate_service_token('api-gateway', 'gw-1', 'api-gateway', 'ops')}"}
    r = await client.request(method, path, headers=hdr)
    _assert_envelope(r, status)
    assert "detail" not in r.json()
