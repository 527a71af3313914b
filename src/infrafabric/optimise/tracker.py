"""Cost accounting on top of the witness log: every cost and budget change is an audited entry.

The tracker keeps an in-memory index for fast reports and rebuilds it from the witness log when it is
created (or on ``refresh``), so a CLI in another process sees the same numbers as the running
platform. Money is ``Decimal`` end to end.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from ..witness import Witness
from .errors import OptimiseInputError
from .money import money_str, to_money

log = logging.getLogger(__name__)

COMPONENT = "IF.optimise"
ALERT_THRESHOLDS = (50, 80, 100)
PERIODS = ("day", "week", "month", "total")
GROUPS = ("swarm", "provider", "component", "model", "day", "operation")
_SCOPES = ("swarm", "component", "model")


def _utc(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CostRecord:
    provider: str
    operation: str
    cost: Decimal
    timestamp: datetime
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return str(self.metadata.get("component") or "unknown")

    @property
    def model(self) -> str:
        return str(self.metadata.get("model") or "unknown")

    def key(self, group_by: str) -> str:
        if group_by in ("swarm", "provider"):
            return self.provider
        if group_by == "component":
            return self.component
        if group_by == "model":
            return self.model
        if group_by == "day":
            return self.timestamp.strftime("%Y-%m-%d")
        return self.operation


@dataclass(frozen=True)
class Budget:
    limit: Decimal
    period: str = "month"
    scope: str = "global"  # global | swarm | component | model
    target: str | None = None

    @property
    def name(self) -> str:
        return "global" if self.scope == "global" else f"{self.scope}:{self.target}"

    def applies_to(self, record: CostRecord) -> bool:
        if self.scope == "global":
            return True
        if self.scope == "swarm":
            return record.provider == self.target
        if self.scope == "component":
            return record.component == self.target
        return record.model == self.target

    def period_bounds(self, now: datetime, first: datetime | None) -> tuple[datetime, datetime | None]:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.period == "day":
            return day, day + timedelta(days=1)
        if self.period == "week":
            start = day - timedelta(days=day.weekday())
            return start, start + timedelta(days=7)
        if self.period == "month":
            start = day.replace(day=1)
            end = (start + timedelta(days=32)).replace(day=1)
            return start, end
        return (first or now), None


@dataclass(frozen=True)
class BudgetAlert:
    budget: Budget
    threshold: int
    spent: Decimal
    period_start: datetime
    timestamp: datetime

    @property
    def severity(self) -> str:
        return "HIGH" if self.threshold >= 100 else "WARN"


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    spent: Decimal
    remaining: Decimal
    percent: Decimal
    alerts: tuple[int, ...]
    period_start: datetime
    period_end: datetime | None
    burn_rate_per_hour: Decimal
    projected_exhaustion: datetime | None
    projected_period_spend: Decimal | None

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.name,
            "period": self.budget.period,
            "limit": money_str(self.budget.limit),
            "spent": money_str(self.spent),
            "remaining": money_str(self.remaining),
            "percent": str(self.percent),
            "alerts": list(self.alerts),
            "period_start": _iso(self.period_start),
            "period_end": _iso(self.period_end) if self.period_end else None,
            "burn_rate_per_hour": money_str(self.burn_rate_per_hour),
            "projected_exhaustion": _iso(self.projected_exhaustion) if self.projected_exhaustion else None,
            "projected_period_spend": money_str(self.projected_period_spend) if self.projected_period_spend is not None else None,
            "exhausted": self.exhausted,
        }


AlertCallback = Callable[[BudgetAlert], None]


class CostTracker:
    """Records costs, reports them by swarm/component/model/day and watches budgets."""

    def __init__(self, witness: Witness | None = None, *, load: bool = True,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.witness = witness
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.RLock()
        self._records: list[CostRecord] = []
        self._budgets: dict[str, Budget] = {}
        self._fired: set[tuple[str, str, int]] = set()
        self._callbacks: list[AlertCallback] = []
        self._spend_cache: dict[tuple[str, datetime], Decimal] = {}  # (budget, period start) -> spent
        if load and witness is not None:
            self.refresh()

    # ------------------------------------------------------------------ loading
    def refresh(self) -> None:
        """Rebuild from the witness log (costs, budgets and alerts already raised)."""
        if self.witness is None:
            return
        entries = self.witness.query(component=COMPONENT)
        records: list[CostRecord] = []
        budgets: dict[str, Budget] = {}
        fired: set[tuple[str, str, int]] = set()
        for e in entries:
            p = e["params"]
            try:
                if e["operation"] == "cost_tracked":
                    records.append(CostRecord(p["provider"], p["operation"], Decimal(p["cost"]), _utc(e["timestamp"]),
                                              dict(p.get("metadata") or {})))
                elif e["operation"] == "budget_set":
                    b = Budget(Decimal(p["limit"]), p["period"], p["scope"], p.get("target"))
                    budgets[b.name] = b
                elif e["operation"] == "budget_removed":
                    budgets.pop(p["budget"], None)
                elif e["operation"] == "budget_alert":
                    fired.add((p["budget"], p["period_start"], int(p["threshold"])))
            except (KeyError, ValueError, ArithmeticError) as exc:  # a foreign entry: skip, never crash
                log.warning("ignoring malformed optimise entry %s: %s", e.get("id"), exc)
        with self._lock:
            self._records, self._budgets, self._fired = records, budgets, fired
            self._spend_cache.clear()

    # ------------------------------------------------------------------ recording
    def track(self, provider: str, operation: str, cost: Any, **metadata: Any) -> CostRecord:
        if not isinstance(provider, str) or not provider:
            raise OptimiseInputError(f"provider must be a non-empty string, got {provider!r}")
        if not isinstance(operation, str) or not operation:
            raise OptimiseInputError(f"operation must be a non-empty string, got {operation!r}")
        amount = to_money(cost)
        trace_id = metadata.pop("trace_id", None)
        record = CostRecord(provider, operation, amount, self._clock(), dict(metadata))
        if self.witness is not None:
            self.witness.log(COMPONENT, "cost_tracked",
                             {"provider": provider, "operation": operation, "cost": money_str(amount),
                              "metadata": record.metadata}, "INFO", trace_id)
        with self._lock:
            self._records.append(record)
            alerts = self._new_alerts(record)
        for alert in alerts:
            self._emit(alert)
        return record

    def on_alert(self, callback: AlertCallback) -> None:
        self._callbacks.append(callback)

    def _emit(self, alert: BudgetAlert) -> None:
        if self.witness is not None:
            self.witness.log(COMPONENT, "budget_alert", {
                "budget": alert.budget.name, "threshold": alert.threshold, "spent": money_str(alert.spent),
                "limit": money_str(alert.budget.limit), "period": alert.budget.period,
                "period_start": _iso(alert.period_start)}, alert.severity)
        for cb in list(self._callbacks):
            try:
                cb(alert)
            except Exception:  # noqa: BLE001 - a failing listener must not lose the cost record
                log.exception("budget alert callback failed")

    def _first(self, budget: Budget) -> datetime | None:
        for r in self._records:
            if budget.applies_to(r):
                return r.timestamp
        return None

    def _spent(self, budget: Budget, start: datetime, end: datetime | None) -> Decimal:
        total = Decimal(0)
        for r in self._records:
            if r.timestamp >= start and (end is None or r.timestamp < end) and budget.applies_to(r):
                total += r.cost
        return total

    def _new_alerts(self, record: CostRecord) -> list[BudgetAlert]:
        alerts: list[BudgetAlert] = []
        for budget in self._budgets.values():
            if not budget.applies_to(record):
                continue
            start, end = budget.period_bounds(record.timestamp, self._first(budget) if budget.period == "total" else None)
            cache_key = (budget.name, start)
            if cache_key in self._spend_cache:  # the record is already in _records: add it once
                spent = self._spend_cache[cache_key] + record.cost
            else:
                spent = self._spent(budget, start, end)
            self._spend_cache[cache_key] = spent
            for threshold in ALERT_THRESHOLDS:
                key = (budget.name, _iso(start), threshold)
                if key not in self._fired and budget.limit > 0 and spent * 100 >= budget.limit * threshold:
                    self._fired.add(key)
                    alerts.append(BudgetAlert(budget, threshold, spent, start, record.timestamp))
        return alerts

    # ------------------------------------------------------------------ budgets
    def set_budget(self, limit: Any, period: str = "month", *, swarm: str | None = None,
                   component: str | None = None, model: str | None = None) -> Budget:
        if period not in PERIODS:
            raise OptimiseInputError(f"period must be one of {', '.join(PERIODS)}, got {period!r}")
        scopes = [(s, v) for s, v in (("swarm", swarm), ("component", component), ("model", model)) if v]
        if len(scopes) > 1:
            raise OptimiseInputError("a budget applies to one of swarm, component or model, not several")
        amount = to_money(limit, field="limit")
        if amount <= 0:
            raise OptimiseInputError(f"limit must be positive, got {limit!r}")
        scope, target = scopes[0] if scopes else ("global", None)
        budget = Budget(amount, period, scope, target)
        if self.witness is not None:
            self.witness.log(COMPONENT, "budget_set", {"limit": money_str(amount), "period": period,
                                                        "scope": scope, "target": target}, "INFO")
        with self._lock:
            self._budgets[budget.name] = budget
            self._spend_cache = {k: v for k, v in self._spend_cache.items() if k[0] != budget.name}
        return budget

    def budgets(self) -> list[Budget]:
        with self._lock:
            return list(self._budgets.values())

    def budget_status(self, now: datetime | None = None) -> list[BudgetStatus]:
        now = now or self._clock()
        out: list[BudgetStatus] = []
        with self._lock:
            for budget in self._budgets.values():
                start, end = budget.period_bounds(now, self._first(budget) if budget.period == "total" else None)
                spent = self._spent(budget, start, end)
                remaining = budget.limit - spent
                percent = (spent * 100 / budget.limit).quantize(Decimal("0.01"))
                alerts = tuple(t for t in ALERT_THRESHOLDS if spent * 100 >= budget.limit * t)
                elapsed = Decimal(str(max((now - start).total_seconds(), 0.0)))
                rate = spent / elapsed * 3600 if elapsed > 0 and spent > 0 else Decimal(0)
                exhaustion: datetime | None = None
                if spent >= budget.limit:
                    exhaustion = self._crossing_time(budget, start, end)
                elif rate > 0:
                    exhaustion = now + timedelta(hours=float(remaining / rate))
                period_spend = None
                if end is not None and rate > 0:
                    period_spend = (rate * Decimal(str((end - start).total_seconds())) / 3600).quantize(Decimal("0.000001"))
                out.append(BudgetStatus(budget, spent, remaining, percent, alerts, start, end,
                                        rate.quantize(Decimal("0.000001")), exhaustion, period_spend))
        return out

    def _crossing_time(self, budget: Budget, start: datetime, end: datetime | None) -> datetime | None:
        total = Decimal(0)
        for r in self._records:
            if r.timestamp >= start and (end is None or r.timestamp < end) and budget.applies_to(r):
                total += r.cost
                if total >= budget.limit:
                    return r.timestamp
        return None

    # ------------------------------------------------------------------ reports
    def records(self, provider: str | None = None, operation: str | None = None,
                since: datetime | None = None) -> list[CostRecord]:
        with self._lock:
            return [r for r in self._records
                    if (provider is None or r.provider == provider)
                    and (operation is None or r.operation == operation)
                    and (since is None or r.timestamp >= since)]

    def total(self, provider: str | None = None, since: datetime | None = None) -> Decimal:
        return sum((r.cost for r in self.records(provider, since=since)), Decimal(0))

    def report(self, group_by: str = "swarm", since: datetime | None = None,
               until: datetime | None = None) -> list[dict[str, Any]]:
        """Totals per group, highest cost first: key, cost, operations, share of the total (%)."""
        if group_by not in GROUPS:
            raise OptimiseInputError(f"group_by must be one of {', '.join(GROUPS)}, got {group_by!r}")
        totals: dict[str, Decimal] = defaultdict(Decimal)
        counts: dict[str, int] = defaultdict(int)
        for r in self.records(since=since):
            if until is not None and r.timestamp >= until:
                continue
            k = r.key(group_by)
            totals[k] += r.cost
            counts[k] += 1
        grand = sum(totals.values(), Decimal(0))
        rows = [{"key": k, "cost": money_str(v), "operations": counts[k],
                 "share": str((v * 100 / grand).quantize(Decimal("0.01"))) if grand else "0.00"}
                for k, v in totals.items()]
        order = (lambda row: row["key"]) if group_by == "day" else (lambda row: (-Decimal(row["cost"]), row["key"]))
        return sorted(rows, key=order)

    def get_cost_report(self, provider: str | None = None, since: datetime | None = None) -> dict[str, Any]:
        """Shape of the original stub: totals, counts and costs per operation, providers."""
        recs = self.records(provider, since=since)
        op_counts: dict[str, int] = defaultdict(int)
        op_costs: dict[str, Decimal] = defaultdict(Decimal)
        for r in recs:
            op_counts[r.operation] += 1
            op_costs[r.operation] += r.cost
        return {
            "total_cost": sum((r.cost for r in recs), Decimal(0)),
            "total_operations": len(recs),
            "operation_counts": dict(op_counts),
            "operation_costs": dict(op_costs),
            "providers": sorted({r.provider for r in recs}),
        }
