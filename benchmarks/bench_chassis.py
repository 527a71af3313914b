"""IF.chassis benchmarks, each beside raw wasmtime (or direct httpx) measured in the same run.

    python -m benchmarks.bench_chassis        # prints a table
    run() -> list[dict]                       # rows for make bench

Rows: {name, value, unit, baseline_name, baseline_value, ratio, goal}.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import psutil
import wasmtime

from infrafabric.chassis import IFChassis, ResourceLimits, ScopedCredentials, ServiceContract
from infrafabric.chassis.modules import minimal_module, reference_module
from benchmarks.common import quantile as _p
from benchmarks.common import row as _row

FAST = ResourceLimits(max_api_calls_per_second=1_000_000, api_burst=1_000_000, max_concurrent_tasks=64)
TASK = b'{"action":"noop"}'






def raw_wasmtime_latencies(wasm: bytes, n: int) -> list[float]:
    """Baseline: what wasmtime itself costs for one task (new store, instantiate, alloc, write, call, read)."""
    engine = wasmtime.Engine()
    module = wasmtime.Module(engine, wasm)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    linker.define_func("env", "log", wasmtime.FuncType([i32, i32, i32], []), lambda *a: None)
    linker.define_func("env", "http_request", wasmtime.FuncType([i32] * 4, [i32]), lambda *a: -1)
    linker.define_func("env", "alloc_failed", wasmtime.FuncType([i64], []), lambda *a: None)
    pre = linker.instantiate_pre(module)
    needs_wasi = any(imp.module == "wasi_snapshot_preview1" for imp in module.imports)
    out = []
    for _ in range(n):
        start = time.perf_counter()
        store = wasmtime.Store(engine)
        if needs_wasi:
            store.set_wasi(wasmtime.WasiConfig())
        instance = pre.instantiate(store)
        exports = instance.exports(store)
        memory = exports["memory"]
        ptr = exports["alloc"](store, len(TASK))
        memory.write(store, TASK, ptr)
        packed = exports["execute_task"](store, ptr, len(TASK))
        memory.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF))
        out.append((time.perf_counter() - start) * 1000)
    return out


async def chassis_latencies(chassis: IFChassis, swarm: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await chassis.execute_task(swarm, {"action": "noop"})
        out.append((time.perf_counter() - start) * 1000)
    return out


async def _overhead_rows(n: int = 2000) -> list[dict[str, Any]]:
    rows = []
    chassis = IFChassis(audit=None, reputation_sink=None)
    for name, wasm in (("minimal", minimal_module()), ("reference (WASI)", reference_module())):
        swarm = "bench-" + name.split()[0]
        chassis.load_swarm(swarm, wasm, ServiceContract(swarm, resource_requirements=FAST))
        await chassis_latencies(chassis, swarm, 200)  # warm-up (threads, caches)
        raw = raw_wasmtime_latencies(wasm, n)
        ours = await chassis_latencies(chassis, swarm, n)
        rows.append(_row(f"chassis task p99, cached module, {name}", _p(ours, 0.99), "ms",
                         "raw wasmtime instantiate+call p99", _p(raw, 0.99), "< 1 ms"))
        rows.append(_row(f"chassis overhead per task p50, {name}", statistics.median(ours) - statistics.median(raw),
                         "ms", "raw wasmtime instantiate+call p50", statistics.median(raw), "reported"))
    chassis.close()
    return rows


async def _throughput_rows(tasks: int = 4000, swarms: int = 8) -> list[dict[str, Any]]:
    chassis = IFChassis(audit=None, reputation_sink=None, max_workers=8)
    for i in range(swarms):
        chassis.load_swarm(f"tp-{i}", minimal_module(), ServiceContract(f"tp-{i}", resource_requirements=FAST))
    await asyncio.gather(*(chassis.execute_task(f"tp-{i % swarms}", {"action": "noop"}) for i in range(200)))
    start = time.perf_counter()
    await asyncio.gather(*(chassis.execute_task(f"tp-{i % swarms}", {"action": "noop"}) for i in range(tasks)))
    ours = tasks / (time.perf_counter() - start)
    chassis.close()
    raw = raw_wasmtime_latencies(minimal_module(), 2000)
    raw_tps = 1000.0 / statistics.mean(raw)
    return [_row("tasks/s through one chassis (8 swarms, concurrent)", ours, "tasks/s",
                 "raw wasmtime instantiate+call, one thread", raw_tps, "reported")]


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss / 1024 / 1024


def _memory_rows(n: int = 1000) -> list[dict[str, Any]]:
    rows = []
    # baseline: each swarm compiling and holding its own module with plain wasmtime
    engine = wasmtime.Engine()
    distinct = [wasmtime.wat2wasm(
        f'(module (memory (export "memory") 1) (global $g i32 (i32.const {i}))'
        ' (func (export "alloc") (param i32) (result i32) i32.const 1024)'
        ' (func (export "execute_task") (param i32 i32) (result i64) i64.const 0))') for i in range(n)]
    before = _rss_mb()
    held = [wasmtime.Module(engine, wasm) for wasm in distinct]
    raw_per = (_rss_mb() - before) / n
    del held
    chassis = IFChassis(audit=None, reputation_sink=None)
    before = _rss_mb()
    for i in range(n):
        chassis.load_swarm(f"mem-{i}", reference_module(), ServiceContract(f"mem-{i}"))
    shared_per = (_rss_mb() - before) / n
    rows.append(_row(f"memory per loaded swarm, {n} loaded, same module", shared_per, "MB",
                     "raw wasmtime Module per swarm", raw_per, "< 2 MB"))
    before = _rss_mb()
    for i in range(n):
        chassis.load_swarm(f"memd-{i}", distinct[i], ServiceContract(f"memd-{i}"))
    distinct_per = (_rss_mb() - before) / n
    rows.append(_row(f"memory per loaded swarm, {n} loaded, distinct modules", distinct_per, "MB",
                     "raw wasmtime Module per swarm", raw_per, "< 2 MB"))
    chassis.close()
    return rows


async def _http_rows(n: int = 300) -> list[dict[str, Any]]:
    rows = []
    # the upstream runs in its own process, as a real API would (no GIL sharing with the client)
    server = subprocess.Popen([sys.executable, "-m", "infrafabric.chassis.upstream"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        endpoint = f"http://127.0.0.1:{int(server.stdout.readline())}/v1/chat/completions"
        with httpx.Client(trust_env=False) as client:
            for _ in range(50):
                client.post(endpoint, content=b"hi", headers={"authorization": "Bearer t"})
            direct = []
            for _ in range(n):
                start = time.perf_counter()
                client.post(endpoint, content=b"hi", headers={"authorization": "Bearer t"})
                direct.append((time.perf_counter() - start) * 1000)
        chassis = IFChassis(audit=None, reputation_sink=None)
        chassis.load_swarm("bench-http", reference_module(), ServiceContract("bench-http", resource_requirements=FAST))
        creds = ScopedCredentials("bench-http", "loop", "t", 600, [endpoint])
        task = {"id": "loop", "action": "http_loop", "url": endpoint, "count": n}
        await chassis.execute_task("bench-http", {**task, "count": 50}, creds)
        start = time.perf_counter()
        result = await chassis.execute_task("bench-http", task, creds)
        per_call = (time.perf_counter() - start) * 1000 / n
        assert result["calls"] == n
        rows.append(_row("host http_request per call (guest loop)", per_call, "ms",
                         "direct httpx call, same server (mean)", statistics.mean(direct), "ratio <= 1.5"))
        rows.append(_row("host http_request per call (guest loop) vs p50", per_call, "ms",
                         "direct httpx call, same server p50", statistics.median(direct), "ratio <= 1.5"))
        whole = []
        for i in range(n // 3):
            c = ScopedCredentials("bench-http", f"t{i}", "t", 600, [endpoint])
            start = time.perf_counter()
            await chassis.execute_task("bench-http", {"id": f"t{i}", "action": "call_llm", "url": endpoint,
                                                      "prompt": "hi"}, c)
            whole.append((time.perf_counter() - start) * 1000)
        rows.append(_row("whole chassis task with one http_request p50", statistics.median(whole), "ms",
                         "direct httpx call, same server p50", statistics.median(direct), "reported"))
        chassis.close()
    finally:
        server.terminate()
        server.wait(10)
    return rows


def run() -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        rows = await _overhead_rows()
        rows += await _throughput_rows()
        rows += await _http_rows()
        return rows

    rows = asyncio.run(main())
    rows += _memory_rows()
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover
        for row in rows:
            print(row)
        return
    table = Table(title="IF.chassis benchmarks")
    for column in ("name", "value", "unit", "baseline_name", "baseline_value", "ratio", "goal"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "value", "unit", "baseline_name", "baseline_value",
                                               "ratio", "goal")))
    Console(width=200).print(table)


if __name__ == "__main__":
    _print(run())
