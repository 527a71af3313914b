"""SwarmClient: a swarm in another process joins through the shared engines (etcd + NATS).

It speaks the same protocol as IFCoordinator through the same core: it registers its capabilities,
receives pushed tasks on its inbox subject, claims with its own session lease (so if the process dies
its claims expire), completes fenced by its claims, and reports blockers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from backends.jsonsafe import loads_bounded
from backends.bus import Message, MessageBus, Subscription, open_bus
from backends.kv import KeyValueStore, open_kv
from infrafabric import seed_wiring
from infrafabric.coordinator import keys
from infrafabric.coordinator.core import Claim, CoordinationCore
from infrafabric.coordinator.coordinator import deliver_to_inbox
from infrafabric.capability import parse_capabilities
from infrafabric.ids import validate_swarm_id


class SwarmClient:
    def __init__(
        self,
        swarm_id: str,
        capabilities: list[str],
        *,
        kv_url: str | None = None,
        bus_url: str | None = None,
        kv: KeyValueStore | None = None,
        bus: MessageBus | None = None,
        claim_ttl: int = 10,
        queue_maxsize: int = 100_000,
        audit: Any = seed_wiring.DEFAULT,
    ) -> None:
        self.swarm_id = validate_swarm_id(swarm_id)
        self.capabilities = parse_capabilities(capabilities)
        self.kv = kv or open_kv(kv_url or "memory://")
        self.bus = bus or open_bus(bus_url or "memory://")
        self.core = CoordinationCore(self.kv, self.bus, claim_ttl=claim_ttl, audit=seed_wiring.audit_sink(audit))
        self.tasks: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_maxsize)
        self._sub: Subscription | None = None

    async def start(self) -> "SwarmClient":
        """Open the inbox, then announce the swarm (so a push right after registration is delivered)."""
        await self.kv.connect()
        await self.bus.connect()

        def deliver(msg: Message) -> bytes:
            deliver_to_inbox(self.tasks, self.swarm_id, loads_bounded(msg.data))  # another process's bytes: bounded depth
            return b"ok"

        self._sub = await self.bus.subscribe(keys.inbox_subject(self.swarm_id), deliver)
        await self.core.write_registration(self.swarm_id, self.capabilities)
        return self

    async def next_task(self, timeout: float | None = None) -> dict[str, Any]:
        return await asyncio.wait_for(self.tasks.get(), timeout)

    async def claim(self, task_id: str) -> Claim | None:
        return await self.core.claim(self.swarm_id, task_id)

    async def claim_many(self, task_ids: list[str]) -> list[Claim | None]:
        return await self.core.claim_many(self.swarm_id, task_ids)

    async def complete(self, task_id: str, result: Any = None, claim: Claim | None = None) -> int:
        return await self.core.complete(self.swarm_id, task_id, result, claim)

    async def progress(self, task_id: str, progress: Any, claim: Claim | None = None) -> int:
        return await self.core.update_progress(self.swarm_id, task_id, progress, claim)

    async def report_blocker(self, blocker_info: dict[str, Any]) -> dict[str, Any]:
        return await self.core.report_blocker(self.swarm_id, blocker_info)

    async def stop(self, *, release: bool = True) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        await self.core.end_session(self.swarm_id, release=release)
        await self.core.close()
        await self.bus.close()
        await self.kv.close()

    async def __aenter__(self) -> "SwarmClient":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
