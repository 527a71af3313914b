"""Active HTTP health checks and the TTL heartbeat, against a real HTTP endpoint on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from backends.kv import open_kv
from backends.periodic import Periodic
from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.discovery.health import HTTPHealthChecker, TTLHeartbeat, classify_http


class HealthEndpoint:
    """A tiny HTTP/1.0 server whose /health status code the test switches."""

    def __init__(self) -> None:
        self.status = 200
        self.hits = 0
        self.server: asyncio.base_events.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.hits += 1
        writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def mesh(mesh_kv_url: str, mesh_prefix: str) -> AsyncIterator[tuple[AsyncServiceRegistry, AsyncServiceDiscoveryClient]]:
    kv = open_kv(mesh_kv_url)
    await kv.connect()
    discovery = AsyncServiceDiscoveryClient(kv, prefix=mesh_prefix)
    await discovery.start()
    yield AsyncServiceRegistry(kv, prefix=mesh_prefix), discovery
    await discovery.close()
    await kv.close()


def test_http_status_mapping() -> None:
    assert [classify_http(c) for c in (200, 204, 429, 500, 404, 301)] == [
        "passing", "passing", "warning", "critical", "critical", "critical"]


async def test_http_checks_follow_the_endpoint(mesh) -> None:
    registry, discovery = mesh
    endpoint = HealthEndpoint()
    port = await endpoint.start()
    sid = await registry.register_service("session-management", "session-management", "ops", "127.0.0.1", port,
                                          "1.0.0", "/health", 0.1, 1, protocol="http")
    checker = HTTPHealthChecker(registry, tick=0.05).start()

    async def status_is(check: str) -> None:
        await discovery.wait_for(
            lambda d: [i.check_status for i in d.cache.instances("session-management")] == [check], timeout=10)

    try:
        await status_is("passing")
        endpoint.status = 429
        await status_is("warning")
        endpoint.status = 503
        await status_is("critical")
        assert (await discovery.discover_services(status=None))[0]["status"] == "unhealthy"
        endpoint.status = 200
        await status_is("passing")
        await endpoint.stop()  # nothing listens any more: connection refused is critical
        await status_is("critical")
        assert endpoint.hits >= 3 and checker.checks_run >= 4
        record = discovery.cache.instances("session-management")[0].health
        assert record is not None and record.source == "http" and "ConnectError" in record.output
    finally:
        await checker.stop()
    await registry.deregister_service(sid)


async def test_heartbeat_keeps_an_instance_passing_and_its_absence_does_not(mesh) -> None:
    registry, discovery = mesh
    sid = await registry.register_service("rdp-services", "rdp-services", "ops", "h", 1, "1.0.0", None,
                                          ttl=1, deregister_critical_after=1)
    beat = TTLHeartbeat(registry, sid, interval=0.3).start()
    try:
        for _ in range(8):  # 2.4 s, more than twice the TTL
            await asyncio.sleep(0.3)
            assert discovery.resolve_cached("rdp-services")["serviceId"] == sid
    finally:
        await beat.stop()
    await discovery.wait_for(lambda d: not d.cache.instances("rdp-services"), timeout=10)
    beat2 = TTLHeartbeat(registry, sid, interval=0.3)
    assert await beat2.beat() is Periodic.DONE  # the registration expired: the owner must register again
    assert beat2.lost
