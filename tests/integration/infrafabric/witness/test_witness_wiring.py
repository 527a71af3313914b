"""IF.witness sees every operation of the coordinator and governor (seed 002 integration matrix)."""

from __future__ import annotations

from infrafabric.coordinator.credentials import Identity
from infrafabric.coordinator import IFCoordinator
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.witness import get_logs


async def test_coordinator_and_governor_operations_are_audited(fresh_witness) -> None:  # type: ignore[no-untyped-def]
    coordinator = IFCoordinator()
    governor = IFGovernor(coordinator, ResourcePolicy(circuit_breaker_failure_threshold=1))
    async with coordinator:
        await coordinator.register_swarm("helper", ["integration:ndi"])
        governor.register_swarm(SwarmProfile("helper", ["integration:ndi"], 2.0, 1.0, 1.0))
        assert await coordinator.claim_task("helper", "audited-task")
        await coordinator.push_task_to_swarm("helper", {"id": "pushed-task"})
        await coordinator.detect_blocker("blocked", {"required_capabilities": ["integration:ndi"]})
        assert await governor.request_help_for_blocker("blocked", {"required_capabilities": ["integration:ndi"]})
        governor.track_cost("helper", "llm", 1.0)
        governor.reset_circuit_breaker("helper", operator=Identity("operator", "ops", "cred-1", 0, 2**31), new_budget=2)
        await governor.close()
    fresh_witness.flush()
    coord_ops = [e["operation"] for e in get_logs(component="IF.coordinator")]
    gov_ops = [e["operation"] for e in get_logs(component="IF.governor")]
    for op in ("swarm_registered", "task_claimed", "task_pushed", "blocker_detected"):
        assert op in coord_ops, op
    for op in ("swarm_registered", "help_requested", "budget_charged", "circuit_breaker_tripped",
               "circuit_breaker_reset"):
        assert op in gov_ops, op
    claimed = get_logs(component="IF.coordinator", operation="task_claimed")[0]
    assert claimed["params"]["task_id"] == "audited-task" and claimed["params"]["swarm_id"] == "helper"
    tripped = get_logs(component="IF.governor", operation="circuit_breaker_tripped")[0]
    assert tripped["severity"] == "HIGH" and tripped["params"]["reason"] == "budget_exhausted"
    costs = get_logs(component="IF.optimise")
    assert costs, "IF.governor.track_cost must feed IF.optimise"
    assert fresh_witness.verify().ok


async def test_claims_are_not_audited_when_they_lose(fresh_witness) -> None:  # type: ignore[no-untyped-def]
    coordinator = IFCoordinator()
    async with coordinator:
        assert await coordinator.claim_task("winner", "contested")
        assert not await coordinator.claim_task("loser", "contested")
    fresh_witness.flush()
    logs = get_logs(component="IF.coordinator", operation="task_claimed")
    assert [e["params"]["swarm_id"] for e in logs] == ["winner"]
