"""Discovery over the registry: list with filters, resolve with versions and load balancing.

With ``cache=True`` (the default) a background task keeps a watch-fed copy of the registry; resolves read
it without a round trip and keep answering from it while the store is unreachable (partition), marked
stale. Without the cache every call reads the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from backends.errors import BackendError
from backends.kv import Get, KeyValueStore

from lucid.service_mesh.discovery.cache import ServiceCache
from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX, RegistryKeys
from lucid.service_mesh.discovery.load_balancer import STRATEGIES, LoadBalancer
from lucid.service_mesh.discovery.model import CHECK_STATUSES, Instance
from lucid.service_mesh.errors import InvalidServiceConfigError, ServiceDiscoveryError, ServiceNotFoundError

log = logging.getLogger(__name__)

# API filter names (healthy/degraded/unhealthy) and Consul check names (passing/warning/critical) both work.
_STATUS_ALIASES = {"healthy": "passing", "degraded": "warning", "unhealthy": "critical"}


def _check_filter(status: str | None) -> str | None:
    if status in (None, "any", "all"):
        return None
    status = _STATUS_ALIASES.get(status, status)  # type: ignore[arg-type]
    if status not in CHECK_STATUSES:
        raise InvalidServiceConfigError(f"status filter must be one of {CHECK_STATUSES} or healthy/degraded/unhealthy")
    return status


class AsyncServiceDiscoveryClient:
    """Find service instances (asyncio)."""

    def __init__(
        self,
        kv: KeyValueStore,
        *,
        prefix: str = DEFAULT_PREFIX,
        cache: bool = True,
        balancer: LoadBalancer | None = None,
        resync_backoff: float = 0.2,
        liveness_interval: float = 1.0,
    ) -> None:
        self.kv = kv
        self.keys = RegistryKeys(prefix)
        self.use_cache = cache
        self.cache = ServiceCache(self.keys)
        self.balancer = balancer or LoadBalancer()
        self.resync_backoff = resync_backoff
        self.liveness_interval = liveness_interval
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()
        self._watch_alive = False

    # ------------------------------------------------------------------ cache maintenance
    async def start(self, timeout: float = 10.0) -> None:
        """Start the watch task and wait for the first snapshot."""
        if not self.use_cache or self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._follow(), name="mesh-discovery-watch")
        self._probe = loop.create_task(self._liveness(), name="mesh-discovery-liveness")
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except asyncio.TimeoutError as exc:
            raise ServiceDiscoveryError("registry unreachable: no snapshot within timeout") from exc

    async def close(self, timeout: float = 2.0) -> None:
        """Stop the watch and the probe. Bounded: a gRPC watch stream driven from a second event loop
        in the same process has been seen not to finish its cancellation; we do not wait for it forever."""
        tasks = [t for t in (self._probe, self._task) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                log.warning("discovery close: %d task(s) did not stop within %.1fs", len(pending), timeout)
        self._task = self._probe = None

    async def __aenter__(self) -> "AsyncServiceDiscoveryClient":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _snapshot(self) -> tuple[int, list]:
        result = await self.kv.txn([], [Get(self.keys.prefix, prefix=True)])
        return result.revision, list(result.results[0] or [])  # type: ignore[arg-type]

    async def _follow(self) -> None:
        """Snapshot, then apply watch events; on any break keep the cache (stale) and resync."""
        while True:
            try:
                revision, kvs = await self._snapshot()
                self.cache.load(revision, kvs)
                self._synced.set()
                async with self.kv.watch(self.keys.prefix, prefix=True, start_revision=revision + 1) as events:
                    self._watch_alive = True
                    async for event in events:
                        self.cache.apply(event)
                self._watch_alive = False  # the watch ended without an error: resubscribe
            except asyncio.CancelledError:
                self._watch_alive = False
                raise
            except Exception as exc:  # backend down/partitioned: serve from cache, retry
                self._watch_alive = False
                if not self.cache.stale:
                    log.warning("registry watch broken, serving from cache: %r", exc)
                self.cache.stale = True
                await asyncio.sleep(self.resync_backoff)

    async def _liveness(self) -> None:
        """A silent watch cannot tell a quiet registry from a frozen or cut-off store: ping it, and mark the
        cache stale while the store does not answer (answers keep coming from the cache meanwhile)."""
        while True:
            await asyncio.sleep(self.liveness_interval)
            try:
                await asyncio.wait_for(self.kv.status(), self.liveness_interval * 2)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self.cache.stale:
                    log.warning("registry store not answering; serving discovery from cache")
                self.cache.stale = True
                continue
            if self.cache.stale and self._watch_alive:
                self.cache.stale = False

    # ------------------------------------------------------------------ reads
    async def _instances(self, name: str | None = None) -> list[Instance]:
        if self.use_cache:
            if self._task is None:
                await self.start()
            return list(self.cache.instances(name)) if name else self.cache.all()
        try:
            _, kvs = await self._snapshot()
        except BackendError as exc:
            raise ServiceDiscoveryError(f"registry unreachable: {exc.message}") from exc
        scratch = ServiceCache(self.keys)
        scratch.load(0, kvs)
        return list(scratch.instances(name)) if name else scratch.all()

    def _filter(self, instances: list[Instance], cluster: str | None, plane: str | None, status: str | None):
        check = _check_filter(status)
        return [
            i
            for i in instances
            if (cluster is None or i.reg.cluster == cluster)
            and (plane is None or i.reg.plane == plane)
            and (check is None or i.check_status == check)
        ]

    async def discover_services(
        self, cluster: str | None = None, plane: str | None = None, status: str | None = "passing"
    ) -> list[dict[str, Any]]:
        """Every instance matching the filters (default: passing only), as discovery dicts."""
        found = self._filter(await self._instances(), cluster, plane, status)
        return [i.to_discovery_dict() for i in sorted(found, key=lambda i: (i.reg.service_name, i.reg.service_id))]

    def _choose(self, name: str, instances: list[Instance] | tuple[Instance, ...], version: str | None,
                load_balance: str) -> Instance:
        if load_balance not in STRATEGIES:
            raise InvalidServiceConfigError(f"load_balance must be one of {STRATEGIES}")
        healthy = [i for i in instances if i.check_status == "passing" and (version is None or i.reg.version == version)]
        if not healthy:
            what = f"{name} (version {version})" if version else name
            raise ServiceNotFoundError(f"no healthy instance of {what}")
        return self.balancer.pick(name, healthy, load_balance, key=lambda i: i.reg.service_id)

    async def resolve_service(
        self, service_name: str, version: str | None = None, load_balance: str = "round-robin"
    ) -> dict[str, Any]:
        """One healthy instance of ``service_name`` (optionally of ``version``); 1002 when none."""
        return self._choose(service_name, await self._instances(service_name), version, load_balance).to_resolve_dict()

    def resolve_cached(
        self, service_name: str, version: str | None = None, load_balance: str = "round-robin"
    ) -> dict[str, Any]:
        """Resolve from the local cache only (no await, callable from any thread)."""
        if not self.cache.synced:
            raise ServiceDiscoveryError("discovery cache not synchronised yet")
        return self._choose(service_name, self.cache.instances(service_name), version, load_balance).to_resolve_dict()

    @contextlib.asynccontextmanager
    async def connection(self, service_name: str, version: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Resolve by least connections and count the connection while the block runs."""
        endpoint = await self.resolve_service(service_name, version, "least-connections")
        self.balancer.acquire(endpoint["serviceId"])
        try:
            yield endpoint
        finally:
            self.balancer.release(endpoint["serviceId"])

    async def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
        """Poll the cache until ``predicate(self)`` is true (tests and start-up ordering)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if loop.time() > deadline:
                raise ServiceDiscoveryError("condition not reached within timeout")
            await asyncio.sleep(interval)
