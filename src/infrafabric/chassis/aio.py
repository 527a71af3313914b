"""``AsyncChassis``: IF.chassis for coroutines, the twin of ``IFChassis`` (as httpx's ``AsyncClient`` is of
``Client``): one sandbox under both, the same method names, and nothing that can take a while runs on the
event loop: compiling a module (tens of milliseconds for a real one) and closing the worker pool run on a
worker thread. Tasks already run on the chassis' own threads (``execute_task`` is a coroutine on both).
"""

from __future__ import annotations

import asyncio
from typing import Any

from backends.twin import AsyncTwin

from .chassis import IFChassis, TaskOutcome
from .contracts import ServiceContract
from .credentials import ScopedCredentials
from .slo import PerformanceSummary

__all__ = ["AsyncChassis"]


class AsyncChassis(AsyncTwin[IFChassis]):
    def __init__(self, **options: Any) -> None:
        self.sync = IFChassis(**options)

    async def load_swarm(self, swarm_id: str, wasm_module: bytes, contract: ServiceContract | None = None) -> None:
        """Compile (on a worker thread) and bind the module to the swarm's contract."""
        await asyncio.to_thread(self.sync.load_swarm, swarm_id, wasm_module, contract)

    async def unload_swarm(self, swarm_id: str) -> None:
        self.sync.unload_swarm(swarm_id)

    def check_rate_limit(self, swarm_id: str) -> None:
        """Take a slot now or raise RateLimitExceeded (never waits)."""
        self.sync.check_rate_limit(swarm_id)

    async def execute_task(self, swarm_id: str, task: dict[str, Any],
                           credentials: ScopedCredentials | None = None) -> dict[str, Any]:
        return (await self.execute_task_detailed(swarm_id, task, credentials)).result

    async def execute_task_detailed(self, swarm_id: str, task: dict[str, Any],
                                    credentials: ScopedCredentials | None = None) -> TaskOutcome:
        if isinstance(swarm_id, str) and swarm_id not in self.sync.swarm_runtimes:
            # a swarm never loaded runs the default guest: compile it off the loop the first time
            await asyncio.to_thread(self.sync.ensure_loaded, swarm_id)
        return await self.sync.execute_task_detailed(swarm_id, task, credentials)

    def get_performance(self, swarm_id: str) -> PerformanceSummary:
        return self.sync.get_performance(swarm_id)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncChassis":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
