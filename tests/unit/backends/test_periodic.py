"""The one periodic-task helper: steps run on their interval, a failing step does not end the loop, a step
returning DONE does, and stop() ends it (also mid-step, also twice, also before start)."""

from __future__ import annotations

import asyncio

from backends.periodic import Periodic


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_a_failing_step_is_logged_and_the_next_one_runs(caplog) -> None:
    seen: list[int] = []

    async def step() -> None:
        seen.append(len(seen))
        if len(seen) % 2:
            raise ConnectionError("engine away")

    loop = Periodic(step, 0.01, name="flaky", first_delay=0).start()
    await _until(lambda: len(seen) >= 5)
    await loop.stop()
    assert loop.failures >= 2 and loop.runs >= 5 and not loop.running
    assert "flaky: a step failed" in caplog.text
    after = len(seen)
    await asyncio.sleep(0.05)
    assert len(seen) == after  # stopped means no step runs any more


async def test_done_ends_the_loop() -> None:
    calls = []

    async def step() -> object:
        calls.append(1)
        return Periodic.DONE if len(calls) == 3 else None

    loop = Periodic(step, 0.001, name="three", first_delay=0).start()
    await _until(lambda: not loop.running)
    assert len(calls) == 3 and loop.runs == 3


async def test_stop_cancels_a_step_in_flight_and_is_idempotent() -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def step() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    never = Periodic(step, 1, name="never")
    await never.stop()  # before start: nothing to do
    loop = Periodic(step, 60, name="stuck", first_delay=0).start()
    await asyncio.wait_for(entered.wait(), 5)
    await loop.stop()
    await loop.stop()
    assert cancelled.is_set() and not loop.running


async def test_the_interval_is_read_each_time() -> None:
    interval = [10.0]
    calls = []

    async def step() -> None:
        calls.append(1)
        interval[0] = 0.001

    loop = Periodic(step, lambda: interval[0], name="tunable", first_delay=0).start()
    await _until(lambda: len(calls) >= 3)  # a fixed 10 s interval would allow one call only
    await loop.stop()
    assert len(calls) >= 3 and loop.runs == len(calls)
