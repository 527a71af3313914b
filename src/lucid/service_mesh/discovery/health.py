"""Health reporting: a TTL heartbeat run by the service itself, and active HTTP checks run by a checker.

HTTP results map as in Consul: 2xx passing, 429 warning, anything else (or no answer) critical.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from backends.periodic import Periodic
from lucid.service_mesh.discovery.model import Registration
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from lucid.service_mesh.errors import LucidMeshError, ServiceNotFoundError

log = logging.getLogger(__name__)


class TTLHeartbeat:
    """Reports ``status_fn()`` (default: passing) every ``interval`` seconds while the service lives."""

    def __init__(self, registry: AsyncServiceRegistry, service_id: str, interval: float,
                 status_fn: Callable[[], tuple[str, str]] | None = None) -> None:
        self.registry = registry
        self.service_id = service_id
        self.interval = interval
        self.status_fn = status_fn or (lambda: ("passing", "heartbeat"))
        self.lost = False
        self._loop = Periodic(self.beat, lambda: self.interval, name=f"heartbeat-{service_id}", first_delay=0,
                              logger=log)

    def start(self) -> "TTLHeartbeat":
        self._loop.start()
        return self

    async def beat(self) -> object:
        """One heartbeat; ends the loop when the registration is gone (the owner must register again)."""
        status, output = self.status_fn()
        try:
            await self.registry.update_health_status(self.service_id, status, output)
        except ServiceNotFoundError:
            self.lost = True
            log.warning("heartbeat: %s no longer registered", self.service_id)
            return Periodic.DONE
        return None

    async def stop(self) -> None:
        await self._loop.stop()


def classify_http(status_code: int) -> str:
    if 200 <= status_code < 300:
        return "passing"
    if status_code == 429:
        return "warning"
    return "critical"


class HTTPHealthChecker:
    """Probes ``http(s)://host:port<health_check_path>`` of every registration at its own interval."""

    def __init__(self, registry: AsyncServiceRegistry, *, client: httpx.AsyncClient | None = None,
                 scheme: str = "http", tick: float = 0.1) -> None:
        self.registry = registry
        self.scheme = scheme
        self.tick = tick
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._next_due: dict[str, float] = {}
        self._loop = Periodic(self.run_due, lambda: self.tick, name="mesh-http-checker", first_delay=0, logger=log)
        self.checks_run = 0

    async def check_once(self, reg: Registration) -> tuple[str, str]:
        """Probe one registration and record the result; returns (status, output)."""
        url = f"{self.scheme}://{reg.host}:{reg.port}{reg.health_check_path}"
        try:
            response = await self._client.get(url, timeout=reg.health_check_timeout)
            status, output = classify_http(response.status_code), f"HTTP GET {url}: {response.status_code}"
        except httpx.HTTPError as exc:
            status, output = "critical", f"HTTP GET {url}: {type(exc).__name__}"
        self.checks_run += 1
        try:
            await self.registry.update_health_status(reg.service_id, status, output, source="http")
        except ServiceNotFoundError:
            self._next_due.pop(reg.service_id, None)
        return status, output

    async def run_due(self) -> int:
        """Check every registration whose interval has elapsed; returns how many were checked."""
        now = time.monotonic()
        regs = [r for r in await self.registry.list_registrations() if r.health_check_path]
        due = [r for r in regs if self._next_due.get(r.service_id, 0.0) <= now]
        for r in due:
            self._next_due[r.service_id] = now + r.health_check_interval
        await asyncio.gather(*(self.check_once(r) for r in due))
        return len(due)

    def start(self) -> "HTTPHealthChecker":
        self._loop.start()
        return self

    async def stop(self) -> None:
        await self._loop.stop()
        if self._owns_client:
            await self._client.aclose()


class SelfRegistration:
    """A service's own entry in discovery: registered at start with a TTL check, kept passing by a
    heartbeat, removed at a clean stop (a crash leaves by TTL). What a plain-HTTP service (the node API)
    uses to be found the way the mesh workloads are."""

    def __init__(self, kv_url: str, service_name: str, cluster: str, plane: str, host: str, port: int, *,
                 protocol: str = "http", ttl: float = 5.0) -> None:
        self.kv_url, self.service_name, self.cluster, self.plane = kv_url, service_name, cluster, plane
        self.host, self.port, self.protocol, self.ttl = host, port, protocol, ttl
        self.service_id: str | None = None
        self._kv: Any = None
        self._registry: AsyncServiceRegistry | None = None
        self._beat: TTLHeartbeat | None = None

    async def start(self) -> "SelfRegistration":
        from backends.kv import open_kv

        self._kv = open_kv(self.kv_url)
        await self._kv.connect()
        self._registry = AsyncServiceRegistry(self._kv)
        self.service_id = await self._registry.register_service(
            self.service_name, self.cluster, self.plane, self.host, self.port, "1.0.0", None, ttl=self.ttl,
            deregister_critical_after=2 * self.ttl, protocol=self.protocol)
        self._beat = TTLHeartbeat(self._registry, self.service_id, interval=max(self.ttl / 4, 0.1)).start()
        return self

    async def stop(self) -> None:
        if self._beat is not None:
            await self._beat.stop()
        if self._registry is not None and self.service_id is not None:
            try:
                await self._registry.deregister_service(self.service_id)
            except LucidMeshError:
                pass  # already gone (expired): nothing to remove
        if self._kv is not None:
            await self._kv.close()
