"""``AsyncGovernor``: IF.governor for coroutines, the twin of ``IFGovernor`` (as httpx's ``AsyncClient`` is
of ``Client``): one governor under both, the same method names. Readers (budgets, reputation, breakers,
``find_qualified_swarm``) answer from memory on both faces and never wait. Every change is a coroutine
that returns once the change is in the store, so a caller that awaited it knows another replica can see
it; and ``track_cost`` is the shared ledger's charge (``IFGovernor.acharge``: one compare-and-swap, refused
against an open breaker), which is what replicas must use. The seed's sync ``track_cost`` charges this
replica's own copy; on the embedded store both are the same charge.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from backends.twin import AsyncTwin, delegated
from infrafabric.coordinator.credentials import Identity
from infrafabric.governor.governor import IFGovernor
from infrafabric.governor.profile import SwarmProfile

__all__ = ["AsyncGovernor"]


class AsyncGovernor(AsyncTwin[IFGovernor]):
    def __init__(self, *args: Any, **options: Any) -> None:
        self.sync = IFGovernor(*args, **options)

    # ------------------------------------------------------------------ readers (never wait)
    swarm_registry = delegated("swarm_registry")

    def budget_remaining(self, swarm_id: str) -> Decimal:
        return self.sync.budget_remaining(swarm_id)

    def budget_limit(self, swarm_id: str) -> Decimal:
        return self.sync.budget_limit(swarm_id)

    def budget_spent(self, swarm_id: str) -> Decimal:
        return self.sync.budget_spent(swarm_id)

    def reputation(self, swarm_id: str) -> float:
        return self.sync.reputation(swarm_id)

    def circuit_breaker_status(self, swarm_id: str) -> dict[str, Any]:
        return self.sync.circuit_breaker_status(swarm_id)

    def is_available(self, swarm_id: str) -> bool:
        return self.sync.is_available(swarm_id)

    def find_qualified_swarm(self, required_capabilities: Iterable[Any], max_cost: float, *,
                             exclude: Iterable[str] = ()) -> str | None:
        return self.sync.find_qualified_swarm(required_capabilities, max_cost, exclude=exclude)

    # ------------------------------------------------------------------ changes (stored when they return)
    async def register_swarm(self, profile: SwarmProfile) -> None:
        self.sync.register_swarm(profile)
        await self.sync.flush()

    async def deregister_swarm(self, swarm_id: str) -> None:
        self.sync.deregister_swarm(swarm_id)
        await self.sync.flush()

    async def track_cost(self, swarm_id: str, operation: str, cost: float | str | Decimal) -> Decimal:
        """Charge the shared ledger (``IFGovernor.acharge``); returns what remains."""
        return await self.sync.acharge(swarm_id, operation, cost)

    async def record_task_result(self, swarm_id: str, success: bool) -> None:
        self.sync.record_task_result(swarm_id, success)
        await self.sync.flush()

    async def reset_circuit_breaker(self, swarm_id: str, *, operator: Identity, new_budget: float | None = None,
                                    reason: str = "") -> None:
        """Operator action: ``operator`` is an Identity verified from an operator credential."""
        self.sync.reset_circuit_breaker(swarm_id, operator=operator, new_budget=new_budget, reason=reason)
        await self.sync.flush()

    async def set_budget(self, swarm_id: str, amount: float, *, operator: Identity) -> None:
        """Operator action: ``operator`` is an Identity verified from an operator credential."""
        self.sync.set_budget(swarm_id, amount, operator=operator)
        await self.sync.flush()

    async def update_reputation(self, swarm_id: str, reputation: float) -> None:
        self.sync.update_reputation(swarm_id, reputation)
        await self.sync.flush()

    async def request_help_for_blocker(self, blocked_swarm_id: str, blocker_description: dict[str, Any], *,
                                       request_id: str | None = None) -> list[str]:
        return await self.sync.request_help_for_blocker(blocked_swarm_id, blocker_description,
                                                        request_id=request_id)

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> int:
        return await self.sync.load()

    async def follow(self) -> None:
        await self.sync.follow()

    async def flush(self) -> None:
        await self.sync.flush()

    async def close(self) -> None:
        await self.sync.close()

    async def __aenter__(self) -> "AsyncGovernor":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
