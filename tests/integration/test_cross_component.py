"""Seed 002's cross-component integration tests: one workflow through coordinator, governor and chassis."""

from __future__ import annotations

import pytest

from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract
from infrafabric.chassis.modules import reference_module
from infrafabric.coordinator import IFCoordinator
from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.witness import configure, get_logs


@pytest.mark.critical
async def test_witness_logs_all_operations(tmp_path, fresh_witness) -> None:  # type: ignore[no-untyped-def]
    """Coordinator claims -> governor assigns -> chassis executes: every step in the witness, in order."""
    coordinator = IFCoordinator()
    governor = IFGovernor(coordinator=coordinator, policy=ResourcePolicy())
    chassis = IFChassis()
    async with coordinator:
        for swarm_id, caps in [("session-1-ndi", [Capability.INTEGRATION_NDI]),
                               ("session-4-sip", [Capability.INTEGRATION_SIP])]:
            await coordinator.register_swarm(swarm_id, caps)
            governor.register_swarm(SwarmProfile(swarm_id, caps, 2.0, 1.0, 10.0))
        # The workflow's own log starts here (set-up above went to the fixture's log).
        workflow_log = configure(url=f"sqlite:///{tmp_path / 'workflow.db'}", key_dir=tmp_path / "workflow-keys")

        assert await coordinator.claim_task("session-4-sip", "task-sip-bridge")
        team = await governor.request_help_for_blocker(
            "session-4-sip", {"required_capabilities": [Capability.INTEGRATION_SIP, Capability.INTEGRATION_NDI]})
        assert team == ["session-1-ndi"]
        chassis.load_swarm("session-1-ndi", reference_module(), ServiceContract(
            "session-1-ndi", capabilities=["integration:ndi"], resource_requirements=ResourceLimits()))
        result = await chassis.execute_task("session-1-ndi", {"id": "help-1", "action": "wordcount", "text": "a b c"})
        assert result["status"] == "success"
        chassis.close()
        await governor.close()
    workflow_log.flush()

    logs = get_logs(component="IF.coordinator")
    assert len(logs) > 0
    assert logs[0]["operation"] == "task_claimed"
    logs = get_logs(component="IF.governor")
    assert logs[0]["operation"] == "help_requested"
    assert logs[0]["params"]["assigned_swarms"] == ["session-1-ndi"]
    logs = get_logs(component="IF.chassis")
    assert logs[0]["operation"] == "swarm_loaded"
    # The provenance chain: every entry links to the one before, and the log verifies.
    entries = get_logs()
    assert all(b["prev_hash"] == a["content_hash"] for a, b in zip(entries, entries[1:]))
    assert workflow_log.verify().ok
