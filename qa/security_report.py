"""``make security-report``: run the tests that decide each item of the seeds' security checklists and write
``security-audit-report.html`` with pass/fail per item, each linked to its tests.

The checklist (``qa/security_checklist.toml``) maps items to pytest node ids; the report is decided by one
pytest run of exactly those tests (its JUnit XML), never by anything this script assumes. An item passes
when every one of its tests ran and passed; a skipped or missing test fails it ("not decided").
"""

from __future__ import annotations

import ast
import html
import subprocess
import sys
import tempfile
import time
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKLIST = Path(__file__).with_name("security_checklist.toml")

__all__ = ["Item", "Outcome", "decide", "load_checklist", "main", "render", "run_tests", "locations_of"]


@dataclass
class Outcome:
    node: str  # file::function (parameters folded in)
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.passed > 0 and self.failed == 0 and self.skipped == 0


@dataclass
class Item:
    seed: str
    section: str
    title: str
    success: str
    tests: list[str]
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)


def load_checklist(path: Path = CHECKLIST) -> list[Item]:
    data = tomllib.loads(path.read_text())
    return [Item(i["seed"], i["section"], i["title"], i["success"], list(i["tests"])) for i in data["item"]]


def locations_of(node: str) -> list[tuple[str, int]]:
    """(file, line) of a node id's test functions (a file alone: every test function in it)."""
    file, _, func = node.partition("::")
    tree = ast.parse((ROOT / file).read_text())
    found = [(file, n.lineno) for n in ast.walk(tree)
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.startswith("test_")
             and (not func or n.name == func)]
    return found


def run_tests(nodes: list[str], junit: Path) -> int:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                           *nodes], cwd=ROOT, check=False).returncode


def _node_of(case: ET.Element) -> tuple[str, str]:
    file = case.get("file") or (case.get("classname", "").replace(".", "/") + ".py")
    return file, case.get("name", "").split("[", 1)[0]


def decide(items: list[Item], junit: Path) -> None:
    """Fill each item's outcomes from the JUnit XML of the run."""
    cases = ET.parse(junit).getroot().iter("testcase")
    results: dict[tuple[str, str], list[ET.Element]] = {}
    for case in cases:
        results.setdefault(_node_of(case), []).append(case)
    for item in items:
        item.outcomes = []
        for node in item.tests:
            file, _, func = node.partition("::")
            outcome = Outcome(node)
            for (f, name), runs in results.items():
                if f != file or (func and name != func):
                    continue
                for case in runs:
                    outcome.seconds += float(case.get("time", "0") or 0)
                    failure = case.find("failure") if case.find("failure") is not None else case.find("error")
                    if failure is not None:
                        outcome.failed += 1
                        outcome.messages.append((failure.get("message") or "")[:300])
                    elif case.find("skipped") is not None:
                        outcome.skipped += 1
                    else:
                        outcome.passed += 1
            item.outcomes.append(outcome)


def render(items: list[Item], report: Path) -> str:
    esc = html.escape
    rows = []
    for item in items:
        verdict = "PASS" if item.ok else "FAIL"
        tests = []
        for o in item.outcomes:
            links = ", ".join(f'<a href="{esc(str(ROOT / f))}#L{line}">{esc(f)}:{line}</a>'
                              for f, line in locations_of(o.node)) or esc(o.node)
            state = "passed" if o.ok else ("not run" if not (o.passed or o.failed or o.skipped) else "failed")
            detail = f" — {esc(o.messages[0])}" if o.messages else ""
            tests.append(f"<li class='{ 'ok' if o.ok else 'bad'}'><code>{esc(o.node)}</code>: {state} "
                         f"({o.passed} passed, {o.failed} failed, {o.skipped} skipped, {o.seconds:.2f} s)"
                         f"{detail}<br><small>{links}</small></li>")
        rows.append(f"<tr class='{verdict.lower()}'><td>{esc(item.seed)}</td><td>{esc(item.section)}</td>"
                    f"<td><strong>{esc(item.title)}</strong><br><small>{esc(item.success)}</small></td>"
                    f"<td class='verdict'>{verdict}</td><td><ul>{''.join(tests)}</ul></td></tr>")
    passed = sum(item.ok for item in items)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Security audit report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border: 1px solid #ccc; padding: .4em; vertical-align: top; }}
tr.pass .verdict {{ background: #d7f5dd; }} tr.fail .verdict {{ background: #f9d6d5; }}
li.bad {{ color: #a00; }} code {{ font-size: 12px; }}
</style></head><body>
<h1>Security audit report</h1>
<p>{passed} of {len(items)} checklist items pass ({time.strftime('%Y-%m-%d %H:%M:%S %Z')}); each decided by the
linked tests, run for this report. Checklist: seed 002 section 7 and seed 003's security suite.</p>
<table><tr><th>seed</th><th>section</th><th>item</th><th>verdict</th><th>tests</th></tr>
{''.join(rows)}
</table></body></html>
"""
    report.write_text(page)
    return page


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or ["security-audit-report.html"])[0])
    items = load_checklist()
    nodes = sorted({node for item in items for node in item.tests})
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        run_tests(nodes, junit)
        decide(items, junit)
    render(items, out)
    failed = [item.title for item in items if not item.ok]
    print(f"{len(items) - len(failed)}/{len(items)} security checklist items pass; report: {out.resolve()}")
    for title in failed:
        print(f"  FAIL: {title}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
