"""The node database's group commit (``lucid.node.db.group_commit``): every waiter hears its own item's
fate exactly once, groups never exceed their size, a failed write stores and confirms nothing of its group."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lucid.node.db.group_commit import drain_groups, group_failed
from lucid.node.errors import GroupCommitError


class Refused(Exception):
    pass


@settings(max_examples=60, deadline=None)
@given(plan=st.lists(st.sampled_from(["ok", "refuse", "fail"]), min_size=1, max_size=40),
       max_group=st.integers(1, 7), late=st.integers(0, 10))
def test_each_waiter_hears_its_own_fate_once(plan: list[str], max_group: int, late: int) -> None:
    async def go() -> None:
        stored: list[int] = []
        groups: list[list[int]] = []
        committed: list[list[int]] = []
        queue: list[tuple[int, asyncio.Future[None]]] = []
        loop = asyncio.get_running_loop()

        async def write(batch: list[tuple[int, Any]]) -> dict[int, BaseException]:
            await asyncio.sleep(0)  # others queue meanwhile
            ids = [i for i, _ in batch]
            groups.append(ids)
            if any(plan[i] == "fail" for i in ids):
                raise OSError("disk full")  # one transaction: nothing of this group is stored
            stored.extend(i for i in ids if plan[i] == "ok")
            return {n: Refused(str(i)) for n, i in enumerate(ids) if plan[i] == "refuse"}

        futures = [loop.create_future() for _ in plan]
        early = len(plan) - min(late, len(plan) - 1)  # a drain starts for a queued item (callers start one)
        queue.extend(zip(range(early), futures))
        drain = asyncio.create_task(drain_groups(queue, max_group, write,
                                                 lambda batch, _: committed.append([i for i, _ in batch])))
        await asyncio.sleep(0)
        queue.extend(zip(range(early, len(plan)), futures[early:]))  # arrive while the drain runs
        await drain
        assert queue == []
        assert all(len(g) <= max_group for g in groups)
        assert sorted(i for g in groups for i in g) == list(range(len(plan)))  # each written once
        failed_groups = [g for g in groups if any(plan[i] == "fail" for i in g)]
        assert sorted(i for g in committed for i in g) == sorted(i for g in groups if g not in failed_groups for i in g)
        for i, fut in enumerate(futures):
            assert fut.done()
            exc = fut.exception()
            in_failed = any(i in g for g in failed_groups)
            if in_failed:
                assert isinstance(exc, GroupCommitError) and "none of them was stored" in exc.message
                assert i not in stored
            elif plan[i] == "refuse":
                assert isinstance(exc, Refused) and str(exc) == str(i)
            else:
                assert exc is None and i in stored

    asyncio.run(go())


def test_a_waiter_that_gave_up_is_left_alone() -> None:
    async def go() -> None:
        loop = asyncio.get_running_loop()
        gone, waiting = loop.create_future(), loop.create_future()
        gone.cancel()
        queue = [(1, gone), (2, waiting)]

        async def write(batch: list[Any]) -> dict[int, BaseException]:
            return {}

        await drain_groups(queue, 10, write)
        assert gone.cancelled() and waiting.result() is None

    asyncio.run(go())


def test_the_group_error_names_the_size_and_keeps_the_cause_out_of_the_message() -> None:
    cause = RuntimeError("password=hunter2 in a driver message")
    error = group_failed(3, cause)
    assert error.error_code == GroupCommitError.error_code
    assert "group of 3" in error.message and "RuntimeError" in error.message and "hunter2" not in error.message
    assert error.__cause__ is cause
