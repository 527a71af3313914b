"""SLO tracking and the reputation formula of the design document.

Reputation (last 100 executions): success_rate × compliance, where compliance starts at 1.0, is
×0.8 when the success rate is below the SLO and ×0.9 when p99 latency is above it. No data → 1.0
(benefit of the doubt). Latency and success are measured by the host, never reported by the guest.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from .contracts import DEFAULT_SLO, ServiceLevelObjective

WINDOW = 100


@dataclass(frozen=True)
class PerformanceSummary:
    """What the CLI and the governor feed show for one swarm."""

    swarm_id: str
    executions: int
    success_rate: float
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    reputation: float
    meets_slo: bool


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Design-doc percentile: sorted(values)[int(n × q)], clamped to the last element."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


class PerformanceTracker:
    """A sliding window of (latency_ms | None, success) per swarm."""

    def __init__(self, window: int = WINDOW) -> None:
        self._window = window
        self._samples: dict[str, deque[tuple[float | None, bool]]] = {}
        self._lock = threading.Lock()

    def record(self, swarm_id: str, latency_ms: float | None, success: bool) -> None:
        if latency_ms is not None:
            latency_ms = float(latency_ms)
            if not math.isfinite(latency_ms) or latency_ms < 0:
                raise ValueError(f"latency_ms must be a finite non-negative number, got {latency_ms!r}")
        with self._lock:
            self._samples.setdefault(swarm_id, deque(maxlen=self._window)).append((latency_ms, bool(success)))

    def samples(self, swarm_id: str) -> list[tuple[float | None, bool]]:
        with self._lock:
            return list(self._samples.get(swarm_id, ()))

    def forget(self, swarm_id: str) -> None:
        with self._lock:
            self._samples.pop(swarm_id, None)

    def reputation(self, swarm_id: str, slo: ServiceLevelObjective | None) -> float:
        return self.summary(swarm_id, slo).reputation

    def summary(self, swarm_id: str, slo: ServiceLevelObjective | None) -> PerformanceSummary:
        slo = slo or DEFAULT_SLO
        samples = self.samples(swarm_id)
        if not samples:
            return PerformanceSummary(swarm_id, 0, 1.0, None, None, None, 1.0, True)
        successes = sum(1 for _, ok in samples if ok)
        success_rate = successes / len(samples)
        latencies = sorted(lat for lat, ok in samples if ok and lat is not None)
        p99 = _percentile(latencies, 0.99)
        compliance = 1.0
        slow = p99 is None or p99 > slo.p99_latency_ms
        unreliable = success_rate < slo.success_rate
        if unreliable:
            compliance *= 0.8
        if slow:
            compliance *= 0.9
        reputation = max(0.0, min(1.0, compliance * success_rate))
        return PerformanceSummary(
            swarm_id=swarm_id,
            executions=len(samples),
            success_rate=success_rate,
            p50_latency_ms=_percentile(latencies, 0.50),
            p95_latency_ms=_percentile(latencies, 0.95),
            p99_latency_ms=p99,
            reputation=reputation,
            meets_slo=not (slow or unreliable),
        )
