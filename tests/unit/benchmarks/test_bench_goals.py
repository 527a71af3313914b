"""`make bench` marks each numeric goal met or not from the row itself: a wrong comparison would print
"yes" beside a figure that misses its goal."""

from __future__ import annotations

import pytest

from benchmarks.run import goal_met


@pytest.mark.parametrize(("value", "goal", "met"), [
    (34_099, ">= 50000 entries/s", False), (50_000, ">= 50000 entries/s", True), (51_000, ">= 50,000/s", True),
    (13.3, "< 50 us", True), (50.0, "< 50 us", False), (552, "< 1000 ms", True), (1_052, "< 1000 ms", False),
    (0.2, "<= 0.2 MiB", True), (3, "> 3", False),
])
def test_numeric_goals(value: float, goal: str, met: bool) -> None:
    assert goal_met({"value": value, "goal": goal}) is met


@pytest.mark.parametrize("goal", ["reported", "-", "flat (reported)", ""])
def test_rows_without_a_numeric_goal_are_not_judged(goal: str) -> None:
    assert goal_met({"value": 1.0, "goal": goal}) is None


def test_an_explicit_verdict_wins() -> None:
    assert goal_met({"value": 1.0, "goal": ">= 5", "met": True}) is True
