"""IF.witness benchmarks, each beside a raw SQLite insert loop (or plain hashing) measured in the same run.

    python -m benchmarks.bench_witness        # prints a table
    run() -> list[dict]                       # rows for make bench

Rows: {name, value, unit, baseline_name, baseline_value, ratio, goal}.
Figures: batched append throughput (log + group commit until durable; by the SQLite writer process,
the default, and by the writer thread), the latency a caller of
``log`` sees (p50/p99), verification speed of an exported log (checkpoint-anchored and with every
signature, and the full analysis a damaged log gets), and inclusion proof size/time at 1,000,000
entries (an in-memory tree built from synthetic leaves, to keep `make bench` short).
"""

from __future__ import annotations

import gc
import hashlib
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from infrafabric.witness import Witness, verify_export
from infrafabric.witness.merkle import MerkleTree, leaf_hash, verify_inclusion
from benchmarks.common import quantile as _p
from benchmarks.common import row as _row

N_APPEND = int(os.environ.get("BENCH_WITNESS_N", "50000"))
RUNS = 5
N_PROOF_TREE = int(os.environ.get("BENCH_WITNESS_TREE", "1000000"))
PARAMS = {"task_id": "task-000123", "swarm_id": "swarm-rust-7", "capability": "code-analysis:rust", "attempt": 1}






def raw_sqlite_batched(path: Path, n: int, batch: int = 4096) -> float:
    """Baseline: rows/s of plain executemany+commit into a table of the same shape (WAL, synchronous=FULL)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, id TEXT, ts TEXT, component TEXT, operation TEXT,"
                " params TEXT, severity TEXT, trace_id TEXT, prev_hash TEXT, content_hash TEXT, signature TEXT)")
    import json

    params = json.dumps(PARAMS, sort_keys=True)
    start = time.perf_counter()
    for lo in range(0, n, batch):
        rows = [(i, os.urandom(16).hex(), "2026-01-01T00:00:00.000000Z", "IF.coordinator", "task_claimed", params,
                 "INFO", None, "0" * 64, "1" * 64, "2" * 128) for i in range(lo, min(lo + batch, n))]
        con.execute("BEGIN")
        con.executemany("INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return n / elapsed


def raw_sqlite_witness_schema(path: Path, n: int, batch: int = 4096) -> float:
    """Baseline: rows/s of plain executemany+commit into the witness's own table, with its indexes
    (the store's DDL, created by SQLAlchemy), WAL, synchronous=FULL: the engine's cost of the same rows."""
    import json

    from sqlalchemy import create_engine

    from infrafabric.witness.store.sql import entries_table

    engine = create_engine(f"sqlite:///{path}")
    entries_table.metadata.create_all(engine, tables=[entries_table])
    engine.dispose()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    params = json.dumps(PARAMS, sort_keys=True, separators=(",", ":"))
    prefix = os.urandom(10).hex()
    rows = [(i, f"{prefix}{i:012x}", f"2026-01-01T00:00:{i // 1_000_000:02d}.{i % 1_000_000:06d}Z", "IF.coordinator",
             "task_claimed", params, "INFO", None, os.urandom(32).hex(), os.urandom(32).hex(), "2" * 128, i | 255)
            for i in range(n)]  # made before the clock starts: the baseline is the engine's time alone
    insert = f"INSERT INTO {entries_table.name} VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    start = time.perf_counter()
    for lo in range(0, n, batch):
        con.execute("BEGIN")
        con.executemany(insert, rows[lo : lo + batch])
        con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return n / elapsed


def raw_sqlite_single_commit_p99(path: Path, n: int = 2000) -> float:
    """Baseline for caller latency: one INSERT + COMMIT per call, what a caller waits without group commit."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE IF NOT EXISTS s (seq INTEGER PRIMARY KEY, params TEXT)")
    lat = []
    for i in range(n):
        t = time.perf_counter_ns()
        con.execute("INSERT INTO s VALUES (?, ?)", (i, "{}"))
        lat.append((time.perf_counter_ns() - t) / 1000)
    con.close()
    return _p(lat, 0.99)


def witness_append(path: Path, n: int, **options: Any) -> tuple[float, list[float], Witness]:
    """entries/s from first log() to durable (flush returned), and every caller-seen log() latency in µs."""
    w = Witness(f"sqlite:///{path}", path.parent / "keys", **options)
    for i in range(200):  # warm-up (schema, JIT-free Python caches)
        w.log("IF.coordinator", "task_claimed", PARAMS)
    w.flush()
    lat: list[float] = []
    clock = time.perf_counter_ns
    gc.disable()
    start = time.perf_counter()
    for i in range(n):
        t = clock()
        w.log("IF.coordinator", "task_claimed", PARAMS)
        lat.append((clock() - t) / 1000)
    w.flush()
    elapsed = time.perf_counter() - start
    gc.enable()
    return n / elapsed, lat, w


def paced_latency(w: Witness, n: int = 20000, rate: float = 5000.0) -> list[float]:
    """Caller latency at a steady 5,000 ops/s (a busy control plane, not a flood)."""
    lat: list[float] = []
    clock = time.perf_counter_ns
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(n):
        while time.perf_counter() < next_at:
            pass
        t = clock()
        w.log("IF.chassis", "swarm_loaded", PARAMS)
        lat.append((clock() - t) / 1000)
        next_at += interval
    w.flush()
    return lat


def postgres_append(n: int) -> tuple[float, float] | None:
    """Batched append into a real PostgreSQL (fixture-style launcher), beside raw asyncpg executemany."""
    try:
        from backends.servers.postgres import PostgresServer
    except ImportError:
        return None
    import asyncio

    import asyncpg

    try:
        server = PostgresServer().start()
    except Exception:  # noqa: BLE001 - no PostgreSQL on this machine: the row is skipped
        return None
    try:
        url = server.create_database()
        with tempfile.TemporaryDirectory() as keys:
            w = Witness(url, keys)
            start = time.perf_counter()
            for _ in range(n):
                w.log("IF.coordinator", "task_claimed", PARAMS)
            w.flush()
            rate = n / (time.perf_counter() - start)
            w.close()

        async def raw() -> float:
            con = await asyncpg.connect(server.dsn(url.rsplit("/", 1)[1]))
            await con.execute("CREATE TABLE raw (seq bigint primary key, id text, params text, h text, s text)")
            t = time.perf_counter()
            for lo in range(0, n, 4096):
                async with con.transaction():
                    await con.executemany("INSERT INTO raw VALUES ($1,$2,$3,$4,$5)",
                                          [(i, os.urandom(16).hex(), "{}", "1" * 64, "2" * 128)
                                           for i in range(lo, min(lo + 4096, n))])
            elapsed = time.perf_counter() - t
            await con.close()
            return n / elapsed

        return rate, asyncio.run(raw())
    finally:
        server.stop()


def verification(w: Witness) -> dict[str, float]:
    """entries/s verifying the exported text (parse included) as an outsider does, beside hashing its lines."""
    text = w.export_text()
    lines = text.splitlines()
    start = time.perf_counter()
    for line in lines:
        hashlib.sha256(line.encode()).digest()
    rates = {"hash": len(lines) / (time.perf_counter() - start)}
    for name, options in (("anchored", {}), ("every_sig", {"all_signatures": True}),
                          ("full_analysis", {"fast_path": False})):
        start = time.perf_counter()
        report = verify_export(text, w.public_key, **options)
        rates[name] = report.entries / (time.perf_counter() - start)
        assert report.ok, report.problems[:3]
    rates["entries"] = report.entries
    return rates


def proofs_at_scale(n: int) -> dict[str, float]:
    rng = random.Random(1)
    start = time.perf_counter()
    tree = MerkleTree(leaf_hash(rng.randbytes(96)) for _ in range(n))
    build = time.perf_counter() - start
    root = tree.root()
    idx = [rng.randrange(n) for _ in range(1000)]
    start = time.perf_counter()
    proofs = [tree.inclusion_proof(i) for i in idx]
    gen_us = (time.perf_counter() - start) / len(idx) * 1e6
    start = time.perf_counter()
    assert all(verify_inclusion(tree.leaf(i), i, n, p, root) for i, p in zip(idx, proofs))
    ver_us = (time.perf_counter() - start) / len(idx) * 1e6
    size = statistics.mean(len(p) * 32 for p in proofs)
    start = time.perf_counter()
    tree.consistency_proof(n // 3, n)
    cons_us = (time.perf_counter() - start) * 1e6
    return {"build_s": build, "gen_us": gen_us, "ver_us": ver_us, "size_bytes": size, "cons_us": cons_us}


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-witness-") as tmp:
        base = Path(tmp)
        raw_p99 = raw_sqlite_single_commit_p99(base / "raw1.db")
        rates, thread_rates, raw_rates, schema_rates = [], [], [], []
        for run_no in range(RUNS):  # noisy 2-core machine: the median of five, each beside its own raw runs
            raw_rates.append(raw_sqlite_batched(base / f"raw{run_no}.db", N_APPEND))
            schema_rates.append(raw_sqlite_witness_schema(base / f"schema{run_no}.db", N_APPEND))
            thread_rate, _, thread_w = witness_append(base / f"thread{run_no}" / "witness.db", N_APPEND,
                                                      writer="thread")
            thread_w.close()
            thread_rates.append(thread_rate)
            rate, lat, w = witness_append(base / f"run{run_no}" / "witness.db", N_APPEND)  # the default: a process
            rates.append(rate)
            if run_no < RUNS - 1:
                w.close()
        each, _, each_w = witness_append(base / "each" / "witness.db", N_APPEND // 5, entries_per_signature=1)
        each_w.close()
        try:
            rows.append(_row(f"append throughput, batched (SQLite, writer process, signed, until durable; median of "
                             f"{RUNS}: {', '.join(f'{r:,.0f}' for r in sorted(rates))})", statistics.median(rates),
                             "entries/s", f"raw SQLite executemany loop (median of {RUNS})",
                             statistics.median(raw_rates), ">= 50000 entries/s"))
            rows.append(_row("append throughput, batched (as above)", statistics.median(rates), "entries/s",
                             f"raw SQLite executemany into the witness table with its indexes (median of {RUNS})",
                             statistics.median(schema_rates), "reported"))
            rows.append(_row(f"append throughput, batched, writer thread (writer='thread'; median of {RUNS}: "
                             f"{', '.join(f'{r:,.0f}' for r in sorted(thread_rates))})",
                             statistics.median(thread_rates), "entries/s",
                             f"raw SQLite executemany into the witness table with its indexes (median of {RUNS})",
                             statistics.median(schema_rates), "reported"))
            rows.append(_row("append throughput, every entry signed on its own (entries_per_signature=1)", each,
                             "entries/s", f"raw SQLite executemany loop (median of {RUNS})", statistics.median(raw_rates),
                             "-"))
            rows.append(_row("append latency seen by caller, p50 (flood)", _p(lat, 0.50), "us",
                             "raw SQLite INSERT+COMMIT per call, p99", raw_p99, "-"))
            rows.append(_row("append latency seen by caller, p99 (flood)", _p(lat, 0.99), "us",
                             "raw SQLite INSERT+COMMIT per call, p99", raw_p99, "< 50 us"))
            paced = paced_latency(w)
            rows.append(_row("append latency seen by caller, p99 (paced 5k/s)", _p(paced, 0.99), "us",
                             "raw SQLite INSERT+COMMIT per call, p99", raw_p99, "< 50 us"))
            v = verification(w)
            rows.append(_row(f"verification of exported log ({v['entries']:.0f} entries, checkpoint-anchored)",
                             v["anchored"], "entries/s", "sha256 of each exported line", v["hash"],
                             ">= 100000 entries/s"))
            rows.append(_row("verification checking every Ed25519 signature", v["every_sig"], "entries/s",
                             "sha256 of each exported line", v["hash"], ">= 100000 entries/s"))
            rows.append(_row("verification, full analysis (what a damaged log gets; fast path off)",
                             v["full_analysis"], "entries/s", "sha256 of each exported line", v["hash"], "reported"))
        finally:
            w.close()
    pg = postgres_append(min(N_APPEND, 20000))
    if pg is not None:
        # the issue sets its throughput goal beside raw SQLite; here the server shares the 2 cores with us
        rows.append(_row("append throughput, batched (PostgreSQL, signed, until durable)", pg[0], "entries/s",
                         "raw asyncpg executemany loop", pg[1], "reported"))
    pr = proofs_at_scale(N_PROOF_TREE)
    label = f"{N_PROOF_TREE // 1000}k" if N_PROOF_TREE < 1_000_000 else f"{N_PROOF_TREE // 1_000_000}M"
    rows.append(_row(f"inclusion proof size at {label} entries (in-memory tree)", pr["size_bytes"], "bytes",
                     "-", None, "reported"))
    rows.append(_row(f"inclusion proof generation at {label} entries", pr["gen_us"], "us", "-", None, "reported"))
    rows.append(_row(f"inclusion proof verification at {label} entries", pr["ver_us"], "us", "-", None, "reported"))
    rows.append(_row(f"consistency proof generation at {label} entries", pr["cons_us"], "us", "-", None, "reported"))
    rows.append(_row(f"tree build from {label} leaves (in memory)", pr["build_s"], "s", "-", None, "reported"))
    return rows


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("benchmark", "value", "unit", "baseline", "baseline value", "ratio", "goal")
    for r in run():
        table.add_row(r["name"], str(r["value"]), r["unit"], r["baseline_name"], str(r["baseline_value"]),
                      str(r["ratio"]), r["goal"])
    Console().print(table)


if __name__ == "__main__":
    main()
