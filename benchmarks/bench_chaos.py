"""`make bench-chaos`: governor replicas charging one ledger for 100,000 operations under random faults.

A 3-member etcd cluster and 1, 2 or 3 replica processes, each in its own network namespace; a nemesis
isolates members (often the leader), cuts replicas from the leader and delays or drops packets, every
0.2-0.6 s, each fault held for a second. Each configuration runs ``--ops`` charges in all; every charge's
invocation, completion and outcome is recorded and the whole history is checked (``chaos_ledger``).
Printed per configuration: operations, faults injected, violations found (goal: 0), throughput; the
histories are written to bench-results/. Needs root (network namespaces).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from backends.servers.etcd import EtcdCluster
from backends.servers.netlab import NetLab, netlab_available
from benchmarks.chaos_ledger import Nemesis, check_ledger, collect, read_ledger, seed_ledger, start_replicas
from benchmarks.common import row

COST = Decimal("0.01")


def run_one(replicas: int, ops: int, out_dir: Path, seed: int) -> dict[str, Any]:
    budget = COST * (ops * 3 // 4)  # three quarters of the charges fit: the end of the run is refusals
    swarm = f"chaos-{uuid.uuid4().hex[:8]}"
    with NetLab() as lab:
        members = [lab.add_node(f"e{i}") for i in range(3)]
        for i in range(replicas):
            lab.add_node(f"r{i}")
        cluster = EtcdCluster(3, placements=[(m.ip, m.exec_prefix()) for m in members]).start()
        try:
            seed_ledger(cluster.url, swarm, budget)
            nemesis = Nemesis(lab, cluster, seed=seed)
            started = time.perf_counter()
            procs = start_replicas(lab, cluster.url, swarm, ops // replicas, COST, concurrency=16)
            nemesis.start()
            history = collect(procs, timeout=3600)
            elapsed = time.perf_counter() - started
            nemesis.stop()

            spent, breaker_open = read_ledger(cluster.url, swarm)
        finally:
            cluster.stop()
    violations = check_ledger(history, budget, COST, spent, breaker_open)
    path = out_dir / f"chaos-{replicas}-replicas-{int(time.time())}.json"
    path.write_text(json.dumps({"faults": nemesis.faults, "violations": violations, "stored_spent": str(spent),
                                "history": history}))
    outcomes = {k: sum(1 for h in history if h[4] == k) for k in ("ok", "refused", "unknown")}
    return {"replicas": replicas, "ops": len(history), "faults": sum(1 for _, f in nemesis.faults if f != "heal"),
            "violations": violations, "ops_per_s": len(history) / elapsed, "outcomes": outcomes, "history": str(path)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not netlab_available():
        print("bench-chaos needs root (network namespaces)")
        return 2
    out_dir = Path("bench-results")
    out_dir.mkdir(exist_ok=True)
    results = []
    for n in args.replicas.split(","):
        result = run_one(int(n), args.ops, out_dir, args.seed + int(n))
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "history"} | {"history": result["history"]}),
              flush=True)  # each configuration as it finishes: a long run can be followed
    from benchmarks.run import print_rows

    rows = []
    for r in results:
        rows.append(row(f"{r['replicas']} replica(s): {r['ops']:,} charges, {r['faults']} faults "
                        f"({r['outcomes']['ok']:,} ok, {r['outcomes']['refused']:,} refused, "
                        f"{r['outcomes']['unknown']:,} unknown)", len(r["violations"]), "violations",
                        goal="== 0", met=not r["violations"]))
        rows.append(row(f"{r['replicas']} replica(s): charges/s under faults", r["ops_per_s"], "ops/s",
                        "1 replica", results[0]["ops_per_s"], "reported"))
    print_rows("governor ledger under random partitions", rows)
    (out_dir / "chaos-summary.json").write_text(json.dumps(results, indent=2))
    for r in results:
        for v in r["violations"]:
            print(f"VIOLATION ({r['replicas']} replicas): {v}  history: {r['history']}")
    return 0 if all(not r["violations"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
