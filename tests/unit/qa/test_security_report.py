"""The security audit report: every checklist item names tests that exist, and an item passes only when
every one of its tests ran and passed (a failure, a skip or a test that never ran fails it)."""

from __future__ import annotations

from pathlib import Path

from qa.security_report import Item, decide, load_checklist, render, locations_of


def test_the_checklist_covers_both_seeds_and_names_only_existing_tests() -> None:
    items = load_checklist()
    assert len([i for i in items if i.seed == "002"]) == 16  # seed 002, section 7: sixteen checks
    assert {i.title for i in items if i.seed == "003"} >= {"Authentication bypass", "SQL injection attempts",
                                                           "XSS prevention", "Rate limiting enforcement",
                                                           "Input validation"}
    for item in items:
        for node in item.tests:
            assert locations_of(node), f"{item.title}: {node} names no test"


def _junit(tmp_path: Path, cases: str) -> Path:
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}</testsuite></testsuites>')
    return path


def test_an_item_passes_only_when_all_its_tests_ran_and_passed(tmp_path: Path) -> None:
    items = [Item("002", "s", "all pass", "x", ["tests/a.py::test_one", "tests/a.py::test_two"]),
             Item("002", "s", "one fails", "x", ["tests/a.py::test_one", "tests/b.py::test_bad"]),
             Item("002", "s", "skipped", "x", ["tests/b.py::test_skip"]),
             Item("002", "s", "never ran", "x", ["tests/c.py::test_missing"]),
             Item("002", "s", "whole file", "x", ["tests/a.py"])]
    junit = _junit(tmp_path, """
        <testcase classname="tests.a" name="test_one" time="0.1"/>
        <testcase classname="tests.a" name="test_two[p1]" time="0.1"/>
        <testcase classname="tests.a" name="test_two[p2]" time="0.1"/>
        <testcase classname="tests.b" name="test_bad" time="0.1"><failure message="boom &lt;b&gt;"/></testcase>
        <testcase classname="tests.b" name="test_skip" time="0"><skipped message="no engine"/></testcase>""")
    decide(items, junit)
    assert [i.ok for i in items] == [True, False, False, False, True]
    assert items[0].outcomes[1].passed == 2  # both parameters of test_two


def test_the_page_escapes_what_it_shows(tmp_path: Path) -> None:
    item = Item("002", "<b>sec</b>", "<script>alert(1)</script>", "x & y",
                ["tests/unit/qa/test_security_report.py::test_the_page_escapes_what_it_shows"])
    decide([item], _junit(tmp_path, '<testcase classname="tests.unit.qa.test_security_report" '
                                    'name="test_the_page_escapes_what_it_shows" time="0"/>'))
    page = render([item], tmp_path / "r.html")
    assert "<script>" not in page and "&lt;script&gt;" in page and "x &amp; y" in page
    assert "1 of 1 checklist items pass" in page
