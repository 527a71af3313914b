"""Seed floors for IF.chassis (real speed is measured in benchmarks/bench_chassis.py)."""

from __future__ import annotations

import os
import statistics
import time

import psutil
import pytest

from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract
from infrafabric.chassis.modules import minimal_module, reference_module

pytestmark = [pytest.mark.performance, pytest.mark.wasm]


@pytest.mark.asyncio
async def test_chassis_overhead():
    """Chassis task execution overhead < 100 ms (seed target; p99 over 200 real tasks)."""
    chassis = IFChassis(audit=None, reputation_sink=None)
    chassis.load_swarm("perf", minimal_module(), ServiceContract(
        "perf", resource_requirements=ResourceLimits(max_api_calls_per_second=1_000_000, api_burst=1000)))
    latencies = []
    for _ in range(200):
        start = time.perf_counter()
        await chassis.execute_task("perf", {"action": "noop"})
        latencies.append((time.perf_counter() - start) * 1000)
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(f"\nchassis overhead p50 {statistics.median(latencies):.3f} ms, p99 {p99:.3f} ms")
    assert p99 < 100, f"p99 {p99:.2f} ms exceeds the seed's 100 ms"
    chassis.close()


def test_memory_footprint_per_swarm():
    """Each swarm should use < 256 MB (the seed's floor), with a real module."""
    process = psutil.Process(os.getpid())
    baseline_mb = process.memory_info().rss / 1024 / 1024
    chassis = IFChassis(audit=None, reputation_sink=None)
    contract = ServiceContract(swarm_id="swarm-test", capabilities=[],
                               resource_requirements=ResourceLimits(max_memory_mb=256), slos=None, version="1.0")
    chassis.load_swarm("swarm-test", wasm_module=reference_module(), contract=contract)
    delta_mb = process.memory_info().rss / 1024 / 1024 - baseline_mb
    print(f"\nMemory per swarm: {delta_mb:.2f} MB")
    assert delta_mb < 256, f"Swarm uses {delta_mb:.2f}MB (exceeds 256MB)"
    chassis.close()
