"""Coordinator + governor together (seed 002 level 2), on the embedded backend and on etcd + NATS."""

from __future__ import annotations

import asyncio
import time

import pytest

from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.governor.responder import BlockerResponder
from tests.fixtures.coordinator_fixtures import CoordinatorFactory


def gang_policy() -> ResourcePolicy:
    return ResourcePolicy(max_swarms_per_task=3, max_cost_per_task=10.0, min_capability_match=0.7)


@pytest.mark.critical
async def test_full_gang_up_on_blocker_workflow(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator()
    governor = IFGovernor(coordinator=coordinator, policy=gang_policy())
    swarms = [
        ("session-1-ndi", [Capability.INTEGRATION_NDI]),
        ("session-2-webrtc", [Capability.INTEGRATION_WEBRTC]),
        ("session-4-sip", [Capability.INTEGRATION_SIP]),
        ("session-6-talent", [Capability.ARCHITECTURE_PATTERNS]),
    ]
    queues = {}
    for swarm_id, caps in swarms:
        queues[swarm_id] = await coordinator.register_swarm(swarm_id, caps)
        governor.register_swarm(SwarmProfile(swarm_id=swarm_id, capabilities=caps, cost_per_hour=2.0,
                                             reputation_score=1.0, current_budget_remaining=10.0))
    start = time.perf_counter()
    await coordinator.detect_blocker(
        swarm_id="session-4-sip",
        blocker_info={"reason": "sip_ndi_integration_failure",
                      "required_capabilities": ["integration:sip", "integration:ndi"]},
    )
    assigned_swarms = await governor.request_help_for_blocker(
        blocked_swarm_id="session-4-sip",
        blocker_description={"required_capabilities": [Capability.INTEGRATION_SIP, Capability.INTEGRATION_NDI]},
    )
    latency_ms = (time.perf_counter() - start) * 1000
    assert latency_ms < 50, f"Total coordination took {latency_ms}ms (target: <50ms)"
    assert len(assigned_swarms) <= 3, "Too many swarms assigned"
    assert "session-1-ndi" in assigned_swarms, "NDI expert not assigned"
    assert "session-6-talent" not in assigned_swarms, "Unqualified swarm incorrectly assigned"
    assert "session-4-sip" not in assigned_swarms
    for swarm_id in assigned_swarms:
        assert governor.swarm_registry[swarm_id].current_budget_remaining >= 0, f"{swarm_id} budget overrun"
    help_task = await asyncio.wait_for(queues["session-1-ndi"].get(), 2)  # the helper was told at once
    assert help_task["type"] == "help_request" and help_task["blocked_swarm"] == "session-4-sip"
    assert queues["session-6-talent"].empty()
    await governor.close()


async def test_coordinator_governor_task_assignment(make_coordinator: CoordinatorFactory) -> None:
    """Blocker event -> governor (listening) -> team pushed to the helpers, without anyone polling."""
    coordinator = await make_coordinator()
    governor = IFGovernor(coordinator=coordinator, policy=gang_policy())
    queues = {}
    for swarm_id, caps in [("sip", ["integration:sip"]), ("ndi", ["integration:ndi"]), ("legal", ["contract-review:nda"])]:
        queues[swarm_id] = await coordinator.register_swarm(swarm_id, caps)
        governor.register_swarm(SwarmProfile(swarm_id, caps, 2.0, 1.0, 10.0))
    orchestrator = await coordinator.register_swarm("orchestrator", [])
    responder = await BlockerResponder(governor).start()
    await coordinator.detect_blocker("sip", {"required_capabilities": ["integration:sip", "integration:ndi"]})
    assignment = await asyncio.wait_for(responder.assignments.get(), 5)
    assert assignment["team"] == ["ndi"]
    assert (await asyncio.wait_for(queues["ndi"].get(), 5))["blocked_swarm"] == "sip"
    assert (await asyncio.wait_for(orchestrator.get(), 5))["type"] == "blocker_detected"
    assert queues["legal"].empty()
    await responder.stop()
    await governor.close()


async def test_unqualified_blocker_is_escalated_not_assigned(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator()
    governor = IFGovernor(coordinator=coordinator, policy=gang_policy())
    legal_queue = await coordinator.register_swarm("legal", [Capability.CONTRACT_REVIEW_NDA])
    governor.register_swarm(SwarmProfile("legal", [Capability.CONTRACT_REVIEW_NDA], 5.0, 1.0, 10.0))
    escalations: asyncio.Queue[bytes] = asyncio.Queue()
    await coordinator.bus.subscribe("if.events.escalation", lambda m: escalations.put_nowait(m.data))
    team = await governor.request_help_for_blocker("rust-swarm", {"required_capabilities": ["code-analysis:rust"]})
    assert team == []
    assert b"rust-swarm" in await asyncio.wait_for(escalations.get(), 5)
    assert legal_queue.empty()
    await governor.close()


async def test_budget_overrun_trips_breaker_and_takes_swarm_out_of_teams(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator()
    governor = IFGovernor(coordinator=coordinator, policy=gang_policy())
    for swarm_id in ("ndi-a", "ndi-b"):
        await coordinator.register_swarm(swarm_id, ["integration:ndi"])
    governor.register_swarm(SwarmProfile("ndi-a", ["integration:ndi"], 1.0, 1.0, 5.0))
    governor.register_swarm(SwarmProfile("ndi-b", ["integration:ndi"], 2.0, 1.0, 5.0))
    assert await governor.request_help_for_blocker("x", {"required_capabilities": ["integration:ndi"]}) == ["ndi-a"]
    governor.track_cost("ndi-a", "llm-call", 3.0)
    governor.track_cost("ndi-a", "llm-call", 2.5)  # overrun: recorded, breaker trips
    assert governor.circuit_breaker_status("ndi-a")["state"] == "open"
    assert await governor.request_help_for_blocker("x", {"required_capabilities": ["integration:ndi"]}) == ["ndi-b"]
    await governor.flush()
    status, _ = coordinator.etcd.get("/swarms/ndi-a/status")
    assert status == b'"circuit_breaker_tripped"'
    await governor.close()


async def test_a_blocker_is_resolved_when_its_whole_team_completed_and_not_before(
        make_coordinator: CoordinatorFactory) -> None:
    """Lifecycle: the responder records the team; the blocker stays pending until every helper completed
    its own help task; a swarm that completes a help task it was not assigned resolves nothing."""
    import uuid

    from infrafabric.coordinator import keys

    tag = uuid.uuid4().hex[:6]
    blocked, ndi, webrtc, imposter = (f"{n}-{tag}" for n in ("sip", "ndi", "webrtc", "imposter"))
    coordinator = await make_coordinator()
    audit: list[tuple[str, dict[str, object]]] = []
    coordinator.core._audit = lambda component, op, params, severity="INFO": audit.append((op, params))
    governor = IFGovernor(coordinator=coordinator, policy=gang_policy())
    queues = {}
    for swarm_id, caps in [(blocked, ["integration:sip"]), (ndi, ["integration:ndi"]),
                           (webrtc, ["integration:webrtc"]), (imposter, ["docs:markdown"])]:
        queues[swarm_id] = await coordinator.register_swarm(swarm_id, caps)
        governor.register_swarm(SwarmProfile(swarm_id, caps, 2.0, 1.0, 10.0))
    responder = await BlockerResponder(governor).start()
    event = await coordinator.detect_blocker(blocked, {"required_capabilities": ["integration:ndi",
                                                                                 "integration:webrtc"]})
    blocker_id = event["blocker_id"]
    assert sorted((await asyncio.wait_for(responder.assignments.get(), 5))["team"]) == sorted([ndi, webrtc])
    tasks = {h: await asyncio.wait_for(queues[h].get(), 5) for h in (ndi, webrtc)}
    assert tasks[ndi]["id"] == keys.help_task_id(blocker_id, ndi)

    async def pending() -> bool:
        return any(b["blocker_id"] == blocker_id for b in await coordinator.pending_blockers())

    # the imposter takes the webrtc helper's task and completes it: that resolves nothing
    claim = await coordinator.core.claim(imposter, tasks[webrtc]["id"])
    assert claim is not None
    await coordinator.core.complete(imposter, tasks[webrtc]["id"], "done", claim)
    ndi_claim = await coordinator.core.claim(ndi, tasks[ndi]["id"])
    await coordinator.core.complete(ndi, tasks[ndi]["id"], "done", ndi_claim)
    assert await pending(), "resolved although one help task was completed by a swarm not on the team"
    assert not any(op == "blocker_resolved" for op, _ in audit)

    # a second blocker, completed by its real team: resolved after the last helper, once, audited
    event = await coordinator.detect_blocker(blocked, {"required_capabilities": ["integration:ndi",
                                                                                 "integration:webrtc"]})
    blocker_id = event["blocker_id"]
    await asyncio.wait_for(responder.assignments.get(), 5)
    tasks = {h: await asyncio.wait_for(queues[h].get(), 5) for h in (ndi, webrtc)}
    first = await coordinator.core.claim(ndi, tasks[ndi]["id"])
    await coordinator.core.complete(ndi, tasks[ndi]["id"], "done", first)
    assert await pending()
    last = await coordinator.core.claim(webrtc, tasks[webrtc]["id"])
    await coordinator.core.complete(webrtc, tasks[webrtc]["id"], "done", last)
    assert not await pending()
    assert await coordinator.kv.get(keys.blocker_team_key(blocker_id)) is None
    resolved = [p for op, p in audit if op == "blocker_resolved"]
    assert resolved == [{"swarm_id": blocked, "blocker_id": blocker_id, "by": "team", "team": [ndi, webrtc]}] or \
        resolved == [{"swarm_id": blocked, "blocker_id": blocker_id, "by": "team", "team": [webrtc, ndi]}]
    await responder.stop()
    await governor.close()


async def test_a_blocker_is_bounded_in_time_even_while_its_reporter_lives(
        make_coordinator: CoordinatorFactory) -> None:
    import json as _json
    import uuid

    from infrafabric.coordinator import keys

    tag = uuid.uuid4().hex[:6]
    coordinator = await make_coordinator()
    audit: list[str] = []
    coordinator.core._audit = lambda component, op, params, severity="INFO": audit.append(op)
    await coordinator.register_swarm(f"old-{tag}", [])
    fresh = await coordinator.detect_blocker(f"old-{tag}", {"required_capabilities": []})
    stale = await coordinator.detect_blocker(f"old-{tag}", {"required_capabilities": []})
    key = keys.blocker_key(f"old-{tag}", stale["blocker_id"])
    record = await coordinator.kv.get(key)
    aged = {**_json.loads(record.value), "timestamp": stale["timestamp"] - coordinator.blocker_max_age - 1}
    await coordinator.kv.put(key, _json.dumps(aged), lease=record.lease)
    damaged = keys.blocker_key(f"old-{tag}", "damaged")
    await coordinator.kv.put(damaged, b"\xff not json")
    ids = {b["blocker_id"] for b in await coordinator.pending_blockers()}
    assert fresh["blocker_id"] in ids and stale["blocker_id"] not in ids
    assert await coordinator.kv.get(key) is None and await coordinator.kv.get(damaged) is None
    assert audit.count("blocker_expired") == 2
