"""IF.optimise: exact cost accounting with budgets, alerts (50/80/100 %) and exhaustion projections.

Costs are witness entries (component ``IF.optimise``), so they are audited and shared by every
process that uses the same witness log.
"""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal
from typing import Any

from ..witness import get_default_witness
from .errors import OptimiseError, OptimiseInputError
from .money import money_str, to_money
from .tracker import (
    ALERT_THRESHOLDS,
    GROUPS,
    PERIODS,
    Budget,
    BudgetAlert,
    BudgetStatus,
    CostRecord,
    CostTracker,
)

_default: CostTracker | None = None
_lock = threading.Lock()


def get_default_tracker() -> CostTracker:
    """The tracker bound to the current default witness (rebuilt when the witness is replaced)."""
    global _default
    witness = get_default_witness()
    tracker = _default
    if tracker is not None and tracker.witness is witness:
        return tracker
    with _lock:
        if _default is None or _default.witness is not witness:
            _default = CostTracker(witness)
        return _default


def reset_default_tracker() -> None:
    global _default
    with _lock:
        _default = None


def track_operation_cost(provider: str, operation: str, cost: Any, **metadata: Any) -> CostRecord:
    """Record ``cost`` (exact Decimal) of ``operation`` by ``provider`` (a swarm id) in the default tracker."""
    return get_default_tracker().track(provider, operation, cost, **metadata)


def get_total_cost(provider: str | None = None, since: datetime | None = None) -> Decimal:
    return get_default_tracker().total(provider, since)


def get_cost_report(provider: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    return get_default_tracker().get_cost_report(provider, since)


def get_cost_records(provider: str | None = None, operation: str | None = None,
                     since: datetime | None = None) -> list[CostRecord]:
    return get_default_tracker().records(provider, operation, since)


__all__ = [
    "ALERT_THRESHOLDS", "GROUPS", "PERIODS", "Budget", "BudgetAlert", "BudgetStatus", "CostRecord", "CostTracker",
    "OptimiseError", "OptimiseInputError", "get_cost_records", "get_cost_report", "get_default_tracker",
    "get_total_cost", "money_str", "reset_default_tracker", "to_money", "track_operation_cost",
]
