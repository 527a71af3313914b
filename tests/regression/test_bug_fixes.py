"""Regressions for S2 bugs #1 and #2 (bug #3 lives with IF.chassis). These must always pass."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from infrafabric.coordinator import IFCoordinator
from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile

pytestmark = [pytest.mark.regression]


@pytest.mark.critical
async def test_bug_1_race_conditions_eliminated(coordinator: IFCoordinator) -> None:
    run = uuid.uuid4().hex[:6]
    for i in range(100):
        task_id = f"task-{run}-{i}"
        coordinator.etcd.put(f"/tasks/{task_id}/owner", "unclaimed")
        results = await asyncio.gather(*[coordinator.claim_task(f"swarm-{j}", task_id) for j in range(10)])
        assert sum(results) == 1, f"Race condition detected on task {task_id}!"
        winner = f"swarm-{results.index(True)}"
        assert coordinator.etcd.get(f"/tasks/{task_id}/owner")[0] == winner.encode()


@pytest.mark.critical
async def test_bug_2_capability_mismatch_prevented() -> None:
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy(min_capability_match=0.7))
    governor.register_swarm(SwarmProfile(swarm_id="legal-swarm", capabilities=[Capability.CONTRACT_REVIEW_NDA],
                                         cost_per_hour=5.0, reputation_score=1.0, current_budget_remaining=10.0))
    swarm = governor.find_qualified_swarm(required_capabilities=[Capability.CODE_ANALYSIS_RUST], max_cost=10.0)
    assert swarm is None, "Unqualified swarm incorrectly assigned!"
    team = await governor.request_help_for_blocker("rust-swarm", {"required_capabilities": ["code-analysis:rust"]})
    assert team == []


async def test_bug_2_budget_spiral_prevented() -> None:
    """The $5 / 6 helpers / $7 spent spiral: helpers are capped and spending stops at the budget."""
    governor = IFGovernor(policy=ResourcePolicy(max_swarms_per_task=3, max_cost_per_task=5.0))
    for i in range(6):
        governor.register_swarm(SwarmProfile(f"helper-{i}", ["code-analysis:rust"], 1.0, 1.0, 1.0))
    team = await governor.request_help_for_blocker("stuck", {"required_capabilities": ["code-analysis:rust"]})
    assert 1 <= len(team) <= 3
    spent = 0.0
    for helper in team:
        while governor.find_qualified_swarm(["code-analysis:rust"], 5.0, exclude=[h for h in team if h != helper]) == helper:
            governor.track_cost(helper, "advice", 0.25)
            spent += 0.25
    assert spent <= 1.0 * len(team)  # nobody spent beyond its budget before being cut off
    assert all(governor.circuit_breaker_status(h)["state"] == "open" for h in team)
