"""The governor service's metrics: blocker answers and time-to-team as they happen, and each swarm's
budget and breaker read from the governor at scrape time (a collector, so no gauge can go stale)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infrafabric.errors import InfraFabricError
from infrafabric.governor.governor import IFGovernor

__all__ = ["GovernorMetrics"]

_TEAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LedgerCollector(Collector):
    def __init__(self, governor: IFGovernor) -> None:
        self.governor = governor

    def collect(self) -> Iterator[GaugeMetricFamily]:
        remaining = GaugeMetricFamily("if_budget_remaining_dollars", "Budget a swarm has left", labels=["swarm"])
        breaker = GaugeMetricFamily("if_breaker_open", "1 when a swarm's circuit breaker is open", labels=["swarm"])
        for swarm_id in list(self.governor.swarm_registry):  # a snapshot: the loop thread may change the dict
            try:
                remaining.add_metric([swarm_id], float(self.governor.budget_remaining(swarm_id)))
                state = self.governor.circuit_breaker_status(swarm_id)
                breaker.add_metric([swarm_id], 1.0 if state["state"] == "open" else 0.0)
            except (KeyError, InfraFabricError):
                continue  # deregistered between the snapshot and the read
        yield remaining
        yield breaker


class GovernorMetrics:
    def __init__(self, governor: IFGovernor, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.answers = Counter("if_blockers_answered_total", "Blockers answered, by outcome (team, escalated)",
                               ["outcome"], registry=r)
        self.time_to_team = Histogram("if_blocker_time_to_team_seconds",
                                      "From a blocker's report to its team being assigned", buckets=_TEAM_BUCKETS,
                                      registry=r)
        r.register(_LedgerCollector(governor))
        for outcome in ("team", "escalated"):  # known series exist (at 0) from the start
            self.answers.labels(outcome)

    def observe_assignment(self, assignment: dict[str, Any]) -> None:
        team = assignment.get("team")
        self.answers.labels("team" if team else "escalated").inc()
        detected = assignment.get("detected_at")
        if team and isinstance(detected, (int, float)):
            self.time_to_team.observe(max(0.0, time.time() - float(detected)))
