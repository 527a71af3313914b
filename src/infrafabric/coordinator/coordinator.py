"""IF.coordinator: real-time registration, push, atomic claims and blocker escalation (seed 002's API).

Backends are chosen by URL (embedded by default; etcd and NATS for a distributed deployment). Pushes are
request/reply on the bus, so a push returns only once the swarm's inbox holds the task: nothing is
silently dropped, and a push to a swarm nobody serves fails at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from backends.jsonsafe import loads_bounded
from backends.bus import Message, MessageBus, Subscription, open_bus
from backends.errors import NoResponders, RemoteError
from backends.kv import Compare, Delete, KeyValueStore, SyncKV, open_kv
from backends.seed_urls import etcd_url
from infrafabric import seed_wiring
from infrafabric.capability import Capability
from infrafabric.coordinator import keys
from infrafabric.coordinator.core import AuditFn, Claim, CoordinationCore, encode
from infrafabric.errors import SwarmQueueFullError, UnknownSwarmError
from infrafabric.ids import validate_swarm_id, validate_task_id, validate_task_ids

DEFAULT_QUEUE_SIZE = 100_000
BLOCKER_MAX_AGE = 3600.0  # seconds a blocker stays pending at most (resolved, or its reporter gone, before)


def check_task(task: object) -> None:
    if not isinstance(task, dict):
        raise TypeError("task must be a dict")
    validate_task_id(task.get("id"))


def deliver_to_inbox(queue: "asyncio.Queue[dict[str, Any]]", swarm_id: str, payload: Any) -> None:
    """Queue one task or a batch; a batch that does not fit is refused whole (nothing half-delivered)."""
    items = payload if isinstance(payload, list) else [payload]
    if not items or not all(type(item) is dict for item in items):  # validated before anything is queued
        raise TypeError(f"a delivery to {swarm_id} must be a task object or a non-empty list of them")
    if queue.maxsize and queue.qsize() + len(items) > queue.maxsize:
        raise SwarmQueueFullError(f"inbox of {swarm_id} is full ({queue.maxsize})")
    for item in items:
        queue.put_nowait(item)


class IFCoordinator:
    """The coordinator. `IFCoordinator()` runs embedded; pass etcd_host (or kv_url/bus_url) to distribute."""

    def __init__(
        self,
        etcd_host: str | None = None,
        etcd_port: int = 2379,
        etcd_username: str | None = None,
        etcd_password: str | None = None,
        *,
        etcd_ca_cert: str | None = None,
        etcd_client_cert: str | None = None,
        etcd_client_key: str | None = None,
        kv_url: str | None = None,
        bus_url: str | None = None,
        kv: KeyValueStore | None = None,
        bus: MessageBus | None = None,
        claim_ttl: int = 10,
        queue_maxsize: int = DEFAULT_QUEUE_SIZE,
        audit: AuditFn | None = seed_wiring.DEFAULT,
        blocker_max_age: float = BLOCKER_MAX_AGE,
    ) -> None:
        self.blocker_max_age = blocker_max_age
        if kv is None:
            if kv_url is None and etcd_host is not None:
                kv_url = etcd_url(
                    etcd_host, etcd_port, etcd_username, etcd_password, etcd_ca_cert, etcd_client_cert, etcd_client_key
                )
            kv = open_kv(kv_url or os.environ.get("INFRAFABRIC_KV_URL", "memory://"))
        if bus is None:
            bus = open_bus(bus_url or os.environ.get("INFRAFABRIC_BUS_URL", "memory://"))
        self.kv = kv
        self.bus = bus
        self.core = CoordinationCore(kv, bus, claim_ttl=claim_ttl, audit=seed_wiring.audit_sink(audit))
        self.queue_maxsize = queue_maxsize
        self.swarm_connections: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._etcd: SyncKV | None = None

    # -- the seed's sync view of the store ---------------------------------------------------------

    @property
    def etcd(self) -> SyncKV:
        """Sync put/get/replace/delete_prefix/status on the coordination store (whatever engine)."""
        if self._etcd is None:
            self._etcd = SyncKV(self.kv)
        return self._etcd

    # -- swarms -----------------------------------------------------------------------------------

    async def register_swarm(self, swarm_id: str, capabilities: list[str]) -> asyncio.Queue[dict[str, Any]]:
        """Record the swarm's capabilities and open its inbox; returns the queue its tasks arrive on."""
        validate_swarm_id(swarm_id)
        caps = [Capability(c) for c in capabilities]  # malformed capability: ValueError, nothing written
        existing = self.swarm_connections.get(swarm_id)
        if existing is not None:
            await self.core.write_registration(swarm_id, caps)
            return existing
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.queue_maxsize)

        def deliver(msg: Message) -> bytes:
            if self.swarm_connections.get(swarm_id) is not queue:  # deregistered, its subscription not yet gone
                raise UnknownSwarmError(f"swarm {swarm_id!r} is not connected here")  # (the pusher hears it)
            deliver_to_inbox(queue, swarm_id, loads_bounded(msg.data))  # another process's bytes: bounded depth
            return b"ok"

        # Subscribe before announcing the swarm, so whoever sees the registration can push at once.
        subs = [await self.bus.subscribe(keys.inbox_subject(swarm_id), deliver)]
        if swarm_id == keys.ORCHESTRATOR:
            subs.append(await self.bus.subscribe(keys.BLOCKER_EVENTS, deliver))
        self.swarm_connections[swarm_id] = queue
        self._subscriptions[swarm_id] = subs
        try:
            await self.core.write_registration(swarm_id, caps)
        except BaseException:
            await self._drop_local(swarm_id)
            raise
        self.core.audit("swarm_registered", {"swarm_id": swarm_id, "capabilities": [str(c) for c in caps]})
        return queue

    async def _drop_local(self, swarm_id: str) -> None:
        """Close the inbox and every subscription of it; the first unsubscribe error is raised after all
        were tried (the inbox is closed either way: its handler refuses what still arrives)."""
        self.swarm_connections.pop(swarm_id, None)
        failure: BaseException | None = None
        for sub in self._subscriptions.pop(swarm_id, []):
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - reported below, once the others are closed too
                failure = failure or exc
        if failure is not None:
            raise failure

    async def deregister_swarm(self, swarm_id: str, *, release_claims: bool = True) -> None:
        """Close the swarm's inbox and session; with release_claims its claimed tasks free up at once.

        The session ends even when closing the inbox fails (a bus error must not keep the swarm's lease, and
        so its claims, alive for ever); the registration goes before the lease, so a session another replica
        opens once the lease is gone cannot lose its own registration to this call."""
        validate_swarm_id(swarm_id)
        try:
            await self._drop_local(swarm_id)
        finally:
            try:
                await self.kv.delete(keys.capabilities_key(swarm_id))
            finally:
                await self.core.end_session(swarm_id, release=release_claims)
        self.core.audit("swarm_deregistered", {"swarm_id": swarm_id})

    async def abandon_swarm(self, swarm_id: str) -> None:
        """Stop heartbeating for a swarm without releasing anything: what a crash looks like (also when
        closing its inbox fails)."""
        try:
            await self._drop_local(swarm_id)
        finally:
            await self.core.end_session(swarm_id, release=False)

    # -- push -------------------------------------------------------------------------------------

    async def push_task_to_swarm(self, swarm_id: str, task: dict[str, Any]) -> None:
        """Deliver a task into the swarm's inbox now (no polling); raises if it cannot be delivered."""
        validate_swarm_id(swarm_id)
        check_task(task)
        await self._deliver(swarm_id, encode(task))
        self.core.audit("task_pushed", {"swarm_id": swarm_id, "task_id": task["id"]})

    async def push_tasks_to_swarm(self, swarm_id: str, tasks: list[dict[str, Any]]) -> int:
        """Deliver several tasks in one message: all of them are queued, or none (inbox too full)."""
        validate_swarm_id(swarm_id)
        if not isinstance(tasks, list) or not tasks or not all(type(t) is dict for t in tasks):
            raise TypeError("tasks must be a non-empty list of dicts")
        validate_task_ids([t.get("id") for t in tasks])  # type: ignore[misc]
        await self._deliver(swarm_id, encode(tasks))
        self.core.audit("tasks_pushed", {"swarm_id": swarm_id, "task_ids": [t["id"] for t in tasks]})
        return len(tasks)

    async def _deliver(self, swarm_id: str, data: bytes) -> None:
        try:
            await self.bus.request(keys.inbox_subject(swarm_id), data)
        except NoResponders as exc:
            raise UnknownSwarmError(f"no connected swarm {swarm_id!r}") from exc
        except RemoteError as exc:
            if exc.remote_code == SwarmQueueFullError.error_code:
                raise SwarmQueueFullError(exc.message) from exc
            raise

    # -- claims -----------------------------------------------------------------------------------

    async def claim_task(self, swarm_id: str, task_id: str) -> bool:
        """Atomic claim: True for exactly one claimant of an unclaimed task."""
        return await self.core.claim(swarm_id, task_id) is not None

    async def claim(self, swarm_id: str, task_id: str) -> Claim | None:
        """Like claim_task, returning the fencing token of a won claim."""
        return await self.core.claim(swarm_id, task_id)

    async def claim_tasks(self, swarm_id: str, task_ids: list[str]) -> list[bool]:
        """Claim several tasks at once (each its own atomic CAS); True where this swarm won."""
        return [c is not None for c in await self.core.claim_many(swarm_id, task_ids)]

    async def complete_task(self, swarm_id: str, task_id: str, result: Any = None, claim: Claim | None = None) -> int:
        """Record the result, fenced by the claim: refused (StaleClaimError) if the claim was lost."""
        return await self.core.complete(swarm_id, task_id, result, claim)

    async def update_task_progress(self, swarm_id: str, task_id: str, progress: Any, claim: Claim | None = None) -> int:
        return await self.core.update_progress(swarm_id, task_id, progress, claim)

    async def announce_task(self, task_id: str) -> None:
        """Mark a task claimable (owner 'unclaimed'); an existing owner is left alone."""
        from backends.kv import Compare, Put

        validate_task_id(task_id)
        await self.kv.txn([Compare.missing(keys.owner_key(task_id))], [Put(keys.owner_key(task_id), keys.UNCLAIMED)])

    async def task_owner(self, task_id: str) -> str | None:
        kv = await self.kv.get(keys.owner_key(validate_task_id(task_id)))
        return kv.value.decode() if kv else None

    # -- blockers ---------------------------------------------------------------------------------

    async def detect_blocker(self, swarm_id: str, blocker_info: dict[str, Any]) -> dict[str, Any]:
        """Escalate at once: the orchestrator's queue and every governor get a `blocker_detected` event."""
        return await self.core.report_blocker(swarm_id, blocker_info)

    async def pending_blockers(self) -> list[dict[str, Any]]:
        """Blockers not yet resolved. One older than ``blocker_max_age`` is expired here (deleted if still
        the same record, and audited): a blocker is bounded in time even while its reporter lives."""
        pending: list[dict[str, Any]] = []
        now = time.time()
        for kv in await self.kv.get_prefix(keys.BLOCKERS):
            try:
                blocker = loads_bounded(kv.value)
                age = now - float(blocker["timestamp"])
            except (ValueError, KeyError, TypeError):
                blocker, age = None, float("inf")  # a damaged record is not a pending blocker
            if age <= self.blocker_max_age and isinstance(blocker, dict):
                pending.append(blocker)
                continue
            res = await self.kv.txn([Compare.mod_revision(kv.key, kv.mod_revision)], [Delete(kv.key)])
            if res.succeeded:
                self.core.audit("blocker_expired", {"key": kv.key, "age_seconds": round(min(age, 1e12), 3)}, "WARN")
        return pending

    async def resolve_blocker(self, swarm_id: str, blocker_id: str) -> bool:
        validate_swarm_id(swarm_id)
        validate_task_id(blocker_id)
        resolved = await self.kv.delete(keys.blocker_key(swarm_id, blocker_id))
        if resolved:
            self.core.audit("blocker_resolved", {"swarm_id": swarm_id, "blocker_id": blocker_id})
        return resolved

    # -- lifecycle --------------------------------------------------------------------------------

    async def close(self) -> None:
        for swarm_id in list(self.swarm_connections):
            await self._drop_local(swarm_id)
        await self.core.close()
        if self._etcd is not None:
            self._etcd.close()
            self._etcd = None
        await self.bus.close()
        await self.kv.close()

    async def __aenter__(self) -> "IFCoordinator":
        await self.kv.connect()
        await self.bus.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
