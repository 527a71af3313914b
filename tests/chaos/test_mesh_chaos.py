"""Seed 000's chaos section, for real: workload processes killed, a dependency failing, etcd partitioned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from backends.kv import open_kv
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.errors import ServiceNotFoundError, ServiceRegistrationError, UpstreamCallError
from lucid.service_mesh.policy.service import MeshService
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry

pytestmark = [pytest.mark.chaos, pytest.mark.etcd, pytest.mark.slow]


@pytest.fixture
async def watcher(etcd_server, mesh_prefix: str) -> AsyncIterator[AsyncServiceDiscoveryClient]:
    kv = open_kv(etcd_server.url)
    disc = AsyncServiceDiscoveryClient(kv, prefix=mesh_prefix)
    await disc.start()
    yield disc
    await disc.close()
    await kv.close()


def passing_ids(d: AsyncServiceDiscoveryClient, name: str) -> set[str]:
    return {i.reg.service_id for i in d.cache.instances(name) if i.check_status == "passing"}


@pytest.fixture
async def caller(mesh_workloads) -> AsyncIterator[MeshService]:
    """The test's own workload identity (admin-interface, ops plane) to call the processes through the mesh."""
    svc = MeshService("admin-interface", "admin-interface", "ops", mesh_workloads.cert_manager, mesh_workloads.issuer,
                      breakers=BreakerRegistry(failure_threshold=5, failure_exceptions=(UpstreamCallError,)),
                      call_timeout=2)
    yield svc
    await svc.close()


async def test_service_recovery_after_crash(etcd_server, mesh_prefix, mesh_workloads, watcher, caller) -> None:
    first = mesh_workloads(etcd_server.url, mesh_prefix, "session-management", "--ttl", "1",
                           "--deregister-after", "2")
    await watcher.wait_for(lambda d: passing_ids(d, "session-management") == {first.service_id})
    killed_at = time.monotonic()
    first.kill()
    await watcher.wait_for(lambda d: not passing_ids(d, "session-management"), timeout=10)
    left_after = time.monotonic() - killed_at
    assert left_after < 1 + 1.5, f"left discovery {left_after:.2f}s after the kill (TTL 1 s)"
    with pytest.raises(ServiceNotFoundError):
        await watcher.resolve_service("session-management")
    await watcher.wait_for(lambda d: not d.cache.instances("session-management"), timeout=10)  # deregistered
    second = mesh_workloads(etcd_server.url, mesh_prefix, "session-management", "--ttl", "1")
    await watcher.wait_for(lambda d: passing_ids(d, "session-management") == {second.service_id})
    ep = await watcher.resolve_service("session-management")
    reply = await caller.call(("session-management", ep["endpoint"]["host"], ep["endpoint"]["port"]), "GET", "/local")
    assert reply.json()["pid"] == second.proc.pid


async def test_partial_service_failure(etcd_server, mesh_prefix, mesh_workloads, watcher, caller) -> None:
    ws = [mesh_workloads(etcd_server.url, mesh_prefix, "rdp-services", "--ttl", "1") for _ in range(3)]
    await watcher.wait_for(lambda d: len(passing_ids(d, "rdp-services")) == 3)
    breaker = caller.client.breakers.get("rdp-services")

    async def one_call() -> int | None:
        ep = await watcher.resolve_service("rdp-services")
        try:
            r = await caller.call(("rdp-services", ep["endpoint"]["host"], ep["endpoint"]["port"]), "GET", "/local")
            return r.json()["pid"]
        except UpstreamCallError:
            return None

    assert {await one_call() for _ in range(9)} == {w.proc.pid for w in ws}
    ws[0].kill()
    failures = 0
    deadline = time.monotonic() + 8
    while ws[0].service_id in passing_ids(watcher, "rdp-services") and time.monotonic() < deadline:
        failures += await one_call() is None
        assert breaker.state == "closed"
        await asyncio.sleep(0.02)
    assert ws[0].service_id not in passing_ids(watcher, "rdp-services")
    pids = [await one_call() for _ in range(20)]
    assert set(pids) == {ws[1].proc.pid, ws[2].proc.pid}
    assert breaker.state == "closed" and breaker.stats()["consecutive_failures"] == 0


async def test_cascading_failure_prevention(etcd_server, mesh_prefix, mesh_workloads, caller) -> None:
    b = mesh_workloads(etcd_server.url, mesh_prefix, "session-management", "--ttl", "30", "--deregister-after", "30")
    a = mesh_workloads(etcd_server.url, mesh_prefix, "api-gateway", "--breaker-threshold", "3",
                       "--recovery-timeout", "60")
    target = ("api-gateway", "127.0.0.1", a.port)
    ok = await caller.call(target, "GET", "/call/session-management")
    assert ok.status_code == 200 and ok.json()["reply"]["pid"] == b.proc.pid
    b.kill()  # B dies but stays registered (long TTL): A's calls to it fail
    codes = []
    for _ in range(3):
        r = await caller.call(target, "GET", "/call/session-management")
        codes.append((r.status_code, r.json()["error"]["code"]))
    assert codes == [(424, "LUCID_ERR_1301")] * 3
    started = time.monotonic()
    fast = await caller.call(target, "GET", "/call/session-management")
    assert fast.status_code == 424 and fast.json()["error"]["code"] == "LUCID_ERR_1104"  # breaker open: fail fast
    assert time.monotonic() - started < 1.0
    assert (await caller.call(target, "GET", "/breakers")).json() == {"session-management": "open"}
    for _ in range(10):  # A keeps serving everything else
        r = await caller.call(target, "GET", "/local")
        assert r.status_code == 200 and r.json()["pid"] == a.proc.pid
    assert caller.client.breakers.get("api-gateway").state == "closed"  # no cascade to A's callers


async def test_service_discovery_during_partition(etcd_cluster, mesh_prefix) -> None:
    leader = etcd_cluster.leader_index()
    isolated = (leader + 1) % 3
    majority = [i for i in range(3) if i != isolated]
    member_url = lambda idxs: "etcd://" + ",".join(etcd_cluster.members[i].endpoint for i in idxs) + "?timeout=1"  # noqa: E731
    major_kv, minor_kv, minor_watch_kv = open_kv(member_url(majority)), open_kv(member_url([isolated])), open_kv(
        member_url([isolated]))
    major = AsyncServiceRegistry(major_kv, prefix=mesh_prefix)
    minor = AsyncServiceRegistry(minor_kv, prefix=mesh_prefix)
    disc = AsyncServiceDiscoveryClient(minor_watch_kv, prefix=mesh_prefix)
    try:
        gw = await major.register_service("api-gateway", "api-gateway", "ops", "gw", 8080, "1.0.0", None)
        await disc.start()
        await disc.wait_for(lambda d: passing_ids(d, "api-gateway") == {gw})
        etcd_cluster.pause(isolated)  # SIGSTOP: the member (and the clients bound to it) are cut off
        try:
            for _ in range(50):  # resolves keep answering from the cache
                assert disc.resolve_cached("api-gateway")["serviceId"] == gw
                assert (await disc.resolve_service("api-gateway"))["serviceId"] == gw
            await disc.wait_for(lambda d: d.cache.stale, timeout=10)  # the client knows it is answering from cache
            assert disc.resolve_cached("api-gateway")["serviceId"] == gw
            with pytest.raises(ServiceRegistrationError):  # a write through the cut-off side does not land
                await minor.register_service("tron-payment", "tron-payment", "wallet", "tp", 8085, "1.0.0", None,
                                             service_id="minority-write")
            sm = await major.register_service("session-management", "session-management", "ops", "sm", 8082,
                                              "1.0.0", None)  # the majority side keeps accepting writes
        finally:
            etcd_cluster.resume(isolated)
        await disc.wait_for(lambda d: passing_ids(d, "session-management") == {sm}, timeout=15)
        await disc.wait_for(lambda d: not d.cache.stale, timeout=15)
        # no split brain: every member agrees, and the minority write never happened
        for idxs in ([0], [1], [2]):
            async with open_kv(member_url(idxs)) as kv:
                keys = [k.key for k in await kv.get_prefix(mesh_prefix)]
                assert not any("minority-write" in k for k in keys)
                assert any(k.endswith(f"/{sm}") for k in keys) and any(k.endswith(f"/{gw}") for k in keys)
        assert {s["serviceName"] for s in await disc.discover_services()} == {"api-gateway", "session-management"}
    finally:
        await disc.close()
        for kv in (major_kv, minor_kv, minor_watch_kv):
            await kv.close()
