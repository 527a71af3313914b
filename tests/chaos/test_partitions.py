"""Governor replicas charging one budget while the network partitions: a history checked as a whole.

Each etcd member, and each replica process, runs in a network namespace of its own (``backends.servers.netlab``).
The faults are real partitions: the leader is cut off from every other node, a replica is cut off from the
leader, then everything heals. Each replica records every charge: when it was invoked, when it completed,
and how (accepted with the running total it produced, refused because the breaker is open, or outcome
unknown). The checker then holds the whole history to the ledger's invariants, as Jepsen's checkers do:

* no accepted charge ever took the total past the budget (no overspend);
* every accepted charge produced a distinct running total (no charge lost, none counted twice);
* the stored total is at least the accepted charges and at most accepted + unknown ones (nothing applied that
  nobody asked for);
* the breaker is open once the budget is spent.

The history of a failing run is kept as ``history.json`` in the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from backends.kv import open_kv
from backends.servers.etcd import EtcdCluster
from backends.servers.netlab import NetLab, netlab_available
from benchmarks.chaos_ledger import check_ledger, collect, read_ledger, seed_ledger, start_replicas
from infrafabric.governor import IFGovernor, SwarmProfile
from tests.fixtures.processes import terminate_all

pytestmark = [pytest.mark.etcd, pytest.mark.skipif(not netlab_available(), reason="needs root for network namespaces")]
ROOT = Path(__file__).resolve().parents[2]

def test_the_checker_finds_what_it_should() -> None:
    """The checker itself, on histories built to break each invariant."""
    ok = [["r", i, 0, 0, "ok", str(Decimal("3") - Decimal("0.1") * (i + 1))] for i in range(30)]
    assert check_ledger(ok, Decimal(3), Decimal("0.1"), Decimal("3.0"), True) == []
    assert "overspent" in check_ledger(ok + [["r", 99, 0, 0, "ok", "-0.1"]], Decimal(3), Decimal("0.1"),
                                       Decimal("3.1"), True)[0]
    assert "twice" in check_ledger(ok + [ok[0]], Decimal(3), Decimal("0.1"), Decimal("3.0"), True)[0]
    assert "outside" in check_ledger(ok[:10], Decimal(3), Decimal("0.1"), Decimal("3.0"), True)[0]
    assert "closed" in check_ledger(ok, Decimal(3), Decimal("0.1"), Decimal("3.0"), False)[0]


@pytest.mark.slow
def test_two_replicas_under_partitions_keep_the_ledger(tmp_path: Path) -> None:
    budget, cost, per_replica = Decimal(200), Decimal("0.1"), 1500  # long enough to span every fault
    swarm = f"part-{uuid.uuid4().hex[:8]}"
    with NetLab() as lab:
        members = [lab.add_node(f"e{i}") for i in range(3)]
        for i in range(2):  # the replicas' namespaces (start_replicas runs one process in each)
            lab.add_node(f"r{i}")
        cluster = EtcdCluster(3, placements=[(m.ip, m.exec_prefix()) for m in members]).start()
        try:
            seed_ledger(cluster.url, swarm, budget)
            procs = start_replicas(lab, cluster.url, swarm, per_replica, cost)
            faults: list[tuple[float, str]] = []

            def schedule() -> None:  # the faults, while the replicas charge
                leader = cluster.leader_index()
                time.sleep(0.3)
                lab.isolate(f"e{leader}")
                faults.append((time.time(), f"isolate leader e{leader}"))
                time.sleep(1.5)
                lab.heal_all()
                faults.append((time.time(), "heal"))
                leader = cluster.leader_index(timeout=10)
                lab.cut("r0", f"e{leader}")
                faults.append((time.time(), f"cut r0 from leader e{leader}"))
                time.sleep(1.0)
                lab.heal_all()
                faults.append((time.time(), "heal"))

            nemesis = threading.Thread(target=schedule)
            nemesis.start()
            history = collect(procs, timeout=240)
            nemesis.join()

            spent, breaker_open = read_ledger(cluster.url, swarm)
            (tmp_path / "history.json").write_text(json.dumps({"faults": faults, "history": history,
                                                               "stored_spent": str(spent)}))
            violations = check_ledger(history, budget, cost, spent, breaker_open)
            assert not violations, f"{violations} (history: {tmp_path / 'history.json'})"
            kinds = {h[4] for h in history}
            assert "ok" in kinds and "refused" in kinds and len(faults) == 4
        finally:
            cluster.stop()


@pytest.mark.slow
def test_a_replica_cut_from_nats_leaves_blockers_to_the_other_and_each_is_answered_once(tmp_path: Path) -> None:
    """Two ``coordinator serve`` replicas in their own namespaces; one is cut from the NATS server. Every
    blocker raised meanwhile is answered by the other, exactly once each; after healing, both answer,
    still exactly once per blocker."""
    from backends.servers.nats import NatsServer
    from infrafabric.coordinator import IFCoordinator, keys

    tag = uuid.uuid4().hex[:6]
    cap, helper, blocked = f"rare:{tag}", f"helper-{tag}", f"blocked-{tag}"
    with NetLab() as lab:
        member, bus_node = lab.add_node("e0"), lab.add_node("nats")
        replicas = [lab.add_node(f"r{i}") for i in range(2)]
        cluster = EtcdCluster(1, placements=[(member.ip, member.exec_prefix())]).start()
        nats = NatsServer(jetstream=False, host=bus_node.ip, wrapper=bus_node.exec_prefix()).start()
        serves: list[subprocess.Popen[str]] = []
        try:
            async def setup() -> None:
                async with open_kv(cluster.url) as kv:
                    governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
                    governor.register_swarm(SwarmProfile(helper, [cap], 1.0, 1.0, 100.0))
                    governor.register_swarm(SwarmProfile(blocked, ["code:python"], 1.0, 1.0, 100.0))
                    await governor.close()

            asyncio.run(setup())
            env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFRAFABRIC_WITNESS_URL": "memory://",
                   "INFRAFABRIC_HOME": str(tmp_path)}
            for r in replicas:
                serves.append(subprocess.Popen(
                    [*r.exec_prefix(), sys.executable, "-c", "from infrafabric.cli.main import app; app()",
                     "coordinator", "serve", "--kv", cluster.url, "--bus", nats.url, "--duration", "60"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
            for serve in serves:
                assert serve.stdout is not None and "coordinator serving" in serve.stdout.readline()

            async def until_connected(ip: str) -> None:
                from backends.servers.probe import http_get

                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    status, body = await asyncio.to_thread(http_get, f"{nats.monitor_url}/connz", timeout=1)
                    if status == 200 and any(c.get("ip") == ip for c in json.loads(body).get("connections", [])):
                        return
                    assert asyncio.get_running_loop().time() < deadline, f"{ip} never reconnected to NATS"
                    await asyncio.sleep(0.1)

            async def scenario() -> dict[str, int]:
                answers: dict[str, int] = {}
                async with IFCoordinator(kv_url=cluster.url, bus_url=nats.url, audit=None) as platform:
                    inbox = await platform.register_swarm(helper, [cap])
                    await platform.bus.subscribe(keys.HELP_EVENTS, lambda m: answers.__setitem__(
                        json.loads(m.data)["blocker_id"], answers.get(json.loads(m.data)["blocker_id"], 0) + 1))
                    raised = []
                    lab.cut("r0", "nats")  # replica 0 hears no blocker events now
                    for phase in ("cut", "healed"):
                        for _ in range(5):
                            event = await platform.detect_blocker(blocked, {"required_capabilities": [cap]})
                            raised.append(event["blocker_id"])
                            task = await asyncio.wait_for(inbox.get(), 15)
                            assert task["blocked_swarm"] == blocked
                        if phase == "cut":
                            lab.heal_all()
                            await until_connected(replicas[0].ip)  # replica 0 back on the bus
                    deadline = asyncio.get_running_loop().time() + 10
                    while len(answers) < len(raised) and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.05)
                    assert inbox.empty(), "a blocker's helper was pushed more than once"
                    return {b: answers.get(b, 0) for b in raised}

            counts = asyncio.run(scenario())
            assert sorted(counts.values()) == [1] * 10, counts
        finally:
            terminate_all(serves)
            nats.stop()
            cluster.stop()


def test_netlab_cuts_and_heals_only_what_it_is_told(tmp_path: Path) -> None:
    """The harness itself: a cut drops traffic between two nodes in both directions and nothing else;
    heal restores it; the observer (root namespace) reaches every node throughout."""
    import socket

    with NetLab() as lab:
        a, b, c = (lab.add_node(n) for n in ("a", "b", "c"))
        servers = {n.name: subprocess.Popen(
            [*n.exec_prefix(), sys.executable, "-c",
             "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
             f"s.bind(('{n.ip}',7000));s.listen(16);print('up',flush=True)\n"
             "while True:\n c,_=s.accept();c.close()"], stdout=subprocess.PIPE, text=True) for n in (a, b, c)}
        try:
            for proc in servers.values():
                assert proc.stdout is not None and proc.stdout.readline().strip() == "up"

            def reach(src: "object | None", dst: "object") -> bool:
                code = f"import socket\ns=socket.socket();s.settimeout(0.5)\ntry:\n s.connect(('{dst.ip}',7000));print('yes')\nexcept OSError:\n print('no')"  # type: ignore[attr-defined]
                argv = [sys.executable, "-c", code]
                if src is not None:
                    argv = [*src.exec_prefix(), *argv]  # type: ignore[attr-defined]
                return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() == "yes"

            assert reach(a, b) and reach(b, a) and reach(a, c)
            lab.cut("a", "b")
            assert not reach(a, b) and not reach(b, a)
            assert reach(a, c) and reach(c, b) and reach(None, a) and reach(None, b)
            lab.heal("a", "b")
            assert reach(a, b) and reach(b, a)
            lab.isolate("c")
            assert not reach(a, c) and not reach(c, b) and reach(None, c) and reach(a, b)
        finally:
            for proc in servers.values():
                proc.kill()
                proc.wait()
    assert not any(lab.nodes)  # close() removed its namespaces
