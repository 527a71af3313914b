"""Governor replicas charging one budget under faults: the replica process, the fault schedule and the
history checker, shared by the partition tests and ``make bench-chaos``.

Each replica records every charge (who, when invoked, when completed, outcome); the checker holds the
whole history to the ledger's invariants, as Jepsen's checkers do.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from backends.servers.etcd import EtcdCluster
from backends.servers.netlab import NetLab

ROOT = Path(__file__).resolve().parents[1]

REPLICA = textwrap.dedent("""
    import asyncio, json, sys, time
    from backends.kv import open_kv
    from infrafabric.errors import CircuitOpenError
    from infrafabric.governor import IFGovernor

    async def main(url, swarm, n, cost, name, concurrency):
        kv = open_kv(url)
        async with kv:
            governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
            await governor.load()
            history = []
            sem = asyncio.Semaphore(concurrency)
            async def one(i):
                async with sem:
                    started = time.time()
                    try:
                        remaining = await asyncio.wait_for(governor.acharge(swarm, "op", cost), 8)
                        history.append([name, i, started, time.time(), "ok", str(remaining)])
                    except CircuitOpenError:
                        history.append([name, i, started, time.time(), "refused", None])
                    except Exception as exc:  # timeout, unavailable: the charge may or may not have applied
                        history.append([name, i, started, time.time(), "unknown", type(exc).__name__])
            await asyncio.gather(*(one(i) for i in range(n)))
            print(json.dumps(history))

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])))
""")


def check_ledger(history: list[list[Any]], budget: Decimal, cost: Decimal, stored_spent: Decimal,
                 breaker_open: bool) -> list[str]:
    """The invariants of one swarm's ledger over a whole history; returns the violations found."""
    violations: list[str] = []
    accepted = [Decimal(str(h[5])) for h in history if h[4] == "ok"]
    unknown = sum(1 for h in history if h[4] == "unknown")
    if any(r < 0 for r in accepted):
        violations.append(f"overspent: accepted totals below zero {sorted(r for r in accepted if r < 0)[:5]}")
    if len(set(accepted)) != len(accepted):
        seen: set[Decimal] = set()
        dup = sorted({r for r in accepted if r in seen or seen.add(r)})[:5]  # type: ignore[func-returns-value]
        violations.append(f"lost or double-counted charges: running totals seen twice {dup}")
    low, high = cost * len(accepted), cost * (len(accepted) + unknown)
    if not low <= stored_spent <= high:
        violations.append(f"stored total {stored_spent} outside [{low}, {high}] (accepted {len(accepted)}, "
                          f"unknown {unknown})")
    if stored_spent > budget:
        violations.append(f"stored total {stored_spent} exceeds the budget {budget}")
    if stored_spent >= budget and not breaker_open:
        violations.append("budget spent but the breaker is closed")
    return violations


def seed_ledger(url: str, swarm: str, budget: Decimal) -> None:
    """Register the swarm whose ledger the replicas charge."""
    import asyncio

    from backends.kv import open_kv
    from infrafabric.governor import IFGovernor, SwarmProfile

    async def run() -> None:
        async with open_kv(url) as kv:
            governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
            governor.register_swarm(SwarmProfile(swarm, ["code:python"], 1.0, 1.0, budget))
            await governor.close()

    asyncio.run(run())


def read_ledger(url: str, swarm: str) -> tuple[Decimal, bool]:
    """The stored total spent and whether the stored breaker is open (read after the run, healed)."""
    import asyncio

    from backends.kv import open_kv

    async def run() -> tuple[Decimal, bool]:
        async with open_kv(url) as kv:
            record = json.loads((await kv.get(f"/governor/budgets/{swarm}")).value)  # type: ignore[union-attr]
            breaker = await kv.get(f"/governor/breakers/{swarm}")
            return Decimal(record["spent"]), breaker is not None and json.loads(breaker.value)["state"] == "open"

    return asyncio.run(run())


def start_replicas(lab: NetLab, url: str, swarm: str, per_replica: int, cost: Decimal,
                   concurrency: int = 8) -> list[subprocess.Popen[str]]:
    """One replica process per ``r*`` node of the lab, each in its own namespace."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return [subprocess.Popen([*node.exec_prefix(), sys.executable, "-c", REPLICA, url, swarm, str(per_replica),
                              str(cost), node.name, str(concurrency)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for name, node in lab.nodes.items() if name.startswith("r")]


def collect(procs: list[subprocess.Popen[str]], timeout: float) -> list[list[Any]]:
    history: list[list[Any]] = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"replica failed: {err[-3000:]}")
        history.extend(json.loads(out))
    return history


class Nemesis(threading.Thread):
    """Random faults until stopped: isolate an etcd member (often the leader), cut a replica from the
    leader, delay a member's packets; each held for a while, then healed. Every fault is recorded."""

    def __init__(self, lab: NetLab, cluster: EtcdCluster, *, seed: int = 0, hold: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.lab, self.cluster, self.hold = lab, cluster, hold
        self.random = random.Random(seed)
        self.faults: list[tuple[float, str]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        members = [n for n in self.lab.nodes if n.startswith("e")]
        replicas = [n for n in self.lab.nodes if n.startswith("r")]
        kinds = ["isolate-leader", "isolate-member", "cut-replica"] + (["delay"] if self.lab.netem_available() else [])
        while not self._halt.wait(self.random.uniform(0.2, 0.6)):
            try:
                leader = f"e{self.cluster.leader_index(timeout=5)}"
            except Exception:  # noqa: BLE001 - no leader right now: try again next round
                continue
            kind = self.random.choice(kinds)
            if kind == "isolate-leader":
                self.lab.isolate(leader)
                what = f"isolate leader {leader}"
            elif kind == "isolate-member":
                member = self.random.choice(members)
                self.lab.isolate(member)
                what = f"isolate {member}"
            elif kind == "cut-replica" and replicas:
                replica = self.random.choice(replicas)
                self.lab.cut(replica, leader)
                what = f"cut {replica} from leader {leader}"
            else:
                member = self.random.choice(members)
                self.lab.netem(member, delay_ms=50, loss_percent=5)
                what = f"delay 50 ms + 5% loss on {member}"
            self.faults.append((time.time(), what))
            self._halt.wait(self.hold)
            self.lab.heal_all()
            if "delay" in kinds:
                for member in members:
                    self.lab.netem(member)
            self.faults.append((time.time(), "heal"))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        self.lab.heal_all()
