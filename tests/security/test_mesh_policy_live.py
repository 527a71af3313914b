"""Plane policy enforced on live calls between services over mTLS + JWT (seed's empty policy tests, for real)."""

from __future__ import annotations

import contextlib

import pytest

from lucid.service_mesh.errors import AuthenticationError, MTLSVerificationError, SecurityPolicyViolation
from lucid.service_mesh.policy import CLUSTER_PLANE
from lucid.service_mesh.policy.mesh_client import MeshClient, TokenSource
from lucid.service_mesh.policy.service import MeshService
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager

pytestmark = pytest.mark.security


@contextlib.asynccontextmanager
async def services(cert_manager: CertificateManager, auth: ServiceAuthProvider, *names: str):
    started = [MeshService(n, n, CLUSTER_PLANE[n], cert_manager, auth) for n in names]
    try:
        for s in started:
            await s.start()
        yield started
    finally:
        for s in started:
            await s.close()


async def test_same_plane_and_read_only_ops_to_chain(cert_manager, mesh_auth) -> None:
    async with services(cert_manager, mesh_auth, "api-gateway", "session-management", "blockchain-core") as (
        gw, sm, bc
    ):
        reply = await gw.call(sm, "POST", "/api/v1/sessions", json={"a": 1})
        assert reply.status_code == 200
        assert reply.json()["caller"] == "spiffe://lucid.onion/ops/api-gateway/api-gateway"
        assert reply.peer.spiffe_id == sm.identity.spiffe_id
        assert (await gw.call(bc, "GET", "/api/v1/blocks/1")).status_code == 200
        with pytest.raises(SecurityPolicyViolation) as exc_info:
            await gw.call(bc, "POST", "/api/v1/blocks")
        assert exc_info.value.error_code == "LUCID_ERR_1203"
        assert bc.server.denied == 1 and bc.server.served == 1


async def test_cross_plane_communication_blocked(cert_manager, mesh_auth) -> None:
    """wallet cannot talk to chain, chain cannot talk to ops or wallet."""
    async with services(cert_manager, mesh_auth, "tron-payment", "blockchain-core", "api-gateway") as (tp, bc, gw):
        for src, dst, method in ((tp, bc, "GET"), (bc, gw, "GET"), (bc, tp, "POST"), (tp, gw, "GET")):
            with pytest.raises(SecurityPolicyViolation) as exc_info:
                await src.call(dst, method, "/api/v1/anything")
            assert exc_info.value.error_code == "LUCID_ERR_1203"
        assert bc.server.served == 0 and gw.server.served == 0 and tp.server.served == 0


async def test_unauthorized_tron_access_blocked(cert_manager, mesh_auth) -> None:
    """Only the API gateway reaches the TRON payment service."""
    async with services(cert_manager, mesh_auth, "tron-payment", "api-gateway", "node-management",
                        "admin-interface") as (tp, gw, nm, admin):
        assert (await gw.call(tp, "POST", "/api/v1/payments")).status_code == 200
        for caller in (nm, admin):
            with pytest.raises(SecurityPolicyViolation) as exc_info:
                await caller.call(tp, "POST", "/api/v1/payments")
            assert exc_info.value.error_code == "LUCID_ERR_1203"
        assert tp.server.served == 1 and tp.server.denied == 2


async def test_token_of_another_service_is_refused(cert_manager, mesh_auth) -> None:
    """A node-management workload presenting api-gateway's JWT is caught by the TLS identity check."""
    async with services(cert_manager, mesh_auth, "tron-payment", "node-management") as (tp, nm):
        nm.client.token_source = TokenSource(mesh_auth, "api-gateway", "stolen", "api-gateway", "ops")
        with pytest.raises(SecurityPolicyViolation, match="does not match the TLS peer"):
            await nm.call(tp, "POST", "/api/v1/payments")
        assert tp.server.served == 0


async def test_missing_or_foreign_token_is_refused(cert_manager, mesh_auth) -> None:
    async with services(cert_manager, mesh_auth, "session-management", "api-gateway") as (sm, gw):
        gw.client.token_source = lambda: ""
        with pytest.raises(AuthenticationError) as exc_info:
            await gw.call(sm, "GET", "/x")
        assert exc_info.value.error_code == "LUCID_ERR_1203"
        foreign = ServiceAuthProvider()
        gw.client.token_source = TokenSource(foreign, "api-gateway", "g", "api-gateway", "ops")
        with pytest.raises(AuthenticationError):
            await gw.call(sm, "GET", "/x")
        assert sm.server.served == 0


async def test_client_refuses_an_impostor_server(cert_manager, mesh_auth) -> None:
    """Calling 'tron-payment' but reaching a server with another identity fails before any request."""
    async with services(cert_manager, mesh_auth, "session-management", "api-gateway") as (sm, gw):
        with pytest.raises(MTLSVerificationError):
            await gw.call(("tron-payment", "127.0.0.1", sm.port), "POST", "/api/v1/payments")
        assert sm.server.served == 0


@pytest.mark.parametrize("knows_its_certificate", [True, False])  # False: read from the context
async def test_expired_workload_certificate_is_1204_and_spares_the_destination_breaker(
        cert_manager, mesh_auth, knows_its_certificate: bool) -> None:
    """SPEC: a bad or expired certificate is 1204. Our own expired certificate is our fault: the healthy
    destination's breaker must not count it (it opened after three such calls). Checked before connecting,
    on the file given or the one MTLSManager loaded into the context."""
    async with services(cert_manager, mesh_auth, "session-management") as (sm,):
        from lucid.service_mesh.security.mtls_manager import MTLSManager

        mtls = MTLSManager(cert_manager)
        expired = cert_manager.generate_service_certificate("api-gateway", "old", "api-gateway", "ops",
                                                            validity_days=-1)
        client = MeshClient(mtls.client_context(*expired),
                            TokenSource(mesh_auth, "api-gateway", "old", "api-gateway", "ops"),
                            own_certificate=expired[0] if knows_its_certificate else None)
        for _ in range(5):
            with pytest.raises(MTLSVerificationError) as info:
                await client.call("session-management", "127.0.0.1", sm.port, "GET", "/x")
            assert info.value.error_code == "LUCID_ERR_1204"
        breaker = client.breakers.get("session-management")
        assert breaker.stats()["consecutive_failures"] == 0
        assert breaker.stats()["state"] == "closed"
        await client.aclose()
        assert sm.server.served == 0


async def test_idle_connection_closed_by_server_is_replaced(cert_manager, mesh_auth) -> None:
    async with services(cert_manager, mesh_auth, "session-management", "api-gateway") as (sm, gw):
        sm.server.idle_timeout = 0.2
        assert (await gw.call(sm, "GET", "/one")).status_code == 200
        import asyncio

        await asyncio.sleep(0.5)  # the server drops the idle keep-alive connection
        assert (await gw.call(sm, "GET", "/two")).status_code == 200
        assert gw.client.breakers.get("session-management").stats()["consecutive_failures"] == 0
        assert sm.server.served == 2


async def test_a_handler_answer_that_is_not_json_is_a_500_not_a_cut_connection(cert_manager, mesh_auth) -> None:
    """A handler bug (a Decimal in its answer) must reach the caller as the 1105 envelope; the connection
    stays usable for the next call (a cut connection looked like an unreachable service to the breaker)."""
    from decimal import Decimal

    from lucid.service_mesh.errors import UpstreamCallError
    from lucid.service_mesh.policy.mesh_server import MeshResponse

    async def handler(request):  # type: ignore[no-untyped-def]
        return MeshResponse(200, {"amount": Decimal("1.5")} if request.path == "/bad" else {"ok": True})

    server = MeshService("tron-payment", "tron-payment", "wallet", cert_manager, mesh_auth, handler)
    async with services(cert_manager, mesh_auth, "api-gateway") as (gw,), server:
        with pytest.raises(UpstreamCallError) as caught:  # a 5xx counts against the breaker, as it should
            await gw.call(server, "GET", "/bad")
        assert "500" in caught.value.message
        assert (await gw.call(server, "GET", "/good")).json() == {"ok": True}


async def test_a_trust_only_manager_verifies_peers_and_cannot_mint_identities(cert_manager, mesh_auth,
                                                                              tmp_path) -> None:
    """What a workload of the stack gets: its own certificate and the CA's public half, never the CA key."""
    from lucid.service_mesh.errors import CertificateError

    trust = CertificateManager.trust_only(cert_manager.export_trust(tmp_path / "trust"))
    with pytest.raises(CertificateError):
        trust.generate_service_certificate("api-gateway", "forged", "api-gateway", "ops")
    cert, key = cert_manager.generate_service_certificate("tron-payment", "tp-1", "tron-payment", "wallet")
    assert trust.verify_chain(trust.load_certificate(cert)).spiffe_id.endswith("/wallet/tron-payment/tron-payment")
    server = MeshService("tron-payment", "tron-payment", "wallet", trust, mesh_auth, certificate=(cert, key))
    gw_cert, gw_key = cert_manager.generate_service_certificate("api-gateway", "gw-1", "api-gateway", "ops")
    gw = MeshService("api-gateway", "api-gateway", "ops", trust, mesh_auth, certificate=(gw_cert, gw_key))
    async with server, gw:
        assert (await gw.call(server, "POST", "/payments")).status_code == 200
    other = CertificateManager(str(tmp_path / "o" / "ca.crt"), str(tmp_path / "o" / "ca.key"), str(tmp_path / "o"))
    foreign_cert, _ = other.generate_service_certificate("api-gateway", "gw-2", "api-gateway", "ops")
    with pytest.raises(MTLSVerificationError):
        trust.verify_chain(trust.load_certificate(foreign_cert))
