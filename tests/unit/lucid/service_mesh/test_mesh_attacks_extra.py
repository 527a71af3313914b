"""Extra attacks on the Lucid service mesh: JWT/key binding, certificates, registry ownership, plane
filters, circuit breakers, the inter-service message queue and its outbox (embedded broker, in-process
fakes).

Tests marked ``xfail(strict=True, reason="BUG: ...")`` document behaviour that breaks a promise of
SPEC.md / ARCHITECTURE.md; the others are controls that hold today."""

from __future__ import annotations

import asyncio
import base64
import json
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from backends.mq import QueueMessage
from lucid.service_mesh.api import create_app
from lucid.service_mesh.communication.message_queue import AsyncMessageQueueClient
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.errors import (
    AuthenticationError,
    InvalidServiceConfigError,
    MessageDeliveryError,
    MTLSVerificationError,
    SecurityPolicyViolation,
    ServiceAlreadyRegisteredError,
    UpstreamCallError,
)
from lucid.service_mesh.policy.enforcer import MeshAuthorizer
from lucid.service_mesh.resilience.circuit_breaker import CircuitBreaker
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.identity import ServiceIdentity, identity_from_certificate
from tests.security.test_mesh_auth import _claims

GW = ServiceIdentity("api-gateway", "api-gateway", "ops")
BC = ServiceIdentity("blockchain-core", "blockchain-core", "chain")
TRON = ServiceIdentity("tron-payment", "tron-payment", "wallet")

BODY = {"serviceName": "api-gateway", "cluster": "api-gateway", "plane": "ops", "host": "gw.lucid.internal",
        "port": 8080, "version": "1.0.0"}


def _bearer(provider: ServiceAuthProvider, ident: ServiceIdentity, permissions: list[str] | None = None) -> dict:
    token = provider.generate_service_token(ident.service_name, f"{ident.service_name}-1", ident.cluster,
                                            ident.plane, permissions=permissions)
    return {"authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------------------------- JWT



def _sign(provider: ServiceAuthProvider, claims: dict, **headers) -> str:
    key = provider._keys[provider.active_kid]
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm,
                      headers={"kid": provider.active_kid, **headers})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw_token(header: dict, claims: dict, ed_key) -> str:
    """A JWS built by hand (PyJWT refuses to encode odd headers), signed with an Ed25519 key."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(ed_key.sign(signing_input.encode()))}"


@pytest.mark.parametrize("kid", [None, 0, ["k"], {"k": 1}, "", "../../etc/passwd"])
def test_jwt_kid_tricks_are_1203(kid) -> None:
    """A kid that is not one of the ring's own strings never selects a key."""
    provider = ServiceAuthProvider()
    key = provider._keys[provider.active_kid]
    token = _raw_token({"alg": "EdDSA", "typ": "JWT", "kid": kid}, _claims(), key.private_key)
    with pytest.raises(AuthenticationError) as err:
        provider.verify_service_token(token)
    assert err.value.error_code == "LUCID_ERR_1203"


def test_jwt_exp_boundary_and_nbf_one_second_ahead_are_refused() -> None:
    provider = ServiceAuthProvider()
    now = int(time.time())
    for claims in (_claims(exp=now), _claims(exp=now - 1), _claims(nbf=now + 5)):
        with pytest.raises(AuthenticationError):
            provider.verify_service_token(_sign(provider, claims))


def test_jwt_retired_key_is_refused_even_when_cached() -> None:
    provider = ServiceAuthProvider()
    old = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    provider.verify_service_token(old)  # cached now
    old_kid = provider.active_kid
    provider.rotate_keys()
    provider.retire_key(old_kid)
    with pytest.raises(AuthenticationError):
        provider.verify_service_token(old)


def test_jwt_required_plane_refuses_other_plane_even_from_cache() -> None:
    provider = ServiceAuthProvider()
    token = provider.generate_service_token("blockchain-core", "bc", "blockchain-core", "chain")
    assert provider.verify_service_token(token, required_plane="chain")["plane"] == "chain"
    with pytest.raises(AuthenticationError) as err:
        provider.verify_service_token(token, required_plane="ops")  # second call: served by the cache
    assert err.value.error_code == "LUCID_ERR_1203"


@pytest.mark.parametrize("peer", [BC, TRON, ServiceIdentity("api-gateway", "admin-interface", "ops")])
def test_authorizer_refuses_a_token_of_another_identity_than_the_tls_peer(peer: ServiceIdentity) -> None:
    """The token names api-gateway/ops; a TLS peer of another service, plane or cluster cannot use it."""
    provider = ServiceAuthProvider()
    auth = MeshAuthorizer(GW, provider)
    token = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    with pytest.raises(SecurityPolicyViolation) as err:
        auth.authorize(peer, f"Bearer {token}", "GET")
    assert err.value.error_code == "LUCID_ERR_1203"
    assert auth.authorize(GW, f"Bearer {token}", "GET").identity == GW  # the right peer passes


# --------------------------------------------------------------------------------------------- certificates

def _forge_leaf(cm: CertificateManager, tmp: Path, *, cn: str, ou: str, uris: list[str],
                days: int = 30) -> x509.Certificate:
    """A leaf signed by the mesh's real intermediate (as a buggy or abused issuer would) with chosen fields."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lucid"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou),
                         x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    san = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(f"{cn}.lucid.internal")]
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(cm.intermediate_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(cm.intermediate_cert.public_key()),
                           critical=False)
            .sign(cm._issuer_key, hashes.SHA256()))


@pytest.mark.parametrize("cn, ou, uris", [
    ("api-gateway", "plane-ops", ["spiffe://lucid.onion/wallet/tron-payment/tron-payment"]),  # CN vs SAN
    ("tron-payment", "plane-ops", ["spiffe://lucid.onion/wallet/tron-payment/tron-payment"]),  # OU vs SAN
    ("api-gateway", "plane-ops", ["spiffe://lucid.onion/ops/api-gateway/api-gateway",
                                  "spiffe://lucid.onion/wallet/tron-payment/tron-payment"]),  # two identities
    ("api-gateway", "plane-ops", []),  # no SPIFFE id
    ("api-gateway", "plane-ops", ["spiffe://lucid.onion/ops/api-gateway/api-gateway/extra"]),
    ("api-gateway", "plane-ops", ["spiffe://evil.onion/ops/api-gateway/api-gateway"]),
    ("API-GATEWAY", "plane-ops", ["spiffe://lucid.onion/ops/api-gateway/API-GATEWAY"]),
])
def test_chain_valid_certificate_with_inconsistent_identity_is_1204(cert_manager: CertificateManager,
                                                                     tmp_path: Path, cn, ou, uris) -> None:
    cert = _forge_leaf(cert_manager, tmp_path, cn=cn, ou=ou, uris=uris)
    with pytest.raises(MTLSVerificationError) as err:
        cert_manager.verify_chain(cert)
    assert err.value.error_code == "LUCID_ERR_1204"


def test_certificate_of_another_service_does_not_verify_as_this_one(cert_manager: CertificateManager) -> None:
    cert, _ = cert_manager.generate_service_certificate("node-management", "nm-1", "node-management", "ops")
    assert cert_manager.verify_certificate(cert, "node-management", "ops")
    assert not cert_manager.verify_certificate(cert, "api-gateway", "ops")
    assert identity_from_certificate(cert_manager.load_certificate(cert)).service_name == "node-management"


@pytest.mark.parametrize("name", ["api/gateway", "api-gateway*", "*", "..", "api.gateway", "a" * 64, "Api"])
def test_certificates_refuse_path_and_wildcard_service_names(cert_manager: CertificateManager, name: str) -> None:
    with pytest.raises(InvalidServiceConfigError):
        cert_manager.generate_service_certificate(name, "x-1", "api-gateway", "ops")
    assert not any(cert_manager.cert_output_dir.parent.rglob("*gateway*.crt"))


# --------------------------------------------------------------------------------------------- registry + API

@pytest.fixture
async def mesh() -> AsyncIterator[tuple[AsyncServiceRegistry, AsyncServiceDiscoveryClient]]:
    kv = open_kv(f"memory://mesh-extra-{uuid.uuid4().hex}")
    await kv.connect()
    registry = AsyncServiceRegistry(kv)
    discovery = AsyncServiceDiscoveryClient(kv)
    await discovery.start()
    yield registry, discovery
    await discovery.close()
    await kv.close()


@pytest.fixture
async def api_two_keys(mesh):
    """The discovery API as the stack deploys it: each mesh member has its own token key and the API
    trusts the JWK set of all of them (``stack/identity.write_jwks``, which records each key's owner)."""
    registry, discovery = mesh
    gateway_key, tron_key = ServiceAuthProvider(owner="api-gateway"), ServiceAuthProvider(owner="tron-payment")
    jwks = {"keys": gateway_key.jwks()["keys"] + tron_key.jwks()["keys"]}
    app = create_app(registry, discovery, ServiceAuthProvider.verifier_from_jwks(jwks))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mesh") as client:
        yield client, gateway_key, tron_key, registry


async def test_api_a_service_key_cannot_sign_for_another_service(api_two_keys) -> None:
    """A key is bound to its owner: tron-payment's key signing api-gateway's claims is refused (1203)."""
    client, gateway_key, tron_key, registry = api_two_keys
    created = await client.post("/service-discovery/services", json=BODY, headers=_bearer(gateway_key, GW))
    assert created.status_code == 201, created.text
    sid = created.json()["serviceId"]
    with pytest.raises(AuthenticationError):  # the honest provider will not even mint it
        _bearer(tron_key, GW)
    # tron-payment's key, api-gateway's claims: signed by hand, as a compromised tron-payment would
    forged = {"authorization": f"Bearer {_sign(tron_key, _claims())}"}
    response = await client.delete(f"/service-discovery/services/{sid}", headers=forged)
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] == "LUCID_ERR_1203"
    assert (await registry.get_registration(sid)).service_name == "api-gateway"


async def test_api_self_granted_admin_permission_is_not_honoured(api_two_keys) -> None:
    client, gateway_key, tron_key, registry = api_two_keys
    sid = (await client.post("/service-discovery/services", json=BODY,
                             headers=_bearer(gateway_key, GW))).json()["serviceId"]
    self_admin = _bearer(tron_key, TRON, permissions=["mesh:admin"])
    response = await client.delete(f"/service-discovery/services/{sid}", headers=self_admin)
    assert response.status_code == 403
    assert (await registry.get_registration(sid)).service_id == sid


async def test_api_admin_permission_is_honoured_from_the_operators_admin_key(mesh) -> None:
    """Control: the operator's key, marked admin in the JWK set, may act for any service, and its owner
    binding still holds (it cannot sign as api-gateway)."""
    registry, discovery = mesh
    gateway_key = ServiceAuthProvider(owner="api-gateway")
    operator_key = ServiceAuthProvider(owner="operator", admin=True)
    jwks = {"keys": gateway_key.jwks()["keys"] + operator_key.jwks()["keys"]}
    assert [k.get("lucid_service") for k in jwks["keys"]] == ["api-gateway", "operator"]
    assert [k.get("lucid_admin", False) for k in jwks["keys"]] == [False, True]
    verifier = ServiceAuthProvider.verifier_from_jwks(jwks)
    app = create_app(registry, discovery, verifier)
    operator = ServiceIdentity("operator", "admin-interface", "ops")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mesh") as client:
        sid = (await client.post("/service-discovery/services", json=BODY,
                                 headers=_bearer(gateway_key, GW))).json()["serviceId"]
        response = await client.delete(f"/service-discovery/services/{sid}",
                                       headers=_bearer(operator_key, operator, permissions=["mesh:admin"]))
        assert response.status_code == 204, response.text
    with pytest.raises(AuthenticationError) as err:
        verifier.verify_service_token(_sign(operator_key, _claims(permissions=["mesh:admin"])))
    assert err.value.error_code == "LUCID_ERR_1203"


@pytest.mark.parametrize("member, value", [("lucid_service", "Api/Gateway"), ("lucid_service", 7),
                                           ("lucid_admin", "yes")])
def test_jwks_owner_and_admin_members_must_be_well_formed(member: str, value) -> None:
    jwk = {**ServiceAuthProvider(owner="api-gateway").jwks()["keys"][0], member: value}
    with pytest.raises(AuthenticationError):
        ServiceAuthProvider.verifier_from_jwks({"keys": [jwk]})


def test_stack_jwks_binds_every_member_key_to_its_owner(tmp_path: Path) -> None:
    """The stack's JWK set (what the discovery API and workloads trust) names each key's owner, and only
    the operator's key is an admin key."""
    from stack.identity import MESH_SERVICES, write_jwks
    from stack.state import StackState

    state = StackState(tmp_path / "stack")
    (state.root / "pki" / "jwt").mkdir(mode=0o700)
    keys = json.loads(write_jwks(state).read_text())["keys"]
    assert sorted(k["lucid_service"] for k in keys) == sorted(s for s, _, _ in MESH_SERVICES)
    assert [k["lucid_service"] for k in keys if k.get("lucid_admin")] == ["operator"]


async def test_api_own_key_and_own_identity_cannot_touch_another_service(api_two_keys) -> None:
    client, gateway_key, tron_key, registry = api_two_keys
    sid = (await client.post("/service-discovery/services", json=BODY,
                             headers=_bearer(gateway_key, GW))).json()["serviceId"]
    honest_tron = _bearer(tron_key, TRON)
    for method, url, body in (("DELETE", f"/service-discovery/services/{sid}", None),
                              ("PUT", f"/service-discovery/services/{sid}/health", {"status": "critical"}),
                              ("POST", "/service-discovery/services", BODY)):
        response = await client.request(method, url, json=body, headers=honest_tron)
        assert response.status_code == 403 and response.json()["error"]["code"] == "LUCID_ERR_1203"
    assert (await registry.get_registration(sid)).host == "gw.lucid.internal"


@pytest.mark.parametrize("sid", ["../ids/x", "a/b", "*", "%2e%2e", ".hidden"])
async def test_registry_refuses_path_or_wildcard_service_ids(mesh, sid: str) -> None:
    registry, _ = mesh
    with pytest.raises(InvalidServiceConfigError):
        await registry.register_service("api-gateway", "api-gateway", "ops", "h", 1, "1.0.0", service_id=sid)
    assert await registry.list_registrations() == []


async def test_concurrent_registration_of_one_id_by_two_owners_has_one_winner(mesh) -> None:
    registry, _ = mesh
    sid = "shared-instance-1"
    results = await asyncio.gather(
        registry.register_service("api-gateway", "api-gateway", "ops", "gw", 1, "1.0.0", service_id=sid),
        registry.register_service("node-management", "node-management", "ops", "nm", 2, "1.0.0", service_id=sid),
        return_exceptions=True)
    assert sum(r == sid for r in results) == 1
    assert sum(isinstance(r, ServiceAlreadyRegisteredError) for r in results) == 1
    regs = await registry.list_registrations()
    assert len(regs) == 1  # the loser left nothing under its own name
    winner = regs[0]
    assert (await registry.get_registration(sid)).service_name == winner.service_name


async def test_discovery_hides_critical_and_foreign_plane_instances_when_asked(mesh) -> None:
    registry, discovery = mesh
    ok = await registry.register_service("api-gateway", "api-gateway", "ops", "a", 1, "1.0.0")
    sick = await registry.register_service("api-gateway", "api-gateway", "ops", "b", 2, "1.0.0")
    await registry.register_service("blockchain-core", "blockchain-core", "chain", "c", 3, "1.0.0")
    await registry.update_health_status(sick, "critical", "down")
    await discovery.wait_for(lambda d: len(d.cache.all()) == 3 and any(
        i.check_status == "critical" for i in d.cache.all()), timeout=10)
    ops = await discovery.discover_services(plane="ops", status="passing")
    assert [s["serviceId"] for s in ops] == [ok]
    for _ in range(6):
        assert (await discovery.resolve_service("api-gateway"))["serviceId"] == ok


async def test_registry_refuses_a_cluster_declared_in_a_foreign_plane(mesh) -> None:
    """A Lucid cluster registers only in its own plane (1203, as every plane violation); a cluster outside
    the plane map may declare any plane."""
    registry, discovery = mesh
    with pytest.raises(InvalidServiceConfigError) as err:
        await registry.register_service("tron-payment", "tron-payment", "ops", "evil", 1, "1.0.0")
    assert err.value.error_code == "LUCID_ERR_1203" and err.value.http_status == 403
    sid = await registry.register_service("api-gateway", "api-gateway", "ops", "gw", 2, "1.0.0")
    with pytest.raises(InvalidServiceConfigError):  # nor can an update move it to another plane
        await registry.update_registration(sid, plane="chain")
    await registry.register_service("my-app", "my-app", "chain", "app", 3, "1.0.0")
    await discovery.wait_for(lambda d: len(d.cache.all()) == 2, timeout=10)
    assert [s["serviceId"] for s in await discovery.discover_services(plane="ops")] == [sid]
    assert sorted(r.service_name for r in await registry.list_registrations()) == ["api-gateway", "my-app"]


async def test_api_registering_a_cluster_in_a_foreign_plane_is_403(api_two_keys) -> None:
    client, _, tron_key, registry = api_two_keys
    body = {**BODY, "serviceName": "tron-payment", "cluster": "tron-payment", "plane": "ops"}
    response = await client.post("/service-discovery/services", json=body,
                                 headers=_bearer(tron_key, ServiceIdentity("tron-payment", "tron-payment", "ops")))
    assert response.status_code == 403 and response.json()["error"]["code"] == "LUCID_ERR_1203"
    assert await registry.list_registrations() == []


# --------------------------------------------------------------------------------------------- circuit breakers

class _Boom(Exception):
    pass


def _fail() -> None:
    raise _Boom()


async def _cancelled_call(breaker: CircuitBreaker) -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.acall(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_breaker_cancelled_trial_call_does_not_close_half_open() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=1, half_open_max_calls=1, success_threshold=1,
                             failure_exceptions=(_Boom,), clock=lambda: clock[0])
    with pytest.raises(_Boom):
        breaker.call(_fail)
    clock[0] = 5.0
    assert breaker.state == "half-open"
    await _cancelled_call(breaker)
    assert breaker.state == "half-open"
    assert breaker.call(lambda: "probe") == "probe"  # the slot came back: a real probe closes it
    assert breaker.state == "closed"


async def test_breaker_cancelled_call_does_not_reset_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=2, recovery_timeout=30, failure_exceptions=(_Boom,))
    with pytest.raises(_Boom):
        breaker.call(_fail)
    await _cancelled_call(breaker)
    with pytest.raises(_Boom):
        breaker.call(_fail)
    assert breaker.state == "open"


# --------------------------------------------------------------------------------------------- message queue

@pytest.fixture
async def mq() -> AsyncIterator[tuple[str, AsyncMessageQueueClient]]:
    url = f"memory://mq-extra-{uuid.uuid4().hex}"
    client = AsyncMessageQueueClient(url)
    await client.connect()
    yield url, client
    await client.close()


async def test_mq_ack_after_the_consumer_connection_died_is_1301_and_redelivered(mq) -> None:
    url, sender = mq
    await sender.send_message("api-gateway", "blockchain-core", {"n": 1})
    consumer = AsyncMessageQueueClient(url)
    await consumer.connect()
    got = await consumer.receive("blockchain-core", timeout=1)
    assert got is not None and not got.redelivered
    await consumer.close()  # the consumer's connection goes away unsettled
    with pytest.raises(MessageDeliveryError) as err:
        await got.ack()
    assert err.value.error_code == "LUCID_ERR_1301"
    again = await sender.receive("blockchain-core", timeout=1)
    assert again is not None and again.message_id == got.message_id and again.redelivered
    await again.ack()
    assert await sender.receive("blockchain-core", timeout=0) is None


async def test_mq_double_ack_and_ack_after_reject_are_1301(mq) -> None:
    _, client = mq
    await client.send_message("api-gateway", "node-management", {"n": 1})
    await client.send_message("api-gateway", "node-management", {"n": 2})
    first = await client.receive("node-management", timeout=1)
    await first.ack()
    with pytest.raises(MessageDeliveryError):
        await first.ack()
    with pytest.raises(MessageDeliveryError):
        await first.reject(requeue=True)  # a settled message cannot be put back (no duplicate)
    second = await client.receive("node-management", timeout=1)
    assert second.payload == {"n": 2}
    await second.reject(requeue=False)
    with pytest.raises(MessageDeliveryError):
        await second.ack()
    assert await client.receive("node-management", timeout=0) is None
    assert await client.depth("node-management") == 0


async def test_mq_requeue_keeps_place_and_races_to_exactly_one_consumer(mq) -> None:
    url, client = mq
    for n in range(3):
        await client.send_message("api-gateway", "blockchain-core", {"n": n})
    head = await client.receive("blockchain-core", timeout=1)
    assert head.payload == {"n": 0}
    a, b = AsyncMessageQueueClient(url), AsyncMessageQueueClient(url)
    await a.connect()
    await b.connect()
    try:
        await head.reject(requeue=True)
        got = await asyncio.gather(a.receive("blockchain-core", timeout=1), b.receive("blockchain-core", timeout=1))
        payloads = sorted(m.payload["n"] for m in got)
        assert payloads == [0, 1]  # the requeued one kept its place at the head; nobody got it twice
        assert [m.redelivered for m in got if m.payload["n"] == 0] == [True]
        for m in got:
            await m.ack()
        rest = await client.receive("blockchain-core", timeout=1)
        assert rest.payload == {"n": 2}
        await rest.ack()
    finally:
        await a.close()
        await b.close()


async def test_mq_priority_then_fifo_survives_requeue(mq) -> None:
    _, client = mq
    await client.send_message("api-gateway", "blockchain-core", {"n": "low"}, priority="low")
    await client.send_message("api-gateway", "blockchain-core", {"n": "crit1"}, priority="critical")
    await client.send_message("api-gateway", "blockchain-core", {"n": "crit2"}, priority="critical")
    c1 = await client.receive("blockchain-core", timeout=1)
    assert c1.payload == {"n": "crit1"}
    await client.send_message("api-gateway", "blockchain-core", {"n": "high"}, priority="high")
    await c1.reject(requeue=True)
    order = []
    while (m := await client.receive("blockchain-core", timeout=0)) is not None:
        order.append(m.payload["n"])
        await m.ack()
    assert order == ["crit1", "crit2", "high", "low"]


async def test_mq_oversized_payload_is_1004_and_nothing_is_queued(mq) -> None:
    _, client = mq
    big = {"blob": "x" * (1 << 20)}
    with pytest.raises(InvalidServiceConfigError) as err:
        await client.send_message("api-gateway", "blockchain-core", big)
    assert err.value.error_code == "LUCID_ERR_1004"
    with pytest.raises(InvalidServiceConfigError):
        await client.send_messages("api-gateway", "blockchain-core", [{"ok": 1}, big])
    assert await client.depth("blockchain-core") == 0


@pytest.mark.parametrize("dest", ["blockchain-core.*", "#", "*", "blockchain-core.api-gateway", "../x", "Core", ""])
async def test_mq_wildcard_or_routing_key_destinations_are_refused(mq, dest: str) -> None:
    _, client = mq
    with pytest.raises(InvalidServiceConfigError):
        await client.send_message("api-gateway", dest, {"a": 1})
    with pytest.raises(InvalidServiceConfigError):
        await client.receive(dest, timeout=0)


@pytest.mark.parametrize("src, dst", [("blockchain-core", "api-gateway"), ("tron-payment", "blockchain-core"),
                                      ("node-management", "tron-payment"), ("blockchain-core", "tron-payment"),
                                      ("tron-payment", "my-app"), ("my-app", "storage-database")])
async def test_mq_plane_rules_refuse_forbidden_messages_before_they_leave(mq, src: str, dst: str) -> None:
    _, client = mq
    with pytest.raises(SecurityPolicyViolation) as err:
        await client.send_message(src, dst, {"a": 1})
    assert err.value.error_code == "LUCID_ERR_1203"
    with pytest.raises(SecurityPolicyViolation):  # the same pair is refused again (refusals are not cached)
        await client.send_messages(src, dst, [{"a": 1}])
    assert await client.depth(dst) == 0


async def test_mq_publish_to_a_queue_nobody_consumes_yet_is_kept(mq) -> None:
    url, client = mq
    await client.send_message("api-gateway", "session-management", {"early": True})
    late = AsyncMessageQueueClient(url)
    await late.connect()
    try:
        got = await late.receive("session-management", timeout=1)
        assert got is not None and got.payload == {"early": True}
        await got.ack()
    finally:
        await late.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["ack", "requeue", "drop", "crash"]), min_size=1, max_size=12))
def test_mq_nothing_is_lost_or_duplicated_under_random_settlement(actions: list[str]) -> None:
    """Every message is acked exactly once unless explicitly dropped; crashes and requeues lose nothing."""

    async def run() -> None:
        url = f"memory://mq-prop-{uuid.uuid4().hex}"
        sender = AsyncMessageQueueClient(url)
        await sender.connect()
        ids = [await sender.send_message("api-gateway", "blockchain-core", {"i": i}) for i in range(len(actions))]
        acked: list[str] = []
        dropped: list[str] = []
        pending = list(actions)
        consumer = AsyncMessageQueueClient(url)
        await consumer.connect()
        while pending:
            m = await consumer.receive("blockchain-core", timeout=0)
            assert m is not None
            act = pending.pop(0)
            if act == "ack":
                await m.ack()
                acked.append(m.message_id)
            elif act == "requeue":
                await m.reject(requeue=True)
                pending.append("ack")
            elif act == "drop":
                await m.reject(requeue=False)
                dropped.append(m.message_id)
            else:  # the consumer dies holding it
                await consumer.close()
                consumer = AsyncMessageQueueClient(url)
                await consumer.connect()
                pending.append("ack")
        assert await consumer.receive("blockchain-core", timeout=0) is None
        assert sorted(acked + dropped) == sorted(ids) and len(set(acked)) == len(acked)
        await consumer.close()
        await sender.close()

    asyncio.run(run())


@pytest.mark.parametrize("body", [b"[1,2,3]", b'"text"', b"42", b"null", b"true"])
async def test_mq_a_non_object_body_is_not_handed_out(mq, body: bytes) -> None:
    """A body that is JSON but not an object goes to the dead end with 1301; the next message still comes."""
    url, client = mq
    raw = AsyncMessageQueueClient(url)
    await raw.connect()
    try:  # a publisher that does not use this client's codec
        await raw._broker.publish(QueueMessage("m-odd", "api-gateway", "blockchain-core", body, 5, 60,
                                               time.time()))
    finally:
        await raw.close()
    await client.send_message("api-gateway", "blockchain-core", {"ok": True})
    with pytest.raises(MessageDeliveryError) as err:
        await client.receive("blockchain-core", timeout=1)
    assert err.value.error_code == "LUCID_ERR_1301"
    got = await client.receive("blockchain-core", timeout=1)
    assert got is not None and got.payload == {"ok": True}
    await got.ack()
    assert await client.depth("blockchain-core") == 0  # the odd one is gone (dead end), not requeued


# RabbitMQ receiver with in-process fakes (no broker): what a hostile publisher's headers do to a consumer.

class _FakeIncoming:
    def __init__(self, message_id: str, headers: dict) -> None:
        self.message_id, self.headers = message_id, headers
        self.timestamp, self.body, self.priority = None, b"{}", 5
        self.correlation_id, self.user_id, self.redelivered = None, "api-gateway", False
        self.processed = False
        self.delivery_tag = 1
        self.settled: list[str] = []

    async def reject(self, requeue: bool = True) -> None:
        self.processed = True
        self.settled.append("requeue" if requeue else "dead")


class _FakeQueue:
    async def consume(self, callback, no_ack: bool = False) -> str:
        return "ctag"

    async def cancel(self, tag: str) -> None:
        return None


class _FakeChannel:
    is_closed = False


@pytest.mark.parametrize("headers", [{"ttl": "soon"}, {"ttl": "60"}, {"ttl": -5}, {"ttl": 1.5}, {"ttl": [1]},
                                     {"ttl": 60, "sent_at_us": 10 ** 400}])
async def test_rabbit_receiver_survives_a_hostile_ttl_header(headers: dict) -> None:
    """A header this client did not write sends the message to the dead end; the good one behind it comes."""
    from backends.mq.rabbitmq import _Receiver

    receiver = _Receiver(_FakeQueue(), _FakeChannel(), linger=3600)
    await receiver._subscribe()
    hostile = _FakeIncoming("bad", {"source": "api-gateway", "destination": "blockchain-core", **headers})
    good = _FakeIncoming("good", {"source": "api-gateway", "destination": "blockchain-core", "ttl": 60,
                                  "sent_at_us": int(time.time() * 1_000_000)})
    await receiver._on_message(hostile)
    await receiver._on_message(good)
    try:
        delivery = await receiver.get(0)
        assert delivery is not None and delivery.message.message_id == "good"
        assert hostile.settled == ["dead"]  # settled to the dead end, not stuck unacknowledged
    finally:
        receiver.forget()


# --------------------------------------------------------------------------------------------- live mesh call

async def test_mesh_client_does_not_replay_a_post_the_server_already_processed(cert_manager: CertificateManager) -> None:
    from lucid.service_mesh.policy.mesh_server import MeshResponse
    from lucid.service_mesh.policy.service import MeshService

    seen: list[str] = []

    async def handler(request):  # type: ignore[no-untyped-def]
        seen.append(request.method)
        if len(seen) == 2:  # processed, then the server goes away before it answers (a crash)
            raise asyncio.CancelledError()
        return MeshResponse(200, {"n": len(seen)})

    auth = ServiceAuthProvider()
    async with MeshService("tron-payment", "tron-payment", "wallet", cert_manager, auth, handler) as tron, \
            MeshService("api-gateway", "api-gateway", "ops", cert_manager, auth) as gateway:
        assert (await gateway.call(tron, "POST", "/pay", json={"amount": 1})).status_code == 200
        with pytest.raises(UpstreamCallError) as err:  # the second goes out on the kept-alive connection
            await gateway.call(tron, "POST", "/pay", json={"amount": 2})
        assert err.value.error_code == "LUCID_ERR_1301" and "outcome unknown" in err.value.message
        assert seen == ["POST", "POST"]  # the payment handler ran once per call, not a third time


async def test_mesh_client_resends_an_idempotent_call_and_a_post_on_a_connection_closed_while_idle(
        cert_manager: CertificateManager) -> None:
    """Controls: a GET whose kept-alive connection died unanswered is sent again (running it twice is
    harmless); a POST on a connection the server closed while idle goes out on a fresh one (nothing sent)."""
    from lucid.service_mesh.policy.mesh_server import MeshResponse
    from lucid.service_mesh.policy.service import MeshService

    seen: list[str] = []

    async def handler(request):  # type: ignore[no-untyped-def]
        seen.append(request.method)
        if len(seen) == 2:
            raise asyncio.CancelledError()
        return MeshResponse(200, {"n": len(seen)})

    auth = ServiceAuthProvider()
    async with MeshService("tron-payment", "tron-payment", "wallet", cert_manager, auth, handler) as tron, \
            MeshService("api-gateway", "api-gateway", "ops", cert_manager, auth) as gateway:
        assert (await gateway.call(tron, "GET", "/balance")).status_code == 200
        assert (await gateway.call(tron, "GET", "/balance")).status_code == 200  # second try, fresh connection
        assert seen == ["GET", "GET", "GET"]
        tron.server.idle_timeout = 0.2
        assert (await gateway.call(tron, "POST", "/pay", json={"amount": 1})).status_code == 200
        await asyncio.sleep(0.6)  # the server drops the idle keep-alive connection
        assert (await gateway.call(tron, "POST", "/pay", json={"amount": 2})).status_code == 200
        assert seen == ["GET", "GET", "GET", "POST", "POST"]


# --------------------------------------------------------------------------------------------- outbox

async def test_outbox_refuses_a_different_message_under_a_waiting_message_id(tmp_path: Path) -> None:
    """A caller-chosen id reused for another message while the first waits is refused, not dropped in
    silence; the identical message again (a resend, with a later timestamp) adds nothing."""
    from lucid.service_mesh.communication.outbox import Outbox

    outbox = Outbox(tmp_path / "o.db")
    await outbox.open()
    try:
        first = QueueMessage("order-7", "api-gateway", "svc-a", b'{"n":1}', 5, 60, time.time())
        assert await outbox.add(first) is True
        assert await outbox.add(first._replace(timestamp=time.time() + 1)) is False
        for other in (first._replace(body=b'{"n":2}'), first._replace(destination="svc-b"),
                      first._replace(priority=10), first._replace(correlation_id="c-1")):
            with pytest.raises(InvalidServiceConfigError) as err:
                await outbox.add(other)
            assert err.value.error_code == "LUCID_ERR_1004" and "order-7" in err.value.message
        [(seq, kept)] = await outbox.pending()
        assert kept.body == b'{"n":1}' and kept.destination == "svc-a"
        await outbox.refuse(seq, "unroutable")
        with pytest.raises(MessageDeliveryError):  # a resend of a refused message is not reported accepted
            await outbox.add(first)
    finally:
        await outbox.close()


async def test_outbox_waiting_counts_a_resent_message_once(tmp_path: Path) -> None:
    from backends.errors import QueueUnavailable

    client = AsyncMessageQueueClient(f"memory://outbox-extra-{uuid.uuid4().hex}", outbox=tmp_path / "o.db")
    await client.connect()
    real_publish = client._broker.publish
    down = [True]

    async def publish(message, *, timeout=5.0):  # type: ignore[no-untyped-def]
        if down[0]:
            raise QueueUnavailable("down on purpose")
        await real_publish(message, timeout=timeout)

    client._broker.publish = publish  # type: ignore[method-assign]
    try:
        for _ in range(2):  # the caller resends after an unknown outcome, with its id
            assert await client.send_message("api-gateway", "svc-a", {"n": 1}, message_id="pay-1") == "pay-1"
        assert client.outbox_waiting == 1
        with pytest.raises(InvalidServiceConfigError):
            await client.send_message("api-gateway", "svc-a", {"n": 2}, message_id="pay-1")
        assert client.outbox_waiting == 1
        down[0] = False
        await client.flush_outbox(10)
        got = await client.receive("svc-a", timeout=1)
        assert got is not None and got.message_id == "pay-1" and got.payload == {"n": 1}
        await got.ack()
        assert await client.receive("svc-a", timeout=0.2) is None
    finally:
        await client.close()
