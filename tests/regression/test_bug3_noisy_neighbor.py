"""Regression: S² bug 3 — a looping swarm exhausted the shared API rate limit and the others starved;
swarm code ran through exec() with every key in reach. Must always pass."""

from __future__ import annotations

import asyncio
import time

import pytest

from infrafabric.chassis import (
    IFChassis,
    RateLimitExceeded,
    ResourceLimits,
    ScopedCredentials,
    ServiceContract,
)
from infrafabric.chassis.modules import reference_module

pytestmark = [pytest.mark.regression, pytest.mark.wasm]


@pytest.mark.asyncio
async def test_bug_3_noisy_neighbor_contained(local_upstream):
    """Identical intent to the integration test: per-swarm limits, the others keep working."""
    chassis = IFChassis(audit=None, reputation_sink=None)
    endpoint = local_upstream.url("/v1/chat/completions")
    limits = ResourceLimits(max_api_calls_per_second=10, max_execution_time_seconds=1.0)
    for i in range(1, 8):
        chassis.load_swarm(f"swarm-{i}", reference_module(), ServiceContract(f"swarm-{i}", resource_requirements=limits))

    async def looping_swarm_7():
        creds = ScopedCredentials("swarm-7", "loop", "tok-7", 60, [endpoint])
        with pytest.raises(RateLimitExceeded):
            await chassis.execute_task("swarm-7", {"id": "loop", "action": "http_loop", "url": endpoint,
                                                   "count": 1_000_000}, creds)

    async def working_swarm(i: int) -> float:
        start = time.monotonic()
        creds = ScopedCredentials(f"swarm-{i}", f"t{i}", f"tok-{i}", 60, [endpoint])
        result = await chassis.execute_task(f"swarm-{i}", {"id": f"t{i}", "action": "call_llm", "url": endpoint},
                                            creds)
        assert result["response"]["status"] == 200
        return time.monotonic() - start

    start = time.monotonic()
    results = await asyncio.gather(looping_swarm_7(), *(working_swarm(i) for i in range(1, 7)))
    elapsed = time.monotonic() - start
    assert max(results[1:]) < 1.0, f"working swarms took {results[1:]}"
    from_7 = [r for r in local_upstream.seen() if r.authorization == "Bearer tok-7"]
    assert len(from_7) <= 10 * elapsed + 2, f"{len(from_7)} calls from swarm-7 in {elapsed:.2f}s"
    others = sorted(r.authorization for r in local_upstream.seen() if r.authorization != "Bearer tok-7")
    assert others == sorted(f"Bearer tok-{i}" for i in range(1, 7))
    chassis.close()


@pytest.mark.asyncio
async def test_bug_3_swarm_code_is_never_exec_d(tmp_path):
    marker = tmp_path / "exec-ran"
    chassis = IFChassis(audit=None, reputation_sink=None)
    code = f"open({str(marker)!r}, 'w').write('x')"
    result = await chassis.execute_task("swarm-x", {"action": code})
    assert result["error"] == "unknown_action" and not marker.exists()
    chassis.close()
