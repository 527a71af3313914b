"""Exactly one winner per task on a real 3-member etcd cluster while members are paused or killed."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from backends.errors import BackendError
from infrafabric.coordinator import IFCoordinator

pytestmark = [pytest.mark.chaos, pytest.mark.etcd, pytest.mark.slow]

TASKS, CLAIMANTS = 100, 10
ERRORS: list[str] = []


async def claim_with_retries(coordinator: IFCoordinator, swarm_id: str, task_id: str) -> bool:
    """What a real swarm does: retry on engine errors; re-claiming one's own task is idempotent."""
    for _ in range(60):
        try:
            return await coordinator.claim_task(swarm_id, task_id)
        except BackendError as exc:
            ERRORS.append(f"{swarm_id} {task_id}: {exc!r}")
            await asyncio.sleep(0.1)
    raise AssertionError(f"{swarm_id} could not reach the cluster for {task_id}")


async def run_race(coordinator: IFCoordinator, during=None) -> tuple[list[str], list[list[bool]]]:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:6]
    task_ids = [f"chaos-{run}-{i}" for i in range(TASKS)]
    for task_id in task_ids:
        for _ in range(60):
            try:
                await coordinator.announce_task(task_id)
                break
            except BackendError:
                await asyncio.sleep(0.1)

    async def one_task(i: int, task_id: str) -> list[bool]:
        if during is not None and i == TASKS // 3:
            await during()
        return list(await asyncio.gather(
            *[claim_with_retries(coordinator, f"swarm-{j}", task_id) for j in range(CLAIMANTS)]))

    results = []
    for i, task_id in enumerate(task_ids):  # tasks in sequence, claimants of each task concurrently
        results.append(await one_task(i, task_id))
    return task_ids, results


async def check_exactly_one_winner(coordinator: IFCoordinator, task_ids: list[str], results: list[list[bool]]) -> None:
    for task_id, outcome in zip(task_ids, results):
        if sum(outcome) != 1:
            kv = await coordinator.kv.get(f"/tasks/{task_id}/owner")
            ERRORS.append(f"owner now: {kv}")
        assert sum(outcome) == 1, f"{task_id}: {sum(outcome)} winners; errors: {ERRORS[:20]}"
        owner = None
        for _ in range(60):
            try:
                owner = await coordinator.task_owner(task_id)
                break
            except BackendError:
                await asyncio.sleep(0.1)
        assert owner == f"swarm-{outcome.index(True)}", f"{task_id}: store says {owner}"


async def test_claims_with_a_paused_follower(etcd_cluster) -> None:  # type: ignore[no-untyped-def]
    coordinator = IFCoordinator(kv_url=etcd_cluster.url + "?timeout=1", bus_url="memory://")
    try:
        leader = etcd_cluster.leader_index()
        follower = (leader + 1) % 3
        etcd_cluster.pause(follower)
        try:
            task_ids, results = await run_race(coordinator)
        finally:
            etcd_cluster.resume(follower)
        await check_exactly_one_winner(coordinator, task_ids, results)
    finally:
        await coordinator.close()


async def test_claims_while_the_leader_is_killed_mid_run(etcd_cluster) -> None:  # type: ignore[no-untyped-def]
    coordinator = IFCoordinator(kv_url=etcd_cluster.url + "?timeout=1", bus_url="memory://")
    killed: list[int] = []

    async def kill_leader() -> None:
        index = etcd_cluster.leader_index()
        etcd_cluster.kill(index)
        killed.append(index)

    try:
        task_ids, results = await run_race(coordinator, during=kill_leader)
        assert killed, "the leader was never killed"
        await check_exactly_one_winner(coordinator, task_ids, results)
        new_leader = etcd_cluster.leader_index()
        assert new_leader != killed[0]
    finally:
        await coordinator.close()
