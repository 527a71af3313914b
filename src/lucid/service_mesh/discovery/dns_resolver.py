"""Seed module ``lucid.service_mesh.discovery.dns_resolver``.

``ServiceDiscoveryClient`` is the seed's synchronous API. It runs an ``AsyncServiceDiscoveryClient`` (and
its watch-fed cache) on a private event loop thread; a resolve served from the cache runs in the
caller's thread with no hop at all.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backends.kv import KeyValueStore, open_kv
from backends.loop_thread import LoopThread
from backends.seed_urls import consul_kv_url

from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX
from lucid.service_mesh.discovery.service_registry import DEFAULT_KV_URL
from lucid.service_mesh.errors import ServiceDiscoveryError, ServiceNotFoundError


class ServiceDiscoveryClient:
    """Synchronous discovery facade (seed API)."""

    def __init__(self, kv_url: str | None = None, *, kv: KeyValueStore | None = None,
                 consul_host: str | None = None, consul_port: int | None = None,
                 prefix: str = DEFAULT_PREFIX, cache: bool = True, call_timeout: float = 10.0) -> None:
        if kv_url is None:
            kv_url = consul_kv_url(consul_host, consul_port) if consul_host else DEFAULT_KV_URL
        template = kv if kv is not None else open_kv(kv_url)
        self.kv_url = template.url
        self._thread = LoopThread("mesh-discovery")
        self._timeout = call_timeout
        self.client = AsyncServiceDiscoveryClient(template.reopen(), prefix=prefix, cache=cache)
        if cache:
            try:
                self._thread.run(self.client.start(timeout=call_timeout), timeout=call_timeout + 1)
            except TimeoutError as exc:
                self._thread.stop()
                raise ServiceDiscoveryError("registry unreachable at start-up") from exc

    def _run(self, coro):
        try:
            return self._thread.run(coro, timeout=self._timeout)
        except TimeoutError as exc:
            raise ServiceDiscoveryError("discovery timed out") from exc

    def discover_services(self, cluster: str | None = None, plane: str | None = None,
                          status: str | None = "passing") -> list[dict[str, Any]]:
        return self._run(self.client.discover_services(cluster, plane, status))

    def resolve_service(self, service_name: str, version: str | None = None,
                        load_balance: str = "round-robin") -> dict[str, Any]:
        if self.client.use_cache and self.client.cache.synced:
            return self.client.resolve_cached(service_name, version, load_balance)
        return self._run(self.client.resolve_service(service_name, version, load_balance))

    @property
    def cache_stale(self) -> bool:
        return self.client.cache.stale

    def close(self) -> None:
        try:
            self._thread.run(self.client.close(), timeout=5)
            self._thread.run(asyncio.wait_for(self.client.kv.close(), 3), timeout=5)
        except (TimeoutError, asyncio.TimeoutError):
            pass  # closing is best effort; the loop thread is stopped below either way
        finally:
            self._thread.stop()

    def __enter__(self) -> "ServiceDiscoveryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["AsyncServiceDiscoveryClient", "ServiceDiscoveryClient", "ServiceDiscoveryError", "ServiceNotFoundError"]
