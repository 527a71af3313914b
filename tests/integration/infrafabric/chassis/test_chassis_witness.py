"""IF.chassis → IF.witness: every load, execution and refused attempt lands in the audit log."""

from __future__ import annotations

import pytest

from infrafabric.chassis import IFChassis, ScopedCredentials
from infrafabric.chassis.modules import reference_module

witness = pytest.importorskip("infrafabric.witness")

pytestmark = pytest.mark.wasm


@pytest.mark.asyncio
async def test_witness_logs_all_chassis_operations(fresh_witness, local_upstream):
    chassis = IFChassis(reputation_sink=None)  # default audit sink: infrafabric.witness.log_operation
    chassis.load_swarm("audited", reference_module())
    await chassis.execute_task("audited", {"action": "noop"})
    with pytest.raises(PermissionError):
        await chassis.execute_task("audited", {"action": "read_file", "path": "/etc/passwd"})
    token = "sk-audited-secret-123"
    creds = ScopedCredentials("audited", "t-w", token, 60, [local_upstream.url("/v1/chat/completions")])
    with pytest.raises(PermissionError):
        await chassis.execute_task("audited", {"id": "t-w", "action": "http_request",
                                               "url": "https://evil.com/x"}, creds)
    with pytest.raises(PermissionError):
        await chassis.execute_task("intruder", {"id": "t-w", "action": "noop"}, creds)
    witness.flush()
    logs = witness.get_logs(component="IF.chassis")
    assert logs[0]["operation"] == "swarm_loaded"
    ops = [entry["operation"] for entry in logs]
    assert ops.count("task_executed") == 1
    assert ops.count("task_refused") == 3
    refused = witness.get_logs(component="IF.chassis", operation="task_refused")
    assert {r["severity"] for r in refused} == {"HIGH"}
    assert token not in repr(logs)
    chassis.close()
