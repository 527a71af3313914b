"""Two and three ``coordinator serve --listen`` replicas on a 3-member etcd, under real faults.

Each etcd member, the NATS server and each replica run in a network namespace of their own
(``backends.servers.netlab``). Swarms in the test process work only through the replicas' swarm API,
with their own credentials: they claim and complete a shared pool of tasks and raise blockers that a
helper swarm on another replica answers. Meanwhile a fixed fault schedule runs: the etcd leader is
isolated, a member is paused (SIGSTOP), one replica is cut from every etcd member for longer than the
claim TTL (its swarms' claims expire and others take the tasks over), one replica is cut from NATS, and
the leader is SIGKILLed and restarted. Governor replicas charge one budget in the same namespaces meanwhile
(``benchmarks/chaos_ledger.py``). Every operation is recorded (invocation, completion, outcome) and
the whole history is checked (``benchmarks/chaos_history.py``): no task completed twice or owned by two
swarms at once, the store agrees with the completions, every blocker answered once (announced at least once, always with the one team), no budget
overspent and no charge lost. A failing run's history is kept as ``history.json`` in the test's
temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backends.bus import open_bus
from backends.kv import open_kv
from backends.servers.etcd import EtcdCluster
from backends.servers.nats import NatsServer
from backends.servers.netlab import NetLab, netlab_available
from backends.servers.ports import free_port
from benchmarks.chaos_history import Op, check_blockers, check_claims
from benchmarks.chaos_ledger import check_ledger, collect, read_ledger, seed_ledger, start_replicas
from infrafabric.coordinator import keys
from infrafabric.coordinator.credentials import PUBLIC_FILE, CredentialAuthority
from infrafabric.coordinator.remote import RemoteSwarmClient
from infrafabric.errors import InfraFabricError, NotTaskOwnerError, StaleClaimError
from infrafabric.governor import IFGovernor, SwarmProfile
from tests.fixtures.processes import terminate_all

pytestmark = [pytest.mark.etcd, pytest.mark.skipif(not netlab_available(), reason="needs root for network namespaces")]
ROOT = Path(__file__).resolve().parents[2]
CLAIM_TTL = 3


def test_the_claims_checker_finds_what_it_should() -> None:
    ok = [Op("a", "claim", "t", 0, 1, "won"), Op("a", "complete", "t", 2, 3, "ok")]
    assert check_claims(ok, {"t": "completed:a"}) == []
    assert "twice" in check_claims(ok + [Op("b", "claim", "t", 4, 5, "won"), Op("b", "complete", "t", 6, 7, "ok")],
                                   {"t": "completed:b"})[0]
    assert "held it" in check_claims(ok + [Op("b", "claim", "t", 1.2, 1.8, "won")], {"t": "completed:a"})[0]
    # a win whose interval overlaps the holder's claim or completion is not provably concurrent
    assert check_claims(ok + [Op("b", "claim", "t", 0.5, 1.5, "won")], {"t": "completed:a"}) == []
    assert "store names b" in check_claims(ok + [Op("b", "complete", "t", 2, 3, "unknown")], {"t": "completed:b"})[0]
    assert "never succeeded" in check_claims([Op("a", "claim", "t", 0, 1, "won")], {"t": "completed:a"})[0]
    assert "store holds" in check_claims(ok, {"t": "a"})[0]
    assert "without a won claim" in check_claims([ok[1]], {"t": "completed:a"})[0]
    team, other = ("helper-1",), ("helper-2",)
    assert check_blockers({"b1": "ok"}, 0, {"b1": [team]}) == []
    assert check_blockers({"b1": "ok"}, 0, {"b1": [team, team]}) == []  # announced twice, answered once
    assert "2 different teams" in check_blockers({"b1": "ok"}, 0, {"b1": [team, other]})[0]
    assert "never answered" in check_blockers({"b1": "ok"}, 0, {})[0]
    assert "never answered" in check_blockers({"b1": "ok"}, 0, {"b1": []})[0]
    assert "never reported" in check_blockers({}, 0, {"b9": [team]})[0]
    assert check_blockers({}, 1, {"b9": [team]}) == []  # a report whose answer was lost may still be answered
    assert check_blockers({"b1": "ok"}, 0, {}, {"b1"}) == []  # its reporter's session ended: gone
    assert "never answered" in check_blockers({"b1": "ok", "b2": "ok"}, 0, {}, {"b2"})[0]


class Nemesis(threading.Thread):
    """The fixed fault schedule; every fault and heal recorded with its time."""

    def __init__(self, lab: NetLab, cluster: EtcdCluster, replicas: list[str]) -> None:
        super().__init__(daemon=True)
        self.lab, self.cluster, self.replicas = lab, cluster, replicas
        self.faults: list[tuple[float, str]] = []
        self.error: BaseException | None = None

    def note(self, what: str) -> None:
        self.faults.append((time.time(), what))

    def run(self) -> None:
        try:
            self._schedule()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.lab.heal_all()

    def _schedule(self) -> None:
        lab, cluster = self.lab, self.cluster
        time.sleep(1.0)  # let work start before the first fault
        leader = cluster.leader_index(timeout=10)
        lab.isolate(f"e{leader}")
        self.note(f"isolate leader e{leader}")
        time.sleep(1.5)
        lab.heal_all()
        self.note("heal")
        time.sleep(0.5)
        member = (cluster.leader_index(timeout=10) + 1) % 3
        cluster.pause(member)
        self.note(f"pause e{member}")
        time.sleep(1.5)
        cluster.resume(member)
        self.note(f"resume e{member}")
        time.sleep(0.5)
        for i in range(3):  # longer than the claim TTL: the replica's sessions and claims expire
            lab.cut(self.replicas[0], f"e{i}")
        self.note(f"cut {self.replicas[0]} from every etcd member")
        time.sleep(CLAIM_TTL + 1.5)
        lab.heal_all()
        self.note("heal")
        time.sleep(0.5)
        lab.cut(self.replicas[1], "nats")
        self.note(f"cut {self.replicas[1]} from NATS")
        time.sleep(1.5)
        lab.heal_all()
        self.note("heal")
        time.sleep(0.5)
        leader = cluster.leader_index(timeout=10)
        cluster.kill(leader)
        self.note(f"SIGKILL leader e{leader}")
        time.sleep(1.0)
        cluster.restart(leader, timeout=30)
        self.note(f"restart e{leader}")


def _serve(node: Any, cluster_url: str, nats_url: str, authority_dir: Path, home: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFRAFABRIC_WITNESS_URL": "memory://",
           "INFRAFABRIC_HOME": str(home)}
    proc = subprocess.Popen(
        [*node.exec_prefix(), sys.executable, "-c", "from infrafabric.cli.main import app; app()",
         "coordinator", "serve", "--kv", cluster_url, "--bus", nats_url, "--listen", f"{node.ip}:{port}",
         "--authority-key", str(authority_dir / PUBLIC_FILE), "--claim-ttl", str(CLAIM_TTL), "--duration", "150"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    seen = []
    while "coordinator serving" not in (line := proc.stdout.readline()):
        seen.append(line)
        if not line:
            raise RuntimeError(f"replica on {node.name} did not start: {''.join(seen)[-2000:]}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain: a full pipe would stall it
    return proc, f"http://{node.ip}:{port}"


class Swarm:
    """One swarm working through one replica, recording every operation. When the replica ends its session
    (it could not confirm the credential for a TTL while cut from etcd), the swarm opens a new one, as a
    worker does; its old claims are gone with the old session's lease."""

    def __init__(self, name: str, url: str, credential: str, history: list[Op], ended: list[str]) -> None:
        self.name, self.url, self.credential, self.history, self.ended = name, url, credential, history, ended
        self.session_ends: list[float] = []  # when a session of this swarm was found ended
        self.client = RemoteSwarmClient(url, ["code:python"], timeout=5, credential=credential)

    async def start(self) -> "Swarm":
        while True:
            try:
                await self.client.start()
                return self
            except InfraFabricError as exc:  # the old session's lease has not expired yet, or etcd is away
                if exc.error_code not in ("IF_ERR_SWARM_ALREADY_CONNECTED", "IF_ERR_UNAVAILABLE") and \
                        not exc.error_code.startswith("BACKEND"):
                    raise
                await asyncio.sleep(0.2)

    async def reopen(self, why: InfraFabricError) -> None:
        self.ended.append(f"{self.name}: {why}")
        self.session_ends.append(time.time())
        self.client._session = None  # nothing left to close on the service's side
        await self.client.stop()
        self.client = RemoteSwarmClient(self.url, ["code:python"], timeout=5, credential=self.credential)
        await self.start()

    async def claim(self, task: str) -> bool:
        t0 = time.time()
        try:
            won = await self.client.claim(task) is not None
        except InfraFabricError as exc:
            self.history.append(Op(self.name, "claim", task, t0, time.time(), "unknown"))
            if exc.error_code == "IF_ERR_NO_SESSION":
                await self.reopen(exc)
            else:
                await asyncio.sleep(0.05)  # the replica or its engines are away: do not spin
            return False
        self.history.append(Op(self.name, "claim", task, t0, time.time(), "won" if won else "lost"))
        return won

    async def complete(self, task: str) -> bool:
        t0 = time.time()
        try:
            await self.client.complete(task, {"by": self.name})
        except (StaleClaimError, NotTaskOwnerError):
            self.history.append(Op(self.name, "complete", task, t0, time.time(), "stale"))
            return False
        except InfraFabricError:
            self.history.append(Op(self.name, "complete", task, t0, time.time(), "unknown"))
            return False
        self.history.append(Op(self.name, "complete", task, t0, time.time(), "ok"))
        return True


@pytest.mark.slow
@pytest.mark.parametrize("n_replicas", [2, 3])
def test_service_replicas_under_faults_keep_claims_and_blockers(tmp_path: Path, n_replicas: int) -> None:
    tag = uuid.uuid4().hex[:6]
    cap, helper = f"rare:{tag}", f"helper-{tag}"
    claimers = [f"c{i}-{tag}" for i in range(2 * n_replicas)]
    tasks: list[str] = []  # grows while the faults run: work continues through every one of them
    authority_dir = tmp_path / "authority"
    authority = CredentialAuthority.load_or_create(authority_dir)
    with NetLab() as lab:
        members = [lab.add_node(f"e{i}") for i in range(3)]
        bus_node = lab.add_node("nats")
        replica_nodes = [lab.add_node(f"r{i}") for i in range(n_replicas)]
        cluster = EtcdCluster(3, placements=[(m.ip, m.exec_prefix()) for m in members]).start()
        nats = NatsServer(jetstream=False, host=bus_node.ip, wrapper=bus_node.exec_prefix()).start()
        serves: list[subprocess.Popen[str]] = []
        try:
            async def register_profiles() -> None:
                async with open_kv(cluster.url) as kv:
                    governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
                    governor.register_swarm(SwarmProfile(helper, [cap], 1.0, 1.0, 100.0))
                    for name in claimers:
                        governor.register_swarm(SwarmProfile(name, ["code:python"], 1.0, 1.0, 100.0))
                    await governor.close()

            asyncio.run(register_profiles())
            payer, cost, per_replica = f"payer-{tag}", Decimal("0.1"), 1500
            budget = cost * per_replica * n_replicas * 3 / 4  # a quarter of the charges must be refused
            seed_ledger(cluster.url, payer, budget)
            urls = []
            for node in replica_nodes:
                proc, url = _serve(node, cluster.url, nats.url, authority_dir, tmp_path)
                serves.append(proc)
                urls.append(url)

            history: list[Op] = []
            reported: dict[str, str] = {}
            reporter: dict[str, tuple[Swarm, float]] = {}  # blocker id -> who reported it, when
            unknown_reports = 0
            answers: defaultdict[str, list[tuple[str, ...]]] = defaultdict(list)  # blocker -> announced teams
            helped: Counter[str] = Counter()
            ended: list[str] = []  # sessions a replica ended under the faults (the swarm opened a new one)
            charging: list[subprocess.Popen[str]] = []  # governor replicas charging one budget meanwhile
            nemesis = Nemesis(lab, cluster, [n.name for n in replica_nodes])

            async def scenario() -> dict[str, str | None]:
                observer = open_bus(nats.url)
                await observer.connect()

                def on_help(msg: Any) -> None:
                    event = json.loads(msg.data)
                    if str(event.get("swarm_id", "")).endswith(tag):
                        answers[event["blocker_id"]].append(tuple(event.get("team") or ()))

                await observer.subscribe(keys.HELP_EVENTS, on_help)
                helper_client = await RemoteSwarmClient(urls[-1], [cap], timeout=5, credential=authority.issue(
                    "swarm", helper, 600)).start()
                swarms = [await Swarm(name, urls[i % n_replicas], authority.issue("swarm", name, 600), history,
                                      ended).start() for i, name in enumerate(claimers)]
                done: set[str] = set()
                stop_at = [float("inf")]

                async def work(swarm: Swarm, seed: int) -> None:
                    nonlocal unknown_reports
                    rng = random.Random(seed)
                    n = 0
                    while time.time() < stop_at[0] and (nemesis.is_alive() or len(done) < len(tasks)):
                        if len(done) == len(tasks) and nemesis.is_alive():
                            tasks.extend(f"chaos-{tag}-{i}" for i in range(len(tasks), len(tasks) + 60))
                        order = [t for t in tasks if t not in done]
                        rng.shuffle(order)
                        for task in order[:20]:
                            if task in done:
                                continue
                            if await swarm.claim(task) and await swarm.complete(task):
                                done.add(task)
                            n += 1
                            if n % 25 == 0:  # a blocker now and then, answered by the helper's team
                                try:
                                    event = await swarm.client.report_blocker({"required_capabilities": [cap]})
                                    reported[event["blocker_id"]] = "ok"
                                    reporter[event["blocker_id"]] = (swarm, time.time())
                                except InfraFabricError:
                                    unknown_reports += 1
                        await asyncio.sleep(0)  # one round of the others between batches (fairness)

                async def drain_helper() -> None:
                    while True:
                        item = await helper_client.next_task(60)
                        if item.get("type") == "help_request":
                            helped[str(item.get("blocker_id"))] += 1

                drainer = asyncio.create_task(drain_helper())
                charging.extend(start_replicas(lab, cluster.url, payer, per_replica, cost, concurrency=4))
                nemesis.start()
                workers = [asyncio.create_task(work(s, i)) for i, s in enumerate(swarms)]
                while nemesis.is_alive():
                    await asyncio.sleep(0.1)
                stop_at[0] = time.time() + 20  # after the last heal: finish the pool (or give up)
                await asyncio.gather(*workers)
                deadline = time.time() + 15
                while time.time() < deadline and any(not answers.get(b) for b in reported):
                    await asyncio.sleep(0.1)
                drainer.cancel()
                for s in swarms:
                    try:
                        await s.client.stop()
                    except InfraFabricError as exc:  # a session the faults ended is not a violation; say so
                        ended.append(f"{s.client.swarm_id} at stop: {exc}")
                        s.session_ends.append(time.time())
                try:
                    await helper_client.stop()
                except InfraFabricError as exc:
                    ended.append(f"{helper_client.swarm_id} at stop: {exc}")
                await observer.close()
                async with open_kv(cluster.url) as kv:
                    stored = {}
                    for task in tasks:
                        kv_value = await kv.get(keys.owner_key(task))
                        stored[task] = kv_value.value.decode() if kv_value is not None else None
                    return stored

            stored = asyncio.run(scenario())
            assert nemesis.error is None, nemesis.error
            charges = collect(charging, timeout=240)
            spent, breaker_open = read_ledger(cluster.url, payer)
            gone = {b for b, (who, at) in reporter.items() if any(end >= at for end in who.session_ends)}
            violations = check_claims(history, stored) + check_blockers(reported, unknown_reports, answers, gone) + \
                check_ledger(charges, budget, cost, spent, breaker_open)
            completed = sum(1 for v in stored.values() if v and v.startswith("completed:"))
            (tmp_path / "history.json").write_text(json.dumps({
                "faults": nemesis.faults, "history": [o.as_list() for o in history], "stored": stored,
                "reported": reported, "answers": answers, "helped": helped, "ended": ended,
                "charges": charges, "stored_spent": str(spent)}))
            assert not violations, f"{violations[:10]} (history: {tmp_path / 'history.json'})"
            outcomes = Counter(o.outcome for o in history)
            # the run really exercised the faults: every task finished, expired claims were fenced off
            assert completed == len(tasks), (completed, outcomes)
            assert outcomes["won"] >= len(tasks) and outcomes["lost"] > 0, outcomes
            assert len(reported) >= 5 and len(nemesis.faults) == 10
            charged = Counter(c[4] for c in charges)
            assert charged["ok"] > 0 and charged["refused"] > 0, charged
            # the charges ran through the faults, not before them
            assert max(c[3] for c in charges) > nemesis.faults[4][0], "charges ended before the replica cut"
        finally:
            lab.heal_all()
            for proc in charging:
                if proc.poll() is None:
                    proc.kill()
            terminate_all(serves)
            nats.stop()
            cluster.stop()
