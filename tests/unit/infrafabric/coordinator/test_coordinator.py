"""IF.coordinator (seed 002 unit tests, made real), on the embedded backend and on etcd + NATS."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from infrafabric.coordinator import IFCoordinator
from infrafabric.errors import (
    InvalidCapabilityError,
    NotTaskOwnerError,
    StaleClaimError,
    SwarmQueueFullError,
    UnknownSwarmError,
)
from tests.fixtures.coordinator_fixtures import CoordinatorFactory, unique


@pytest.mark.critical
async def test_atomic_task_claiming(coordinator: IFCoordinator) -> None:
    """CRITICAL: two swarms cannot claim the same task (bug #1)."""
    await coordinator.register_swarm("swarm-1", capabilities=["code:rust"])
    await coordinator.register_swarm("swarm-2", capabilities=["code:rust"])
    task_id = unique("task-abc123")
    coordinator.etcd.put(f"/tasks/{task_id}/owner", "unclaimed")

    results = await asyncio.gather(
        coordinator.claim_task("swarm-1", task_id), coordinator.claim_task("swarm-2", task_id)
    )
    assert sum(results) == 1, "Atomic CAS failed - both claimed task!"
    owner = coordinator.etcd.get(f"/tasks/{task_id}/owner")[0].decode()
    assert owner in ["swarm-1", "swarm-2"]
    assert owner == ("swarm-1" if results[0] else "swarm-2")


@pytest.mark.critical
async def test_push_latency_under_10ms(coordinator: IFCoordinator) -> None:
    queue = await coordinator.register_swarm("swarm-test", [])
    task = {"id": "test-task", "action": "noop"}
    start = time.perf_counter()
    await coordinator.push_task_to_swarm("swarm-test", task)
    latency_ms = (time.perf_counter() - start) * 1000
    assert latency_ms < 10, f"Latency {latency_ms}ms exceeds 10ms SLO"
    assert queue.get_nowait() == task  # delivered before push returned


@pytest.mark.critical
async def test_blocker_detection_immediate(coordinator: IFCoordinator) -> None:
    orchestrator_queue = await coordinator.register_swarm("orchestrator", [])
    start = time.perf_counter()
    await coordinator.detect_blocker(
        swarm_id="session-4-sip", blocker_info={"reason": "missing_dependency", "details": "..."}
    )
    blocker_event = await asyncio.wait_for(orchestrator_queue.get(), timeout=0.1)
    latency_ms = (time.perf_counter() - start) * 1000
    assert blocker_event["type"] == "blocker_detected"
    assert blocker_event["swarm_id"] == "session-4-sip"
    assert blocker_event["blocker_info"]["reason"] == "missing_dependency"
    assert latency_ms < 10, f"Blocker notification took {latency_ms}ms"
    pending = await coordinator.pending_blockers()
    assert any(b["blocker_id"] == blocker_event["blocker_id"] for b in pending)


async def test_scalability_1000_swarms(coordinator: IFCoordinator) -> None:
    prefix = unique("swarm")
    await asyncio.gather(*[coordinator.register_swarm(f"{prefix}-{i}", [f"cap-{i % 10}"]) for i in range(1000)])
    assert len(coordinator.swarm_connections) == 1000
    stored = await coordinator.kv.get_prefix("/swarms/")
    assert sum(1 for kv in stored if kv.key.startswith(f"/swarms/{prefix}-")) == 1000


async def test_registration_is_visible_in_the_store(coordinator: IFCoordinator) -> None:
    await coordinator.register_swarm("test-swarm", ["test:capability"])
    value, _meta = coordinator.etcd.get("/swarms/test-swarm/capabilities")
    assert value is not None and "test:capability" in json.loads(value.decode())


async def test_push_to_unknown_swarm_is_an_error(coordinator: IFCoordinator) -> None:
    with pytest.raises(UnknownSwarmError):
        await coordinator.push_task_to_swarm(unique("nobody"), {"id": "t-1"})


@pytest.mark.parametrize(
    "bad_id",
    ["task-123; rm -rf /", "../etc/passwd", "a b", "", "x" * 129, "task\n1", "$(reboot)", "t*", "t>", None, 7],
)
async def test_bad_task_ids_are_refused_and_write_nothing(coordinator: IFCoordinator, bad_id: object) -> None:
    queue = await coordinator.register_swarm("swarm-1", [])
    before = (await coordinator.kv.status())["revision"]
    with pytest.raises(ValueError):
        await coordinator.push_task_to_swarm("swarm-1", {"id": bad_id, "action": "execute"})
    with pytest.raises(ValueError):
        await coordinator.claim_task("swarm-1", bad_id)  # type: ignore[arg-type]
    assert queue.empty()
    assert (await coordinator.kv.status())["revision"] == before


async def test_bad_swarm_ids_and_capabilities_are_refused(coordinator: IFCoordinator) -> None:
    before = (await coordinator.kv.status())["revision"]
    with pytest.raises(ValueError):
        await coordinator.register_swarm("swarm; rm -rf /", [])
    with pytest.raises(InvalidCapabilityError):
        await coordinator.register_swarm("swarm-ok", ["not a capability"])
    with pytest.raises(ValueError):
        await coordinator.detect_blocker("../../x", {"reason": "r"})
    assert (await coordinator.kv.status())["revision"] == before
    assert "swarm-ok" not in coordinator.swarm_connections


async def test_reclaim_by_owner_is_idempotent_and_others_lose(coordinator: IFCoordinator) -> None:
    task_id = unique("task")
    await coordinator.announce_task(task_id)
    assert await coordinator.claim_task("a", task_id) is True
    assert await coordinator.claim_task("a", task_id) is True
    assert await coordinator.claim_task("b", task_id) is False
    assert await coordinator.task_owner(task_id) == "a"


async def test_claim_of_never_announced_task_is_exclusive(coordinator: IFCoordinator) -> None:
    task_id = unique("fresh")
    results = await asyncio.gather(*[coordinator.claim_task(f"s{i}", task_id) for i in range(5)])
    assert sum(results) == 1


async def test_completion_is_fenced_by_the_claim(coordinator: IFCoordinator) -> None:
    task_id = unique("task")
    await coordinator.announce_task(task_id)
    claim = await coordinator.claim("a", task_id)
    assert claim is not None
    await coordinator.update_task_progress("a", task_id, {"pct": 50})
    await coordinator.complete_task("a", task_id, {"answer": 42})
    assert await coordinator.task_owner(task_id) == "completed:a"
    result, _ = coordinator.etcd.get(f"/tasks/{task_id}/result")
    assert json.loads(result) == {"answer": 42}  # type: ignore[arg-type]
    with pytest.raises(StaleClaimError):  # the old token no longer matches the owner key
        await coordinator.complete_task("a", task_id, {"answer": 43}, claim=claim)
    with pytest.raises(NotTaskOwnerError):
        await coordinator.complete_task("b", task_id, {})
    result, _ = coordinator.etcd.get(f"/tasks/{task_id}/result")
    assert json.loads(result) == {"answer": 42}  # type: ignore[arg-type]


@pytest.mark.critical
async def test_lease_expiry_frees_an_abandoned_task_and_fences_the_old_owner(
    make_coordinator: CoordinatorFactory,
) -> None:
    coordinator = await make_coordinator(claim_ttl=1)
    task_id = unique("task")
    await coordinator.announce_task(task_id)
    old = await coordinator.claim("crashy", task_id)
    assert old is not None
    assert await coordinator.claim_task("other", task_id) is False
    await coordinator.abandon_swarm("crashy")  # heartbeats stop, as in a crash: nothing is released
    deadline = time.monotonic() + 8
    while not await coordinator.claim_task("other", task_id):
        assert time.monotonic() < deadline, "abandoned task never became claimable"
        await asyncio.sleep(0.1)
    assert await coordinator.task_owner(task_id) == "other"
    with pytest.raises(StaleClaimError):
        await coordinator.complete_task("crashy", task_id, {"late": True}, claim=old)
    with pytest.raises(StaleClaimError):
        await coordinator.update_task_progress("crashy", task_id, {"late": True}, claim=old)
    assert coordinator.etcd.get(f"/tasks/{task_id}/result") == (None, None)


async def test_claims_survive_while_the_owner_heartbeats(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator(claim_ttl=1)
    task_id = unique("task")
    assert await coordinator.claim_task("alive", task_id)
    await asyncio.sleep(2.5)  # > 2 TTLs: only the session keep-alive holds the claim
    assert await coordinator.task_owner(task_id) == "alive"
    assert await coordinator.claim_task("other", task_id) is False


async def test_deregistering_releases_claims_at_once(coordinator: IFCoordinator) -> None:
    await coordinator.register_swarm("leaver", [])
    task_id = unique("task")
    assert await coordinator.claim_task("leaver", task_id)
    await coordinator.deregister_swarm("leaver")
    assert await coordinator.claim_task("stayer", task_id)
    assert "leaver" not in coordinator.swarm_connections


async def test_full_inbox_refuses_instead_of_dropping(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator(queue_maxsize=3)
    queue = await coordinator.register_swarm("small", [])
    for i in range(3):
        await coordinator.push_task_to_swarm("small", {"id": f"t-{i}"})
    with pytest.raises(SwarmQueueFullError):
        await coordinator.push_task_to_swarm("small", {"id": "t-3"})
    assert [queue.get_nowait()["id"] for _ in range(3)] == ["t-0", "t-1", "t-2"]


async def test_push_order_is_preserved(coordinator: IFCoordinator) -> None:
    queue = await coordinator.register_swarm("ordered", [])
    for i in range(200):
        await coordinator.push_task_to_swarm("ordered", {"id": f"t-{i}", "n": i})
    assert [queue.get_nowait()["n"] for _ in range(200)] == list(range(200))


async def test_status_is_healthy(coordinator: IFCoordinator) -> None:
    assert coordinator.etcd.status()["healthy"] is True


async def test_batch_push_is_all_or_nothing(make_coordinator: CoordinatorFactory) -> None:
    coordinator = await make_coordinator(queue_maxsize=5)
    queue = await coordinator.register_swarm("batch", [])
    assert await coordinator.push_tasks_to_swarm("batch", [{"id": f"b-{i}"} for i in range(3)]) == 3
    with pytest.raises(SwarmQueueFullError):
        await coordinator.push_tasks_to_swarm("batch", [{"id": f"c-{i}"} for i in range(3)])
    assert queue.qsize() == 3
    with pytest.raises(ValueError):
        await coordinator.push_tasks_to_swarm("batch", [{"id": "ok"}, {"id": "bad; rm -rf /"}])
    assert [queue.get_nowait()["id"] for _ in range(3)] == ["b-0", "b-1", "b-2"]


async def test_batch_claims_race_to_exactly_one_winner_per_task(coordinator: IFCoordinator) -> None:
    run = unique("batch")
    ids = [f"{run}-{i}" for i in range(50)]
    for task_id in ids[::2]:
        await coordinator.announce_task(task_id)  # half announced as 'unclaimed', half fresh
    outcomes = await asyncio.gather(*[coordinator.claim_tasks(f"swarm-{j}", ids) for j in range(4)])
    for i, task_id in enumerate(ids):
        winners = [j for j in range(4) if outcomes[j][i]]
        assert len(winners) == 1, f"{task_id}: winners {winners}"
        assert await coordinator.task_owner(task_id) == f"swarm-{winners[0]}"
    assert await coordinator.claim_tasks("swarm-0", ids[:3]) == [outcomes[0][i] for i in range(3)]


@pytest.mark.parametrize("bad", [["ok", "bad id"], ["ok", ".."], ["ok", ""], ["a\nb"], ["ok", "x\n"], ["ok", 5]])
async def test_batch_claims_validate_every_id_and_write_nothing(coordinator: IFCoordinator, bad: list) -> None:
    before = (await coordinator.kv.status())["revision"]
    with pytest.raises(ValueError):
        await coordinator.claim_tasks("swarm-1", bad)
    assert (await coordinator.kv.status())["revision"] == before
