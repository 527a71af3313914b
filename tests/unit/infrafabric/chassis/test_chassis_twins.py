"""IFChassis and AsyncChassis: one sandbox under both, the same names, nothing slow on the event loop."""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

from infrafabric.chassis import IFChassis, InvalidContractError, RateLimitExceeded, ResourceLimits, ServiceContract
from infrafabric.chassis.aio import AsyncChassis
from infrafabric.chassis.modules import reference_module

_NEVER_WAIT = {"check_rate_limit", "get_performance"}


def test_the_async_twin_has_the_seed_names_and_awaits_whatever_can_wait() -> None:
    names = {n for n in dir(IFChassis) if not n.startswith("_")} - {"ensure_loaded", "runtime", "engine"}
    names = {n for n in names if callable(inspect.getattr_static(IFChassis, n))}
    assert names <= {n for n in dir(AsyncChassis) if not n.startswith("_")}
    for name in names:
        assert inspect.iscoroutinefunction(getattr(AsyncChassis, name)) == (name not in _NEVER_WAIT), name


async def test_compiling_happens_off_the_event_loop_and_tasks_run_alike() -> None:
    async with AsyncChassis(audit=None, reputation_sink=None) as chassis:
        loop_thread = threading.get_ident()
        compiled_on: list[int] = []
        compile_ = chassis.sync.runtime.compile

        def watched(module: bytes) -> object:
            compiled_on.append(threading.get_ident())
            return compile_(module)

        chassis.sync.runtime.compile = watched  # type: ignore[method-assign]
        contract = ServiceContract(swarm_id="swarm-a", resource_requirements=ResourceLimits(max_memory_mb=64))
        await chassis.load_swarm("swarm-a", reference_module(), contract)
        result = await chassis.execute_task("swarm-a", {"action": "echo", "payload": {"x": 1}})
        assert result == (await chassis.sync.execute_task("swarm-a", {"action": "echo", "payload": {"x": 1}}))
        await chassis.execute_task("swarm-never-loaded", {"action": "echo", "payload": {}})  # the default guest
        assert len(compiled_on) == 2 and loop_thread not in compiled_on
        assert chassis.get_performance("swarm-a").executions == 2
        with pytest.raises(InvalidContractError):
            await chassis.execute_task("bad id!", {"action": "echo"})  # refused by the task, as on the sync face
        await chassis.unload_swarm("swarm-a")
        assert "swarm-a" not in chassis.sync.swarm_runtimes


async def test_the_rate_limit_is_one_bucket_for_both_faces() -> None:
    sync = IFChassis(audit=None, reputation_sink=None)
    twin = AsyncChassis.wrap(sync)
    await twin.load_swarm("swarm-b", reference_module(), ServiceContract(
        swarm_id="swarm-b", resource_requirements=ResourceLimits(max_api_calls_per_second=1, api_burst=1)))
    twin.check_rate_limit("swarm-b")
    with pytest.raises(RateLimitExceeded):
        sync.check_rate_limit("swarm-b")
    await twin.close()
    assert await asyncio.to_thread(lambda: sync._closed)
