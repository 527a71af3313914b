"""``make coverage``: the suite's line coverage per package (subprocesses included), from coverage's JSON.

The seed asks > 90 % for the phase-0 components (coordinator, governor, chassis); this prints every
package's figure and those three against that goal.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PHASE0 = ("infrafabric/coordinator", "infrafabric/governor", "infrafabric/chassis")
SEED_GOAL = 90.0


def package_of(path: str) -> str:
    parts = Path(path).parts
    src = parts.index("src") if "src" in parts else -1
    inner = parts[src + 1:]
    return "/".join(inner[:2]) if len(inner) > 2 else inner[0]


def by_package(report: dict) -> dict[str, tuple[int, int]]:
    """package -> (statements, covered)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, data in report["files"].items():
        s = data["summary"]
        t = totals[package_of(path)]
        t[0] += s["num_statements"]
        t[1] += s["covered_lines"]
    return {k: (v[0], v[1]) for k, v in sorted(totals.items())}


def main(argv: list[str] | None = None) -> int:
    report = json.loads(Path((argv or sys.argv[1:] or ["coverage.json"])[0]).read_text())
    rows = by_package(report)
    print(f"{'package':<32} {'statements':>10} {'covered':>8} {'cover':>7}")
    for package, (statements, covered) in rows.items():
        pct = 100.0 * covered / statements if statements else 100.0
        mark = "" if package not in PHASE0 else ("  (seed goal > 90 %: met)" if pct > SEED_GOAL
                                                  else "  (seed goal > 90 %: not met)")
        print(f"{package:<32} {statements:>10} {covered:>8} {pct:>6.1f}%{mark}")
    s, c = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
    print(f"{'total':<32} {s:>10} {c:>8} {100.0 * c / s:>6.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
