"""``make coverage``: the suite's line coverage per package (subprocesses included), from coverage's JSON.

The seed asks > 90 % for the phase-0 components (coordinator, governor, chassis); this prints every
package's figure and those three against that goal. With ``--gate`` (what ``make test`` runs on the whole
suite) it fails when a floor is not met: the seed's goal for the three, and for the total a floor set a
little under the figure measured when the gate was introduced (92.2 %), so coverage cannot quietly erode.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PHASE0 = ("infrafabric/coordinator", "infrafabric/governor", "infrafabric/chassis")
SEED_GOAL = 90.0
TOTAL_FLOOR = 91.0


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


def percent(statements: int, covered: int) -> float:
    return 100.0 * covered / statements if statements else 100.0


def gate_failures(rows: dict[str, tuple[int, int]]) -> list[str]:
    """What the floors refuse: a phase-0 package at or below the seed's goal, or the total below its floor."""
    failures = [f"{package} {percent(*rows.get(package, (1, 0))):.1f}% is not above the seed's {SEED_GOAL:.0f}%"
                for package in PHASE0 if percent(*rows.get(package, (1, 0))) <= SEED_GOAL]
    total = percent(sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values()))
    if total < TOTAL_FLOOR:
        failures.append(f"total {total:.1f}% is below the floor of {TOTAL_FLOOR:.0f}%")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    gate = "--gate" in args
    paths = [a for a in args if a != "--gate"]
    report = json.loads(Path(paths[0] if paths else "coverage.json").read_text())
    rows = by_package(report)
    print(f"{'package':<32} {'statements':>10} {'covered':>8} {'cover':>7}")
    for package, (statements, covered) in rows.items():
        pct = percent(statements, covered)
        mark = "" if package not in PHASE0 else ("  (seed goal > 90 %: met)" if pct > SEED_GOAL
                                                  else "  (seed goal > 90 %: not met)")
        print(f"{package:<32} {statements:>10} {covered:>8} {pct:>6.1f}%{mark}")
    s, c = sum(v[0] for v in rows.values()), sum(v[1] for v in rows.values())
    print(f"{'total':<32} {s:>10} {c:>8} {percent(s, c):>6.1f}%")
    if gate:
        for failure in gate_failures(rows):
            print(f"coverage gate: {failure}", file=sys.stderr)
        return 1 if gate_failures(rows) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
