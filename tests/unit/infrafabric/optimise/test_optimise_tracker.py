"""IF.optimise: exact money, reports, budgets with 50/80/100 % alerts and exhaustion projections."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from infrafabric.optimise import (
    BudgetAlert,
    CostTracker,
    OptimiseInputError,
    get_cost_report,
    get_default_tracker,
    get_total_cost,
    track_operation_cost,
)
from infrafabric.witness import Witness, get_logs


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


T0 = datetime(2026, 3, 10, 6, 0, tzinfo=timezone.utc)


@pytest.fixture
def witness() -> Witness:
    w = Witness("memory://")
    yield w
    w.close()


def test_money_is_exact(witness: Witness) -> None:
    t = CostTracker(witness)
    for _ in range(10):
        t.track("swarm-a", "op", 0.1)
    assert t.total() == Decimal("1.0")
    t.track("swarm-b", "op", Decimal("0.000001"))
    t.track("swarm-b", "op", "2.50")
    t.track("swarm-b", "op", 3)
    assert t.total("swarm-b") == Decimal("5.500001")
    assert sum(float(0.1) for _ in range(10)) != 1.0  # what float accounting would have produced
    logged = [e["params"]["cost"] for e in witness.query(operation="cost_tracked")]
    assert logged[:2] == ["0.1", "0.1"] and "0.000001" in logged


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, None, "abc", Decimal("-0.01")])
def test_invalid_costs_are_refused_and_nothing_is_recorded(witness: Witness, bad: object) -> None:
    t = CostTracker(witness)
    t.track("s", "op", 1)
    with pytest.raises(OptimiseInputError) as info:
        t.track("s", "op", bad)
    assert info.value.error_code == "OPTIMISE_INVALID_INPUT" and info.value.message
    assert t.total() == Decimal(1) and len(witness.query(operation="cost_tracked")) == 1


def test_reports_by_swarm_component_model_day_and_operation(witness: Witness) -> None:
    clock = Clock(T0)
    t = CostTracker(witness, clock=clock)
    t.track("swarm-a", "review", "1.10", component="IF.governor", model="haiku")
    t.track("swarm-b", "review", "2.00", component="IF.chassis", model="sonnet")
    clock.now = T0 + timedelta(days=1)
    t.track("swarm-a", "build", "0.90", component="IF.governor", model="sonnet")
    assert t.report("swarm") == [
        {"key": "swarm-a", "cost": "2.00", "operations": 2, "share": "50.00"},
        {"key": "swarm-b", "cost": "2.00", "operations": 1, "share": "50.00"},
    ]
    assert [(r["key"], r["cost"]) for r in t.report("model")] == [("sonnet", "2.90"), ("haiku", "1.10")]
    assert [(r["key"], r["cost"]) for r in t.report("component")] == [("IF.chassis", "2.00"), ("IF.governor", "2.00")]
    assert [(r["key"], r["cost"]) for r in t.report("day")] == [("2026-03-10", "3.10"), ("2026-03-11", "0.90")]
    assert [(r["key"], r["operations"]) for r in t.report("operation")] == [("review", 2), ("build", 1)]
    assert [r["key"] for r in t.report("swarm", since=T0 + timedelta(hours=12))] == ["swarm-a"]
    with pytest.raises(OptimiseInputError):
        t.report("colour")


def test_budget_alerts_fire_once_at_each_threshold(witness: Witness) -> None:
    clock = Clock(T0)
    t = CostTracker(witness, clock=clock)
    t.set_budget("10", "day", swarm="swarm-a")
    alerts: list[BudgetAlert] = []
    t.on_alert(alerts.append)
    t.track("swarm-b", "op", 9)  # another swarm: not this budget
    t.track("swarm-a", "op", "4.99")
    assert alerts == []
    t.track("swarm-a", "op", "0.01")  # exactly 50 %
    assert [a.threshold for a in alerts] == [50]
    t.track("swarm-a", "op", 1)
    assert [a.threshold for a in alerts] == [50]
    t.track("swarm-a", "op", 5)  # jumps past 80 and 100 at once
    assert [a.threshold for a in alerts] == [50, 80, 100]
    t.track("swarm-a", "op", 5)
    assert len(alerts) == 3
    logged = witness.query(operation="budget_alert")
    assert [(e["params"]["threshold"], e["severity"]) for e in logged] == [(50, "WARN"), (80, "WARN"), (100, "HIGH")]
    clock.now = T0 + timedelta(days=1)  # a new day is a new period
    t.track("swarm-a", "op", 6)
    assert [a.threshold for a in alerts] == [50, 80, 100, 50]


def test_budget_status_and_projection(witness: Witness) -> None:
    clock = Clock(T0)  # 06:00, a quarter of the day gone
    t = CostTracker(witness, clock=clock)
    t.set_budget(12, "day")
    t.track("swarm-a", "op", 3)
    (status,) = t.budget_status()
    assert status.spent == Decimal(3) and status.remaining == Decimal(9) and status.percent == Decimal("25.00")
    assert status.burn_rate_per_hour == Decimal("0.5")
    assert status.projected_exhaustion == datetime(2026, 3, 11, 0, 0, tzinfo=timezone.utc)
    assert status.projected_period_spend == Decimal(12)
    assert status.alerts == () and not status.exhausted
    clock.now = T0 + timedelta(hours=1)
    t.track("swarm-a", "op", 10)
    (status,) = t.budget_status()
    assert status.exhausted and status.alerts == (50, 80, 100)
    assert status.projected_exhaustion == clock.now  # when the limit was crossed
    assert status.to_dict()["remaining"] == "-1"


def test_budget_validation(witness: Witness) -> None:
    t = CostTracker(witness)
    for kwargs in ({"limit": 0}, {"limit": -5}, {"limit": "ten"}, {"limit": 5, "period": "fortnight"},
                   {"limit": 5, "swarm": "a", "model": "b"}):
        with pytest.raises(OptimiseInputError):
            t.set_budget(**kwargs)
    assert t.budgets() == []


def test_state_is_rebuilt_from_the_witness_log(tmp_path) -> None:
    url, keys = f"sqlite:///{tmp_path / 'cost.db'}", tmp_path / "keys"
    w1 = Witness(url, keys)
    t1 = CostTracker(w1)
    t1.set_budget("2", "month", component="IF.governor")
    t1.track("swarm-a", "op", "1.5", component="IF.governor", model="haiku")
    t1.track("swarm-a", "op", "0.5", component="IF.governor", model="haiku")
    w1.close()
    w2 = Witness(url, keys)
    try:
        alerts: list[BudgetAlert] = []
        t2 = CostTracker(w2)
        t2.on_alert(alerts.append)
        assert t2.total() == Decimal("2.0") and t2.budgets()[0].target == "IF.governor"
        assert t2.budget_status()[0].alerts == (50, 80, 100)
        t2.track("swarm-a", "op", "0.1", component="IF.governor")
        assert alerts == []  # thresholds already announced this period are not announced again
    finally:
        w2.close()


def test_module_level_api_uses_the_default_witness(fresh_witness: Witness) -> None:
    record = track_operation_cost("swarm-gov", "operation-1", 5.0, component="IF.governor", model="sonnet", trace_id="tr-9")
    assert record.cost == Decimal("5.0") and record.component == "IF.governor"
    track_operation_cost("swarm-gov", "operation-2", "0.25")
    assert get_total_cost("swarm-gov") == Decimal("5.25")
    report = get_cost_report()
    assert report["total_operations"] == 2 and report["operation_costs"]["operation-1"] == Decimal("5.0")
    entries = get_logs(component="IF.optimise", operation="cost_tracked")
    assert entries[0]["trace_id"] == "tr-9" and entries[0]["params"]["provider"] == "swarm-gov"
    assert get_default_tracker() is get_default_tracker()
