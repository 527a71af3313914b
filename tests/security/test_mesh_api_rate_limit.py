"""Rate limits of the discovery HTTP API: per service identity, and per client address for failed
authentications (a token never verified is refused unverified once an address has spent its failures).
Real app on the embedded registry; 429s carry the SPEC envelope (LUCID_ERR_4291) and Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from backends.kv import open_kv
from lucid.service_mesh.api import MeshRateLimits, create_app
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.errors import InvalidServiceConfigError
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider

LIST = "/service-discovery/services"


@pytest.fixture
async def make_api() -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    issuer = ServiceAuthProvider()
    kv = open_kv("memory://rate-limit-test")
    await kv.connect()
    discovery = AsyncServiceDiscoveryClient(kv, prefix="/rl")
    await discovery.start()
    verifier = ServiceAuthProvider.verifier_from_jwks(issuer.jwks())
    clients: list[httpx.AsyncClient] = []

    def make(limits: MeshRateLimits, address: str = "10.0.0.1") -> httpx.AsyncClient:
        app = create_app(AsyncServiceRegistry(kv, prefix="/rl"), discovery, verifier, limits)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                                   base_url="http://mesh")
        client.issuer = issuer  # type: ignore[attr-defined]
        client.app = app  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.aclose()
    await discovery.close()
    await kv.close()


def bearer(issuer: ServiceAuthProvider, name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {issuer.generate_service_token(name, f'{name}-1', name, 'ops')}"}


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    err = response.json()["error"]
    assert err["code"] == "LUCID_ERR_4291" and err["request_id"] and err["details"]["retry_after"] >= 1
    assert int(response.headers["retry-after"]) == err["details"]["retry_after"]


async def test_each_service_has_its_own_budget(make_api) -> None:  # type: ignore[no-untyped-def]
    client = make_api(MeshRateLimits(per_service=5))
    gateway, admin = bearer(client.issuer, "api-gateway"), bearer(client.issuer, "admin-interface")
    for _ in range(5):
        assert (await client.get(LIST, headers=gateway)).status_code == 200
    assert_429(await client.get(LIST, headers=gateway))
    assert_429(await client.post(LIST, headers=gateway, json={}))  # every endpoint counts, before validation
    assert (await client.get(LIST, headers=admin)).status_code == 200  # another identity is untouched


async def test_failed_authentications_are_limited_per_address(make_api) -> None:  # type: ignore[no-untyped-def]
    limits = MeshRateLimits(auth_failures_per_ip=3)
    client = make_api(limits, address="10.0.0.7")
    known = bearer(client.issuer, "api-gateway")
    assert (await client.get(LIST, headers=known)).status_code == 200  # verified once: now cached
    for bad in ({"authorization": "Bearer not.a.token"}, {}, {"authorization": "Basic x"}):
        assert (await client.get(LIST, headers=bad)).status_code == 401
    assert_429(await client.get(LIST, headers={"authorization": "Bearer another.bad.token"}))
    # a token never verified is refused without being verified, even a good one...
    assert_429(await client.get(LIST, headers=bearer(client.issuer, "session-management")))
    # ...but a token verified before keeps working, and another address is untouched
    assert (await client.get(LIST, headers=known)).status_code == 200
    elsewhere = httpx.AsyncClient(transport=httpx.ASGITransport(app=client.app, client=("10.0.0.8", 40000)),
                                  base_url="http://mesh")
    async with elsewhere:
        assert (await elsewhere.get(LIST, headers=bearer(client.issuer, "session-management"))).status_code == 200


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_are_validated(bad: object) -> None:
    with pytest.raises(InvalidServiceConfigError):
        MeshRateLimits(per_service=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidServiceConfigError):
        MeshRateLimits(auth_failures_per_ip=bad)  # type: ignore[arg-type]
