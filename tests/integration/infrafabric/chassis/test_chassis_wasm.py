"""IF.chassis ↔ wasmtime: real execution, and correct verdicts when many sandboxes run at once."""

from __future__ import annotations

import asyncio

import pytest

from infrafabric.chassis import (
    CpuLimitExceededError,
    GuestMemoryError,
    IFChassis,
    ResourceLimits,
    SandboxPermissionError,
    ServiceContract,
)
from infrafabric.chassis.modules import reference_module

pytestmark = pytest.mark.wasm


@pytest.mark.asyncio
async def test_chassis_wasm_execution(chassis):
    """A real guest runs in wasmtime; the host measures fuel and memory, not the guest."""
    chassis.load_swarm("wasm-exec", reference_module(), ServiceContract("wasm-exec"))
    outcome = await chassis.execute_task_detailed("wasm-exec", {"action": "busy", "iterations": 100_000})
    assert outcome.result["status"] == "success" and outcome.result["acc"] > 0
    assert outcome.fuel_consumed > 100_000  # every loop iteration burned fuel
    assert outcome.memory_bytes >= 2 * 65536
    bigger = await chassis.execute_task_detailed("wasm-exec", {"action": "allocate", "mb": 8})
    assert bigger.memory_bytes >= 8 * 1024 * 1024 + 2 * 65536


@pytest.mark.asyncio
async def test_concurrent_sandboxes_each_get_their_own_verdict():
    """wasmtime-py passes host exceptions through one global slot; verdicts must still be per task."""
    chassis = IFChassis(audit=None, reputation_sink=None, max_workers=8)
    fast = ResourceLimits(max_api_calls_per_second=10_000, api_burst=10_000, max_concurrent_tasks=16)
    tight = ResourceLimits(max_api_calls_per_second=10_000, api_burst=10_000, max_concurrent_tasks=16,
                           max_fuel=20_000_000)
    chassis.load_swarm("mixed", reference_module(), ServiceContract("mixed", resource_requirements=fast))
    chassis.load_swarm("spin", reference_module(), ServiceContract("spin", resource_requirements=tight))
    plan = []
    for i in range(60):
        kind = i % 4
        if kind == 0:
            plan.append(("mixed", {"action": "read_file", "path": "/etc/passwd"}, SandboxPermissionError))
        elif kind == 1:
            plan.append(("mixed", {"action": "allocate_512mb"}, GuestMemoryError))
        elif kind == 2:
            plan.append(("spin", {"action": "loop_forever"}, CpuLimitExceededError))
        else:
            plan.append(("mixed", {"action": "wordcount", "text": "x " * i}, None))

    async def one(swarm, task):
        try:
            return await chassis.execute_task(swarm, task)
        except Exception as exc:  # noqa: BLE001 - the verdict is what is checked
            return exc

    results = await asyncio.gather(*(one(s, t) for s, t, _ in plan))
    for (swarm, task, expected), got in zip(plan, results):
        if expected is None:
            assert got == {"status": "success", "words": task["text"].count("x")}, (task, got)
        else:
            assert type(got) is expected, (task, got)
    chassis.close()
