"""Each process's circuit breakers, published to the mesh store so an operator sees them from outside.

A breaker lives inside the process that calls through it, so no other process can ask it directly
without a mesh identity. Instead each process keeps one record, ``{prefix}breakers/{service_id}``, on a
lease: rewritten when a state changes, gone with the lease when the process dies. The record is written
by the service's own mesh account and read as untrusted data (``read_breakers`` drops what is malformed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass

from backends.errors import BackendError, LeaseNotFound
from backends.kv import KeyValueStore
from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry, CircuitState

__all__ = ["BreakerPublisher", "PublishedBreakers", "breakers_key", "read_breakers"]

log = logging.getLogger(__name__)
_STATES = {s.value for s in CircuitState}
_MAX_RECORD = 64 * 1024  # a record larger than this is not a breaker table: skipped when read


def breakers_key(service_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}breakers/{service_id}"


@dataclass(frozen=True)
class PublishedBreakers:
    """One process's breakers: destination service -> closed / open / half-open."""

    service_id: str
    service: str
    breakers: dict[str, str]
    updated_at: float


class BreakerPublisher:
    """Writes ``breakers.states()`` when it changes (checked every ``interval`` seconds), on a lease of
    ``ttl`` seconds refreshed while the process lives; a lost lease (store restarted) is granted anew."""

    def __init__(self, kv: KeyValueStore, breakers: BreakerRegistry, *, service: str, service_id: str,
                 prefix: str = DEFAULT_PREFIX, interval: float = 0.5, ttl: int = 10) -> None:
        self.kv = kv
        self.breakers = breakers
        self.service = service
        self.key = breakers_key(service_id, prefix)
        self.service_id = service_id
        self.interval = interval
        self.ttl = ttl
        self._lease: int | None = None
        self._published: dict[str, str] | None = None
        self._refreshed = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> "BreakerPublisher":
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"breakers-{self.service_id}")
        return self

    async def publish(self) -> None:
        """One round: write the states if they changed (or the lease was lost), else keep the lease alive."""
        states = self.breakers.states()
        now = time.monotonic()
        if self._lease is not None and states == self._published:
            if now - self._refreshed >= self.ttl / 3:
                try:
                    await self.kv.refresh_lease(self._lease)
                    self._refreshed = now
                    return
                except LeaseNotFound:
                    self._lease = None
            else:
                return
        if self._lease is None:
            self._lease = await self.kv.grant_lease(self.ttl)
            self._refreshed = now
        record = {"service": self.service, "service_id": self.service_id, "breakers": states, "updated_at": time.time()}
        try:
            await self.kv.put(self.key, json.dumps(record, sort_keys=True), lease=self._lease)
        except LeaseNotFound:
            self._lease = None
            raise
        self._published = states

    async def _run(self) -> None:
        while True:
            try:
                await self.publish()
            except (BackendError, OSError) as exc:  # the store is away: try again next round
                log.debug("could not publish breakers: %s", exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        """Stop publishing and remove the record (a graceful exit leaves at once; a kill leaves by lease)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease is not None:
            with contextlib.suppress(BackendError, OSError):
                await self.kv.revoke_lease(self._lease)
            self._lease = None


async def read_breakers(kv: KeyValueStore, prefix: str = DEFAULT_PREFIX) -> dict[str, PublishedBreakers]:
    """Every live process's breakers by service id; malformed records are skipped, unknown states shown as such."""
    out: dict[str, PublishedBreakers] = {}
    base = f"{prefix}breakers/"
    for row in await kv.get_prefix(base):
        service_id = row.key[len(base):]
        if not service_id or "/" in service_id or len(row.value) > _MAX_RECORD:
            continue
        try:
            record = json.loads(row.value)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("breakers"), dict):
            continue
        states = {str(dest)[:200]: (state if state in _STATES else "unknown")
                  for dest, state in list(record["breakers"].items())[:500]}
        updated = record.get("updated_at")
        out[service_id] = PublishedBreakers(
            service_id, str(record.get("service", ""))[:200], states,
            float(updated) if isinstance(updated, (int, float)) and not isinstance(updated, bool)
            and math.isfinite(updated) else 0.0)
    return out
