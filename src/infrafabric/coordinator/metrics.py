"""The coordinator service's metrics (Prometheus names: base units, ``_total``, ``_seconds``).

Each instance owns its registry unless one is passed, so a library user who never scrapes pays only the
increments and two services in one test process never collide on names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["CoordinatorMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class CoordinatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.pushed = Counter("if_tasks_pushed_total", "Tasks pushed into swarms' inboxes", registry=r)
        self.claims = Counter("if_task_claims_total", "Claim attempts by outcome (won, lost)", ["outcome"],
                              registry=r)
        self.completed = Counter("if_tasks_completed_total", "Tasks completed under a valid claim", registry=r)
        self.claim_seconds = Histogram("if_claim_duration_seconds", "Time to decide one claim request",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.blockers = Counter("if_blockers_reported_total", "Blockers reported by swarms", registry=r)
        self.sessions = Gauge("if_swarm_sessions", "Live swarm sessions on this replica", registry=r)
        self.refused = Counter("if_swarm_calls_refused_total", "Calls refused, by error code", ["code"], registry=r)
        for outcome in ("won", "lost"):  # known series exist (at 0) from the start
            self.claims.labels(outcome)
        for code in ("IF_ERR_AUTH_INVALID", "IF_ERR_AUTH_EXPIRED", "IF_ERR_AUTH_REVOKED", "IF_ERR_NOT_OWNER",
                     "IF_ERR_NO_SESSION", "IF_ERR_SWARM_ALREADY_CONNECTED"):
            self.refused.labels(code)
