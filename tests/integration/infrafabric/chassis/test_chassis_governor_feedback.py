"""IF.chassis → IF.governor: reputation measured in the sandbox steers the governor's choice."""

from __future__ import annotations

import pytest

from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract, ServiceLevelObjective
from infrafabric.chassis.modules import reference_module

governor_mod = pytest.importorskip("infrafabric.governor")

pytestmark = [pytest.mark.wasm, pytest.mark.critical]

RUST = "code-analysis:rust"


def _governor():
    from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile

    governor = IFGovernor(coordinator=None, policy=ResourcePolicy())
    # the slow swarm is slightly cheaper, so it wins while both have a perfect reputation
    governor.register_swarm(SwarmProfile(swarm_id="rust-slow", capabilities=[RUST], cost_per_hour=1.9,
                                         reputation_score=1.0, current_budget_remaining=50.0))
    governor.register_swarm(SwarmProfile(swarm_id="rust-fast", capabilities=[RUST], cost_per_hour=2.0,
                                         reputation_score=1.0, current_budget_remaining=50.0))
    return governor


@pytest.mark.asyncio
async def test_chassis_governor_reputation_feedback():
    """Seed flow: execute, track, compute reputation, update the governor, next assignment uses it."""
    governor = _governor()
    assert governor.find_qualified_swarm(required_capabilities=[RUST], max_cost=10.0) == "rust-slow"

    chassis = IFChassis(audit=None)  # default sink: infrafabric.governor.update_reputation
    slo = ServiceLevelObjective(p99_latency_ms=60, success_rate=0.95, availability=0.99)
    for swarm in ("rust-slow", "rust-fast"):
        chassis.load_swarm(swarm, reference_module(), ServiceContract(
            swarm, capabilities=[RUST], resource_requirements=ResourceLimits(max_api_calls_per_second=1000),
            slos=slo))
    for _ in range(5):
        # the slow swarm's real guest burns ~180 ms of CPU per task: over its 60 ms p99 SLO
        await chassis.execute_task("rust-slow", {"action": "busy", "iterations": 100_000_000})
        await chassis.execute_task("rust-fast", {"action": "wordcount", "text": "fn main() {}"})

    assert chassis.get_performance("rust-slow").meets_slo is False
    assert chassis.get_performance("rust-fast").meets_slo is True
    updated_profile = governor.swarm_registry["rust-slow"]
    assert updated_profile.reputation_score == pytest.approx(0.9)
    assert governor.swarm_registry["rust-fast"].reputation_score == 1.0
    assert governor.find_qualified_swarm(required_capabilities=[RUST], max_cost=10.0) == "rust-fast"
    chassis.close()


@pytest.mark.asyncio
async def test_failures_in_the_sandbox_lower_reputation_in_the_governor():
    governor = _governor()
    chassis = IFChassis(audit=None)
    for _ in range(3):
        with pytest.raises(PermissionError):
            await chassis.execute_task("rust-slow", {"action": "read_file", "path": "/etc/passwd"})
    assert governor.swarm_registry["rust-slow"].reputation_score == 0.0
    assert governor.find_qualified_swarm(required_capabilities=[RUST], max_cost=10.0) == "rust-fast"
    chassis.close()


@pytest.mark.asyncio
async def test_unknown_swarm_in_the_governor_does_not_break_execution():
    _governor()
    chassis = IFChassis(audit=None)
    assert await chassis.execute_task("not-in-any-governor", {"action": "noop"}) == {"status": "success"}
    chassis.close()


@pytest.mark.asyncio
async def test_a_chassis_wired_explicitly_feeds_only_what_it_was_given(fresh_witness):
    """``reputation_sink=None`` and ``audit=None`` cut the seeds' defaults (seed_wiring): a live governor
    keeps its reputation and the default witness gets nothing; a sink passed in gets every verdict."""
    from infrafabric.witness import flush, get_logs

    governor = _governor()
    unwired = IFChassis(audit=None, reputation_sink=None)
    for _ in range(3):
        with pytest.raises(PermissionError):
            await unwired.execute_task("rust-slow", {"action": "read_file", "path": "/etc/passwd"})
    unwired.close()
    flush()
    assert governor.swarm_registry["rust-slow"].reputation_score == 1.0
    assert get_logs(component="IF.chassis") == []

    verdicts: list[tuple[str, float]] = []
    audited: list[str] = []
    wired = IFChassis(audit=lambda **entry: audited.append(entry["operation"]),
                      reputation_sink=lambda swarm, score: verdicts.append((swarm, score)))
    with pytest.raises(PermissionError):
        await wired.execute_task("rust-slow", {"action": "read_file", "path": "/etc/passwd"})
    wired.close()
    assert verdicts and verdicts[-1][0] == "rust-slow" and verdicts[-1][1] < 1.0
    assert "task_refused" in audited
    assert governor.swarm_registry["rust-slow"].reputation_score == 1.0  # only the sink it was given
