"""IFGovernor and AsyncGovernor: one governor under both, the same names; changes are stored when awaited,
and the async ``track_cost`` is the shared ledger's charge."""

from __future__ import annotations

import inspect
import json
from decimal import Decimal

import pytest

from backends.kv import open_kv
from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import CircuitOpenError, PermissionDeniedError
from infrafabric.governor import IFGovernor, SwarmProfile
from infrafabric.governor.aio import AsyncGovernor

OPERATOR = Identity("operator", "alice", "test-credential", 0, 2**31)
_READERS = {"budget_remaining", "budget_limit", "budget_spent", "reputation", "circuit_breaker_status",
            "is_available", "find_qualified_swarm"}
_CORE_ONLY = {"acharge", "coordinator", "policy", "task_budgets", "kv", "load_problems"}


def test_the_async_twin_has_every_name_and_awaits_every_change() -> None:
    names = {n for n in dir(IFGovernor) if not n.startswith("_")} - _CORE_ONLY
    assert names <= {n for n in dir(AsyncGovernor) if not n.startswith("_")}
    for name in names - {"swarm_registry"}:
        if callable(inspect.getattr_static(IFGovernor, name)):
            assert inspect.iscoroutinefunction(getattr(AsyncGovernor, name)) == (name not in _READERS), name


async def test_changes_are_in_the_store_when_they_return_and_charges_go_to_the_shared_ledger() -> None:
    async with open_kv("memory://") as kv:
        async with AsyncGovernor(kv=kv, audit=None, cost_sink=None) as governor:
            await governor.register_swarm(SwarmProfile("swarm-a", ["code:python"], 1.0, 1.0, 1.0))
            stored = json.loads((await kv.get("/governor/budgets/swarm-a")).value)
            assert Decimal(stored["budget"]) == Decimal("1.0")
            assert await governor.track_cost("swarm-a", "llm", "0.4") == Decimal("0.6")
            other = IFGovernor(kv=kv, audit=None, cost_sink=None)  # another replica, on the same store
            assert await other.load() >= 1 and other.budget_remaining("swarm-a") == Decimal("0.6")
            await other.close()
            assert await governor.track_cost("swarm-a", "llm", "0.6") == Decimal("0")
            assert governor.circuit_breaker_status("swarm-a")["state"] == "open"
            with pytest.raises(CircuitOpenError):  # refused against the open breaker, nothing recorded
                await governor.track_cost("swarm-a", "llm", "0.1")
            with pytest.raises(PermissionDeniedError):
                await governor.set_budget("swarm-a", 5.0, operator="alice")  # type: ignore[arg-type]
            await governor.reset_circuit_breaker("swarm-a", operator=OPERATOR, new_budget=2.0)
            stored = json.loads((await kv.get("/governor/budgets/swarm-a")).value)
            assert Decimal(stored["budget"]) == Decimal("2.0") and governor.is_available("swarm-a")
            assert governor.find_qualified_swarm(["code:python"], 10.0) == "swarm-a"


async def test_wrap_gives_an_existing_governor_an_async_face() -> None:
    sync = IFGovernor(audit=None, cost_sink=None)
    sync.register_swarm(SwarmProfile("swarm-b", ["code:python"], 1.0, 1.0, 1.0))
    twin = AsyncGovernor.wrap(sync)
    await twin.update_reputation("swarm-b", 0.5)
    assert sync.reputation("swarm-b") == 0.5 and twin.swarm_registry is sync.swarm_registry
    await twin.close()
