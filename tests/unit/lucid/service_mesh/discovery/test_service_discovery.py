"""Discovery (seed API + async core): filters, resolve, versions, load balancing, watch-fed cache."""

from __future__ import annotations

import collections
import socket
from collections.abc import AsyncIterator

import pytest

from backends.kv import open_kv
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry, ServiceDiscoveryClient
from lucid.service_mesh.errors import InvalidServiceConfigError, ServiceDiscoveryError, ServiceNotFoundError


@pytest.fixture
async def mesh(mesh_kv_url: str, mesh_prefix: str) -> AsyncIterator[tuple[AsyncServiceRegistry, AsyncServiceDiscoveryClient]]:
    kv = open_kv(mesh_kv_url)
    await kv.connect()
    registry = AsyncServiceRegistry(kv, prefix=mesh_prefix)
    discovery = AsyncServiceDiscoveryClient(kv.reopen(), prefix=mesh_prefix)
    await discovery.start()
    yield registry, discovery
    await discovery.close()
    await discovery.kv.close()
    await kv.close()


async def _register(registry: AsyncServiceRegistry, name: str, cluster: str, plane: str, host: str,
                    version: str = "1.0.0", **kw) -> str:
    return await registry.register_service(name, cluster, plane, host, 8080, version, **kw)


async def _seen(discovery: AsyncServiceDiscoveryClient, name: str, count: int) -> None:
    await discovery.wait_for(lambda d: len(d.cache.instances(name)) == count, timeout=10)


async def test_discover_services_all_and_filtered(mesh) -> None:
    registry, discovery = mesh
    await _register(registry, "api-gateway", "api-gateway", "ops", "gw.lucid.internal")
    await _register(registry, "blockchain-core", "blockchain-core", "chain", "bc.lucid.internal")
    await _seen(discovery, "blockchain-core", 1)
    services = await discovery.discover_services()
    assert [s["serviceName"] for s in services] == ["api-gateway", "blockchain-core"]
    assert services[0]["status"] == "healthy" and services[0]["cluster"] == "api-gateway"
    only_gw = await discovery.discover_services(cluster="api-gateway")
    assert len(only_gw) == 1 and all(s["cluster"] == "api-gateway" for s in only_gw)
    chain = await discovery.discover_services(plane="chain")
    assert [s["serviceName"] for s in chain] == ["blockchain-core"]
    with pytest.raises(InvalidServiceConfigError):
        await discovery.discover_services(status="sleepy")


async def test_resolve_service_success_and_not_found(mesh) -> None:
    registry, discovery = mesh
    sid = await _register(registry, "api-gateway", "api-gateway", "ops", "api-gateway.lucid.internal")
    await _seen(discovery, "api-gateway", 1)
    endpoint = await discovery.resolve_service("api-gateway")
    assert endpoint["serviceId"] == sid and endpoint["serviceName"] == "api-gateway"
    assert endpoint["endpoint"] == {"host": "api-gateway.lucid.internal", "port": 8080, "protocol": "https"}
    assert endpoint["status"] == "healthy"
    with pytest.raises(ServiceNotFoundError) as exc_info:
        await discovery.resolve_service("non-existent-service")
    assert exc_info.value.error_code == "LUCID_ERR_1002"


async def test_resolve_service_with_version(mesh) -> None:
    registry, discovery = mesh
    await _register(registry, "api-gateway", "api-gateway", "ops", "api-gateway.lucid.internal", "1.0.0")
    await _register(registry, "api-gateway", "api-gateway", "ops", "api-gateway-v2.lucid.internal", "2.0.0")
    await _seen(discovery, "api-gateway", 2)
    for _ in range(4):
        endpoint = await discovery.resolve_service("api-gateway", version="2.0.0")
        assert endpoint["version"] == "2.0.0"
        assert endpoint["endpoint"]["host"] == "api-gateway-v2.lucid.internal"
    with pytest.raises(ServiceNotFoundError):
        await discovery.resolve_service("api-gateway", version="3.0.0")


async def test_unhealthy_instances_are_never_resolved(mesh) -> None:
    registry, discovery = mesh
    good = await _register(registry, "session-management", "session-management", "ops", "a")
    bad = await _register(registry, "session-management", "session-management", "ops", "b")
    await registry.update_health_status(bad, "critical", "down")
    await discovery.wait_for(lambda d: any(i.check_status == "critical" for i in d.cache.instances("session-management")))
    picks = {(await discovery.resolve_service("session-management"))["serviceId"] for _ in range(10)}
    assert picks == {good}
    await registry.update_health_status(good, "warning", "slow")
    await discovery.wait_for(lambda d: all(i.check_status != "passing" for i in d.cache.instances("session-management")))
    with pytest.raises(ServiceNotFoundError):
        await discovery.resolve_service("session-management")


async def test_load_balancing_strategies(mesh) -> None:
    registry, discovery = mesh
    ids = [await _register(registry, "rdp-services", "rdp-services", "ops", f"h{i}") for i in range(3)]
    await _seen(discovery, "rdp-services", 3)
    rr = [(await discovery.resolve_service("rdp-services"))["serviceId"] for _ in range(9)]
    assert collections.Counter(rr) == {i: 3 for i in ids}
    assert rr[:3] == rr[3:6] == rr[6:9]
    rnd = {(await discovery.resolve_service("rdp-services", load_balance="random"))["serviceId"] for _ in range(60)}
    assert rnd == set(ids)
    async with discovery.connection("rdp-services") as first, discovery.connection("rdp-services") as second:
        third = await discovery.resolve_service("rdp-services", load_balance="least-connections")
        assert len({first["serviceId"], second["serviceId"], third["serviceId"]}) == 3
    with pytest.raises(InvalidServiceConfigError):
        await discovery.resolve_service("rdp-services", load_balance="fastest")


async def test_cache_follows_the_watch_without_round_trips(mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, discovery = mesh
    sid = await _register(registry, "admin-interface", "admin-interface", "ops", "a")
    await _seen(discovery, "admin-interface", 1)

    async def no_round_trip(*a, **k):
        raise AssertionError("resolve went to the store")

    for name in ("get", "get_prefix", "txn"):
        monkeypatch.setattr(discovery.kv, name, no_round_trip)
    assert (await discovery.resolve_service("admin-interface"))["serviceId"] == sid
    assert discovery.resolve_cached("admin-interface")["serviceId"] == sid
    await registry.deregister_service(sid)  # arrives through the watch only
    await _seen(discovery, "admin-interface", 0)
    with pytest.raises(ServiceNotFoundError):
        await discovery.resolve_service("admin-interface")


async def test_sync_facade_resolves_from_cache(mesh_kv_url: str, mesh_prefix: str) -> None:
    kv = open_kv(mesh_kv_url)
    registry = AsyncServiceRegistry(kv, prefix=mesh_prefix)
    sid = await _register(registry, "node-management", "node-management", "ops", "nm")
    client = ServiceDiscoveryClient(mesh_kv_url, prefix=mesh_prefix)
    try:
        assert client.resolve_service("node-management")["serviceId"] == sid
        assert client.discover_services(plane="ops")[0]["serviceId"] == sid
    finally:
        client.close()
        await kv.close()


def test_uncached_discovery_on_dead_backend_is_1005() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ServiceDiscoveryClient(f"etcd://127.0.0.1:{port}?timeout=0.3", cache=False, call_timeout=5)
    try:
        with pytest.raises(ServiceDiscoveryError) as exc_info:
            client.resolve_service("api-gateway")
        assert exc_info.value.error_code == "LUCID_ERR_1005"
        assert not isinstance(exc_info.value, ServiceNotFoundError)
    finally:
        client.close()
