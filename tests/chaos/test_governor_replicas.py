"""Two governor replicas on one etcd: charges decided in the store, blockers answered once.

The reported failure: two governor processes each charged one swarm 200 x 0.1 against a budget of 30; both
ended at "spent 20", 200 charges were lost, 100 were accepted after the budget was gone and the breaker
never tripped. Here two real processes charge concurrently through ``acharge`` and the whole history is
checked: the accepted charges are exactly what the budget allows, each accepted charge saw a distinct
running total (no charge lost or counted twice), the stored total equals the sum accepted, and the breaker
tripped at the charge that emptied the budget."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backends.kv import open_kv
from infrafabric.coordinator import IFCoordinator, keys
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.governor.responder import BlockerResponder

pytestmark = [pytest.mark.etcd, pytest.mark.nats]
ROOT = Path(__file__).resolve().parents[2]

REPLICA = textwrap.dedent("""
    import asyncio, json, sys
    from backends.kv import open_kv
    from infrafabric.errors import CircuitOpenError
    from infrafabric.governor import IFGovernor

    async def main(url, swarm, n, cost):
        kv = open_kv(url)
        async with kv:
            governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
            await governor.load()
            history = []
            async def one(i):
                try:
                    history.append(["ok", str(await governor.acharge(swarm, "op", cost))])
                except CircuitOpenError:
                    history.append(["refused", None])
            await asyncio.gather(*(one(i) for i in range(n)))
            print(json.dumps(history))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
""")


async def _started_coordinators(etcd_server: Any, nats_server: Any, n: int = 3) -> list[IFCoordinator]:
    """A platform and its replicas: ``n`` coordinators on one etcd and one NATS, each started."""
    coords = [IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url, audit=None) for _ in range(n)]
    for c in coords:
        await c.__aenter__()
    return coords


async def _stopped(coords: list[IFCoordinator]) -> None:
    for c in coords:
        await c.__aexit__(None, None, None)


def _governor_knowing(coordinator: IFCoordinator, helper: str, cap: str, blocked: str) -> IFGovernor:
    """A governor replica on ``coordinator`` that knows the helper (with the rare capability) and the
    blocked swarm."""
    governor = IFGovernor(coordinator, audit=None, cost_sink=None)
    governor.register_swarm(SwarmProfile(helper, [cap], 1.0, 1.0, 100.0))
    governor.register_swarm(SwarmProfile(blocked, ["code:python"], 1.0, 1.0, 100.0))
    return governor


async def test_two_replicas_charging_one_budget_never_overspend_or_lose_a_charge(etcd_server, tmp_path) -> None:
    swarm = f"shared-{uuid.uuid4().hex[:8]}"
    kv = open_kv(etcd_server.url)
    async with kv:
        setup = IFGovernor(kv=kv, audit=None, cost_sink=None)
        setup.register_swarm(SwarmProfile(swarm, ["code:python"], 1.0, 1.0, 30.0))
        await setup.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        procs = [subprocess.Popen([sys.executable, "-c", REPLICA, etcd_server.url, swarm, "200", "0.1"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
        histories = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            histories.append(json.loads(out))
        (tmp_path / "history.json").write_text(json.dumps(histories))  # kept with the test's artifacts
        accepted = [Decimal(r) for h in histories for kind, r in h if kind == "ok"]
        refused = sum(1 for h in histories for kind, _ in h if kind == "refused")
        assert len(accepted) == 300 and refused == 100
        assert sorted(accepted) == sorted(Decimal(30) - Decimal("0.1") * k for k in range(1, 301))  # each total once
        stored = json.loads((await kv.get(f"/governor/budgets/{swarm}")).value)  # type: ignore[union-attr]
        assert Decimal(stored["spent"]) == Decimal("30.0") == sum(Decimal("0.1") for _ in accepted)
        breaker = json.loads((await kv.get(f"/governor/breakers/{swarm}")).value)  # type: ignore[union-attr]
        assert breaker["state"] == "open" and breaker["reason"] == "budget_exhausted"


async def test_two_responders_answer_one_blocker_once(etcd_server, nats_server) -> None:
    blocked, helper = f"blocked-{uuid.uuid4().hex[:6]}", f"helper-{uuid.uuid4().hex[:6]}"
    replicas = []
    for _ in range(2):
        coordinator = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url, audit=None)
        await coordinator.__aenter__()
        governor = IFGovernor(coordinator, ResourcePolicy(), audit=None, cost_sink=None)
        for name, caps in ((blocked, ["code:python"]), (helper, ["integration:sip"])):
            governor.register_swarm(SwarmProfile(name, caps, 1.0, 1.0, 10.0))
        replicas.append((coordinator, governor, await BlockerResponder(governor).start()))
    watcher = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url, audit=None)
    await watcher.__aenter__()
    try:
        helper_inbox = await watcher.register_swarm(helper, ["integration:sip"])
        event = await watcher.detect_blocker(blocked, {"required_capabilities": ["integration:sip"]})
        first = await asyncio.wait_for(helper_inbox.get(), 10)
        assert first["type"] == "help_request" and first["blocked_swarm"] == blocked
        deadline = asyncio.get_running_loop().time() + 10
        while any(r.events_handled < 1 for _, _, r in replicas):  # both replicas have finished with the event
            assert asyncio.get_running_loop().time() < deadline, "a replica never handled the blocker event"
            await asyncio.sleep(0.01)
        answers = [r.assignments.get_nowait() for _, _, r in replicas if not r.assignments.empty()]
        assert len(answers) == 1 and answers[0]["blocker_id"] == event["blocker_id"] and answers[0]["team"] == [helper]
        assert helper_inbox.empty()  # one help_request was pushed (pushes are delivered before they return)
    finally:
        for coordinator, governor, responder in replicas:
            await responder.stop()
            await governor.close()
            await coordinator.close()
        await watcher.close()


async def test_a_replica_sees_other_replicas_changes_and_only_live_swarms(etcd_server, nats_server) -> None:
    """Replica A follows the store: a swarm registered through replica B becomes choosable, an operator's
    breaker reset made elsewhere is seen, and a swarm whose process died drops out within its lease TTL."""
    tag = uuid.uuid4().hex[:6]
    helper, other = f"late-{tag}", f"dying-{tag}"
    kv_a, kv_b = open_kv(etcd_server.url), open_kv(etcd_server.url)
    async with kv_a, kv_b:
        a = IFGovernor(kv=kv_a, audit=None, cost_sink=None)
        await a.load()
        await a.follow()
        b = IFGovernor(kv=kv_b, audit=None, cost_sink=None)
        swarms = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url, audit=None, claim_ttl=2)
        async with swarms:
            for name in (helper, other):
                b.register_swarm(SwarmProfile(name, [f"rare:{tag}"], 1.0, 1.0, 10.0))
                await swarms.register_swarm(name, [f"rare:{tag}"])
            await b.flush()

            async def until(condition, what: str, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
                deadline = asyncio.get_running_loop().time() + seconds
                while not condition():
                    assert asyncio.get_running_loop().time() < deadline, what
                    await asyncio.sleep(0.02)

            await until(lambda: a.find_qualified_swarm([f"rare:{tag}"], 5) is not None,
                        "a swarm registered through another replica never became choosable")
            await b.acharge(helper, "op", 10)  # empties its budget: the breaker trips in the store
            await until(lambda: not a.is_available(helper), "the trip made on replica B was not seen")
            await swarms.abandon_swarm(other)  # its process dies: no more lease refreshes
            await until(lambda: a.find_qualified_swarm([f"rare:{tag}"], 5) is None,
                        "a dead swarm was still chosen after its lease TTL", seconds=10)
        await a.close()
        await b.close()


async def test_a_hung_helper_is_passed_over_within_a_bounded_time(etcd_server, nats_server) -> None:
    """The cheapest helper's process is frozen (SIGSTOP): its push times out, the failure is recorded
    against it, and the next best helper gets the work; the blocked swarm is not stalled."""
    import signal

    tag = uuid.uuid4().hex[:6]
    cap, hung, spare, blocked = f"rare:{tag}", f"hung-{tag}", f"spare-{tag}", f"blocked-{tag}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "infrafabric.coordinator.worker", "--swarm-id", hung,
                             "--capabilities", cap, "--kv", etcd_server.url, "--bus", nats_server.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    coordinator = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url, audit=None)
    try:
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["event"] == "ready"
        proc.send_signal(signal.SIGSTOP)
        async with coordinator:
            spare_inbox = await coordinator.register_swarm(spare, [cap])
            governor = IFGovernor(coordinator, ResourcePolicy(), audit=None, cost_sink=None)
            governor.register_swarm(SwarmProfile(hung, [cap], 1.0, 1.0, 10.0))  # cheaper: chosen first
            governor.register_swarm(SwarmProfile(spare, [cap], 2.0, 1.0, 10.0))
            governor.register_swarm(SwarmProfile(blocked, ["code:python"], 1.0, 1.0, 10.0))
            started = asyncio.get_running_loop().time()
            team = await governor.request_help_for_blocker(blocked, {"required_capabilities": [cap]})
            assert team == [spare]
            assert asyncio.get_running_loop().time() - started < 10
            assert (await asyncio.wait_for(spare_inbox.get(), 5))["blocked_swarm"] == blocked
            assert governor.circuit_breaker_status(hung)["consecutive_failures"] == 1
            await governor.close()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


async def test_a_blocker_whose_event_was_lost_is_still_answered_once(etcd_server, nats_server) -> None:
    """The reporter's replica was cut from NATS: the blocker is in etcd but its event never went out.
    The responders' sweep finds it and exactly one of them answers it."""
    import json as _json
    import time as _time
    import uuid as _uuid

    from infrafabric.coordinator import keys

    tag = _uuid.uuid4().hex[:6]
    cap, helper, blocked = f"rare:{tag}", f"helper-{tag}", f"blocked-{tag}"
    coords = await _started_coordinators(etcd_server, nats_server)
    try:
        platform = coords[0]
        inbox = await platform.register_swarm(helper, [cap])
        await platform.register_swarm(blocked, ["code:python"])
        responders = []
        for c in coords[1:]:
            governor = _governor_knowing(c, helper, cap, blocked)
            responders.append(await BlockerResponder(governor, sweep_interval=0.2, sweep_after=0.3).start())
        answers: list[str] = []
        await platform.bus.subscribe(keys.HELP_EVENTS, lambda m: answers.append(_json.loads(m.data)["blocker_id"]))
        blocker_id = _uuid.uuid4().hex  # persisted as report_blocker does, but the event is never published
        event = {"type": "blocker_detected", "blocker_id": blocker_id, "swarm_id": blocked,
                 "blocker_info": {"required_capabilities": [cap]}, "timestamp": _time.time()}
        lease = await platform.core.session_lease(blocked)
        await platform.kv.put(keys.blocker_key(blocked, blocker_id), _json.dumps(event), lease=lease)
        task = await asyncio.wait_for(inbox.get(), 10)
        assert task["type"] == "help_request" and task["id"] == keys.help_task_id(blocker_id, helper)
        deadline = asyncio.get_running_loop().time() + 2
        while answers.count(blocker_id) < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # three more sweep rounds of both responders: still one answer
        assert answers.count(blocker_id) == 1 and inbox.empty()
        assert sum(r.swept for r in responders) == 1
        for r in responders:
            await r.stop()
            await r.governor.close()
    finally:
        await _stopped(coords)


@pytest.mark.parametrize("failure", ["raises", "outlives its claim"])
async def test_a_replica_failing_half_way_through_an_answer_leaves_it_to_another(etcd_server, nats_server,
                                                                                 failure: str) -> None:
    """Replica A wins the blocker's answer key, then loses etcd while assembling the team ("raises"), or
    takes longer than its claim lasts ("outlives its claim"). Its claim lapses, replica B's sweep answers
    the blocker, and exactly one answer is announced: A, late, sees the claim is no longer its own."""
    tag = uuid.uuid4().hex[:6]
    cap, helper, blocked = f"rare:{tag}", f"helper-{tag}", f"blocked-{tag}"
    coords = await _started_coordinators(etcd_server, nats_server)
    responders: list[BlockerResponder] = []
    release = asyncio.Event()
    try:
        platform = coords[0]
        inbox = await platform.register_swarm(helper, [cap])
        await platform.register_swarm(blocked, ["code:python"])
        for i, c in enumerate(coords[1:]):
            governor = _governor_knowing(c, helper, cap, blocked)
            # A hears the event at once and does not sweep; B only sweeps, after A's claim could lapse
            responder = BlockerResponder(governor, sweep_interval=0 if i == 0 else 0.3, sweep_after=0.3,
                                         answering_ttl=2)
            responders.append(await responder.start())
        a, b = responders
        await b._sub.unsubscribe()  # type: ignore[union-attr] - B answers only what it finds pending
        b._sub = None
        real_request = a.governor.request_help_for_blocker

        async def failing(*args: Any, **kwargs: Any) -> list[str]:
            if failure == "raises":
                raise ConnectionError("etcd unreachable")
            await release.wait()  # held past its claim's lease
            return await real_request(*args, **kwargs)

        a.governor.request_help_for_blocker = failing  # type: ignore[method-assign]
        answers: list[str] = []
        await platform.bus.subscribe(keys.HELP_EVENTS, lambda m: answers.append(json.loads(m.data)["blocker_id"]))
        event = await platform.detect_blocker(blocked, {"required_capabilities": [cap]})
        blocker_id = event["blocker_id"]
        task = await asyncio.wait_for(inbox.get(), 15)  # B's sweep, after A's claim lapsed
        assert task["type"] == "help_request" and task["id"] == keys.help_task_id(blocker_id, helper)
        deadline = asyncio.get_running_loop().time() + 5
        while answers.count(blocker_id) < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert answers.count(blocker_id) == 1 and b.swept >= 1  # (the etcd is shared: others' blockers too)
        release.set()  # A finishes its late answer now: it must not announce a second one
        deadline = asyncio.get_running_loop().time() + 10
        while a.events_handled < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert a.events_handled == 1 and a.assignments.empty()
        await a.bus.flush()  # whatever A published has reached the server, and then the subscriber
        await platform.bus.flush()
        assert answers.count(blocker_id) == 1
        record = await platform.kv.get(f"/governor/answers/{blocker_id}")
        assert record is not None and record.value.startswith(b"answered:answering:" + b.replica_id.encode())
    finally:
        release.set()
        for r in responders:
            await r.stop()
            await r.governor.close()
        await _stopped(coords)


@pytest.mark.parametrize("lost", ["publish fails", "replica dies before publishing"])
async def test_an_answer_whose_announcement_the_bus_never_took_is_announced_by_the_sweep(
        etcd_server, nats_server, lost: str) -> None:
    """Replica A answers the blocker (its team is assigned, the answer committed) but its announcement never
    reaches NATS: the publish fails (A was cut from the bus), or A stops between its answer and its publish.
    The announcement was stored with the answer, so B's sweep announces it: the blocked swarm hears its
    team exactly once, and nothing is left stored."""
    tag = uuid.uuid4().hex[:6]
    cap, helper, blocked = f"rare:{tag}", f"helper-{tag}", f"blocked-{tag}"
    coords = await _started_coordinators(etcd_server, nats_server)
    responders: list[BlockerResponder] = []
    try:
        platform = coords[0]
        inbox = await platform.register_swarm(helper, [cap])
        await platform.register_swarm(blocked, ["code:python"])
        for i, c in enumerate(coords[1:]):
            governor = _governor_knowing(c, helper, cap, blocked)
            responders.append(await BlockerResponder(governor, sweep_interval=0 if i == 0 else 0.2,
                                                     sweep_after=0.3).start())
        a, b = responders
        await b._sub.unsubscribe()  # type: ignore[union-attr] - only A hears the event: A answers it
        b._sub = None
        announced = asyncio.Event()

        async def cut(subject: str, data: bytes) -> None:
            if lost == "publish fails":
                raise ConnectionError("nats unreachable")
            announced.set()
            await asyncio.Event().wait()  # "dies": never returns, never publishes

        a.bus.publish = cut  # type: ignore[method-assign]
        answers: list[str] = []
        await platform.bus.subscribe(keys.HELP_EVENTS, lambda m: answers.append(json.loads(m.data)["blocker_id"]))
        event = await platform.detect_blocker(blocked, {"required_capabilities": [cap]})
        blocker_id = event["blocker_id"]
        task = await asyncio.wait_for(inbox.get(), 10)  # A assigned the team
        assert task["id"] == keys.help_task_id(blocker_id, helper)
        deadline = asyncio.get_running_loop().time() + 10
        while answers.count(blocker_id) < 1 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.8)  # more sweep rounds: still one announcement
        await platform.bus.flush()
        assert answers.count(blocker_id) == 1 and b.reannounced >= 1 and inbox.empty()
        assert await platform.kv.get(f"/governor/announce/{blocker_id}") is None
        assert a.assignments.qsize() == 1  # A did answer (its team is the one announced)
    finally:
        for r in responders:
            for t in list(r._tasks):
                t.cancel()
            r._tasks.clear()
            await r.stop()
            await r.governor.close()
        await _stopped(coords)
