"""The discovery HTTP API (/service-discovery/services): JWT on every endpoint, ownership, envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from backends.kv import open_kv
from lucid.service_mesh.api import create_app
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider

BODY = {"serviceName": "api-gateway", "cluster": "api-gateway", "plane": "ops", "host": "gw.lucid.internal",
        "port": 8080, "version": "1.0.0", "metadata": {"tags": ["public"]}}


@pytest.fixture
async def api(mesh_kv_url: str, mesh_prefix: str) -> AsyncIterator[tuple[httpx.AsyncClient, ServiceAuthProvider]]:
    issuer = ServiceAuthProvider()
    kv = open_kv(mesh_kv_url)
    await kv.connect()
    discovery = AsyncServiceDiscoveryClient(kv, prefix=mesh_prefix)
    await discovery.start()
    app = create_app(AsyncServiceRegistry(kv, prefix=mesh_prefix), discovery,
                     ServiceAuthProvider.verifier_from_jwks(issuer.jwks()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mesh") as client:
        client.discovery = discovery  # type: ignore[attr-defined]
        yield client, issuer
    await discovery.close()
    await kv.close()


def bearer(issuer: ServiceAuthProvider, name: str = "api-gateway", cluster: str | None = None,
           plane: str = "ops", permissions: list[str] | None = None) -> dict[str, str]:
    token = issuer.generate_service_token(name, f"{name}-1", cluster or name, plane, permissions=permissions)
    return {"authorization": f"Bearer {token}"}


def assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["code"] == code and err["message"] and err["request_id"] and err["timestamp"]


async def _wait_cache(client, name: str, count: int) -> None:
    await client.discovery.wait_for(lambda d: len(d.cache.instances(name)) == count, timeout=10)


async def test_every_endpoint_requires_a_valid_jwt(api) -> None:
    client, issuer = api
    calls = [
        ("POST", "/service-discovery/services", BODY),
        ("DELETE", "/service-discovery/services/x", None),
        ("PUT", "/service-discovery/services/x/health", {"status": "passing"}),
        ("GET", "/service-discovery/services", None),
        ("GET", "/service-discovery/services/api-gateway/resolve", None),
    ]
    foreign = ServiceAuthProvider()
    for method, url, body in calls:
        assert_envelope(await client.request(method, url, json=body), 401, "LUCID_ERR_1203")
        bad = {"authorization": "Bearer not.a.token"}
        assert_envelope(await client.request(method, url, json=body, headers=bad), 401, "LUCID_ERR_1203")
        assert_envelope(await client.request(method, url, json=body, headers=bearer(foreign)), 401, "LUCID_ERR_1203")


async def test_register_list_resolve_health_deregister(api) -> None:
    client, issuer = api
    auth = bearer(issuer)
    created = await client.post("/service-discovery/services", json=BODY, headers=auth)
    assert created.status_code == 201, created.text
    sid = created.json()["serviceId"]
    await _wait_cache(client, "api-gateway", 1)
    listed = (await client.get("/service-discovery/services", params={"plane": "ops"}, headers=auth)).json()
    assert listed["total"] == 1 and listed["services"][0]["serviceId"] == sid
    assert (await client.get("/service-discovery/services", params={"plane": "chain"}, headers=auth)).json()["total"] == 0
    resolved = await client.get("/service-discovery/services/api-gateway/resolve", headers=auth)
    assert resolved.status_code == 200 and resolved.json()["endpoint"]["host"] == "gw.lucid.internal"
    health = await client.put(f"/service-discovery/services/{sid}/health", json={"status": "critical", "output": "x"},
                              headers=auth)
    assert health.status_code == 200 and health.json()["status"] == "unhealthy"
    await client.discovery.wait_for(
        lambda d: d.cache.instances("api-gateway")[0].check_status == "critical", timeout=10)
    assert_envelope(await client.get("/service-discovery/services/api-gateway/resolve", headers=auth), 404,
                    "LUCID_ERR_1002")
    unhealthy = await client.get("/service-discovery/services", params={"status": "unhealthy"}, headers=auth)
    assert unhealthy.json()["total"] == 1
    assert (await client.delete(f"/service-discovery/services/{sid}", headers=auth)).status_code == 204
    assert_envelope(await client.delete(f"/service-discovery/services/{sid}", headers=auth), 404, "LUCID_ERR_1002")


async def test_a_service_may_only_act_for_itself(api) -> None:
    client, issuer = api
    intruder = bearer(issuer, "node-management")
    assert_envelope(await client.post("/service-discovery/services", json=BODY, headers=intruder), 403,
                    "LUCID_ERR_1203")
    sid = (await client.post("/service-discovery/services", json=BODY, headers=bearer(issuer))).json()["serviceId"]
    assert_envelope(await client.delete(f"/service-discovery/services/{sid}", headers=intruder), 403, "LUCID_ERR_1203")
    assert_envelope(await client.put(f"/service-discovery/services/{sid}/health", json={"status": "critical"},
                                     headers=intruder), 403, "LUCID_ERR_1203")
    admin = bearer(issuer, "admin-interface", permissions=["mesh:admin"])
    assert (await client.delete(f"/service-discovery/services/{sid}", headers=admin)).status_code == 204


@pytest.mark.parametrize(
    "change",
    [{"serviceName": "Bad Name"}, {"port": 0}, {"plane": "moon"}, {"version": "latest"}, {"unexpected": 1},
     {"ttl": 5}, {"healthCheckInterval": 1000}],
)
async def test_invalid_registration_is_400_with_1004(api, change: dict) -> None:
    client, issuer = api
    response = await client.post("/service-discovery/services", json={**BODY, **change}, headers=bearer(issuer))
    assert_envelope(response, 400, "LUCID_ERR_1004")
    listed = await client.get("/service-discovery/services", headers=bearer(issuer))
    assert listed.json()["total"] == 0


async def test_query_validation_and_pagination(api) -> None:
    client, issuer = api
    auth = bearer(issuer, "rdp-services")
    body = {**BODY, "serviceName": "rdp-services", "cluster": "rdp-services"}
    for i in range(5):
        r = await client.post("/service-discovery/services", json={**body, "host": f"h{i}"}, headers=auth)
        assert r.status_code == 201
    await _wait_cache(client, "rdp-services", 5)
    page = (await client.get("/service-discovery/services", params={"limit": 2, "offset": 4}, headers=auth)).json()
    assert page["total"] == 5 and len(page["services"]) == 1
    for params in ({"limit": 0}, {"limit": 1001}, {"status": "bogus"}, {"cluster": "BAD!"}):
        assert_envelope(await client.get("/service-discovery/services", params=params, headers=auth), 400,
                        "LUCID_ERR_1004")
    assert_envelope(await client.get("/service-discovery/services/rdp-services/resolve",
                                     params={"loadBalance": "fastest"}, headers=auth), 400, "LUCID_ERR_1004")
    assert (await client.get("/service-discovery/services/rdp-services/resolve",
                             params={"loadBalance": "least-connections"}, headers=auth)).status_code == 200
