"""`make bench`: run every benchmark module, print one table, write JSON to bench-results/.

Each figure is printed beside the raw engine measured in the same run; the ratio is figure ÷ raw.
The machine is small and shared: read medians, p99 and ratios, not a single absolute run.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MODULES = ["bench_coordinator", "bench_witness", "bench_chassis", "bench_mesh", "bench_node", "bench_gateway",
           "bench_stack", "bench_console"]
console = Console(width=200)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


_GOAL = re.compile(r"^\s*(<=|>=|<|>)\s*([0-9][0-9,]*(?:\.[0-9]+)?)")
_COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}


def goal_met(row: dict[str, Any]) -> bool | None:
    """Whether a numeric goal ("< 50 us", ">= 5000/s", in the value's own unit) holds; None when the
    row has no such goal ("reported", "-")."""
    if row.get("met") is not None:
        return bool(row["met"])
    m = _GOAL.match(str(row.get("goal", "")))
    if m is None or not isinstance(row.get("value"), int | float):
        return None
    return _COMPARE[m[1]](float(row["value"]), float(m[2].replace(",", "")))


def print_rows(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table("figure", "value", "unit", "raw baseline", "raw", "ratio", "goal", "met", title=title)
    for r in rows:
        met = r["met"] = goal_met(r)
        table.add_row(r["name"], _fmt(r["value"]), r.get("unit", ""), r.get("baseline_name", ""),
                      _fmt(r.get("baseline_value")), _fmt(r.get("ratio")), r.get("goal", ""),
                      "" if met is None else ("[green]yes[/green]" if met else "[red]no[/red]"))
    console.print(table)


def cpython_calibration() -> float:
    """Milliseconds CPython takes for ``sum(range(10**6))`` (median of 7): the machine's single-core speed,
    so figures measured on machines of different speeds can be told apart in RESULTS.md."""
    import statistics

    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        sum(range(10**6))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run_module(name: str) -> dict[str, Any]:
    """One module in a process of its own: a module that fails, or leaves gRPC's asyncio engine bound to a
    loop it closed (later loops in that process then never see an etcd answer), cannot take the modules
    after it down with it."""
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--one", name, out.name],
                              env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            result: dict[str, Any] = json.loads(Path(out.name).read_text() or "null") or {}
        except ValueError:
            result = {}
    if done.returncode != 0 or "rows" not in result and "error" not in result:
        result.setdefault("error", f"exit status {done.returncode}\n{done.stdout[-4000:]}")
    return result


def _one(name: str, out: str) -> int:
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        Path(out).write_text(json.dumps({"absent": str(exc)}))
        return 0
    t0 = time.perf_counter()
    try:
        rows = module.run()
    except Exception:
        Path(out).write_text(json.dumps({"error": traceback.format_exc()}, default=str))
        return 1
    Path(out).write_text(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}, default=str))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        return _one(sys.argv[2], sys.argv[3])
    selected = sys.argv[1:] or MODULES
    # Benchmarks audit thousands of operations: into a log of their own, never the user's (state dir).
    if "INFRAFABRIC_STATE_DIR" not in os.environ:
        os.environ["INFRAFABRIC_STATE_DIR"] = tempfile.mkdtemp(prefix="if-bench-state-")
    out_dir = Path(os.environ.get("BENCH_OUT", "bench-results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"started": time.time(), "python": sys.version, "machine": platform.platform(),
                              "cpus": os.cpu_count(), "calibration_ms": cpython_calibration(), "modules": {}}
    console.print(f"machine: {report['machine']}, {report['cpus']} CPUs; CPython sum(range(10**6)) "
                  f"{report['calibration_ms']:.1f} ms (lower is faster)")
    failures = 0
    for name in selected:
        result = run_module(name)
        if "absent" in result:
            console.print(f"[yellow]{name}: not present ({result['absent']})[/yellow]")
            continue
        if "error" in result:
            failures += 1
            console.print(f"[red]{name} failed[/red]\n{result['error']}")
            report["modules"][name] = {"error": result["error"]}
            continue
        print_rows(f"{name} ({result['seconds']:.1f} s)", result["rows"])
        report["modules"][name] = result
    path = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "latest.json").write_text(json.dumps(report, indent=2, default=str))
    console.print(f"results written to {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
