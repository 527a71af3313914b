"""InFlightLimit: never more holders than the limit, first come first served, no slot lost to a cancel."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.inflight import InFlightLimit


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_a_limit_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError):
        InFlightLimit(bad)  # type: ignore[arg-type]


def test_waiters_are_admitted_in_arrival_order() -> None:
    async def go() -> list[int]:
        limit = InFlightLimit(2)
        gate = asyncio.Event()
        order: list[int] = []

        async def worker(i: int) -> None:
            async with limit:
                order.append(i)
                await gate.wait()

        tasks = [asyncio.create_task(worker(i)) for i in range(8)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert order == [0, 1] and limit.in_use == 2
        gate.set()
        await asyncio.gather(*tasks)
        assert limit.in_use == 0
        return order

    assert asyncio.run(go()) == list(range(8))


def test_a_waiter_cancelled_after_it_was_handed_a_slot_gives_the_slot_on() -> None:
    async def go() -> None:
        limit = InFlightLimit(1)
        await limit.acquire()
        waiter = asyncio.create_task(limit.acquire())
        behind = asyncio.create_task(limit.acquire())
        await asyncio.sleep(0)
        limit.release()  # hands the slot to `waiter`...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(behind, 1)  # the slot went on to the next one, not lost
        assert limit.in_use == 1
        limit.release()
        assert limit.in_use == 0

    asyncio.run(go())


def test_releasing_more_than_acquired_is_an_error() -> None:
    limit = InFlightLimit(1)
    with pytest.raises(RuntimeError):
        limit.release()


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(1, 6),
       jobs=st.lists(st.tuples(st.integers(0, 3), st.booleans(), st.integers(0, 4)), min_size=1, max_size=40))
def test_holders_never_exceed_the_limit_and_every_slot_comes_back(limit: int,
                                                                   jobs: list[tuple[int, bool, int]]) -> None:
    """Jobs hold a slot for some loop turns; some are cancelled at an arbitrary turn, waiting or holding."""

    async def go() -> None:
        bound = InFlightLimit(limit)
        holding = 0
        peak = 0
        admitted: list[int] = []

        async def job(i: int, turns: int) -> None:
            nonlocal holding, peak
            async with bound:
                admitted.append(i)
                holding += 1
                peak = max(peak, holding)
                try:
                    for _ in range(turns):
                        await asyncio.sleep(0)
                finally:
                    holding -= 1

        tasks = [asyncio.create_task(job(i, turns)) for i, (turns, _, _) in enumerate(jobs)]
        for i, (_, cancel, at) in enumerate(jobs):
            if cancel:
                asyncio.get_running_loop().call_later(0, lambda t=tasks[i], n=at: _cancel_after(t, n))
        await asyncio.gather(*tasks, return_exceptions=True)
        assert peak <= limit
        assert bound.in_use == 0 and holding == 0
        uncancelled = [i for i, (_, cancel, _) in enumerate(jobs) if not cancel]
        assert [i for i in admitted if i in uncancelled] == uncancelled  # first come, first served
        assert set(uncancelled) <= set(admitted)

    asyncio.run(go())


def _cancel_after(task: asyncio.Task[None], turns: int) -> None:
    async def later() -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()

    asyncio.ensure_future(later())
