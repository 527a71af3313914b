"""ResourceMonitor: each node's own resource figures, as its heartbeats report them, kept in the database
(history for charts, pruned by age); thresholds and allocations against the node's limits.

Why heartbeats: the API runs on one host and the nodes on others; sampling the API host with psutil
reported every node with the same (wrong) figures. ``sample_host`` remains for the API's own health.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psutil

from backends.periodic import Periodic

from ..db.resource_repo import SAMPLE_FIELDS, SqlResourceSampleRepository
from ..errors import InvalidAllocationError, NodeNotFoundError, ResourceLimitError
from ..models.node_models import Node, utcnow

__all__ = ["ResourceMonitor", "TIME_RANGES"]

TIME_RANGES = {"1h": timedelta(hours=1), "6h": timedelta(hours=6), "24h": timedelta(hours=24),
               "7d": timedelta(days=7)}


def sample_host(disk_path: str = "/") -> dict[str, Any]:
    """One psutil sample (all calls are non-blocking: cpu_percent uses the delta since the last call)."""
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage(disk_path)
    net = psutil.net_io_counters()
    return {"timestamp": utcnow().isoformat(), "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_percent": vm.percent, "memory_used_bytes": vm.used, "memory_total_bytes": vm.total,
            "disk_percent": disk.percent, "disk_used_bytes": disk.used, "disk_total_bytes": disk.total,
            "network_bytes_sent": net.bytes_sent if net else 0, "network_bytes_recv": net.bytes_recv if net else 0}


class ResourceMonitor:
    def __init__(self, samples: SqlResourceSampleRepository, *, interval: float = 3600.0,
                 retention: timedelta = TIME_RANGES["7d"]) -> None:
        """``interval``: how often samples older than ``retention`` are pruned."""
        self.samples = samples
        self.interval = interval
        self.retention = retention
        self._limits: dict[str, dict[str, Any]] = {}
        self._thresholds: dict[str, dict[str, float]] = {}
        self._allocations: dict[str, dict[str, float]] = {}
        self._monitored: set[str] = set()
        self._retention = Periodic(self.prune, lambda: self.interval, name="lucid-resource-monitor")

    # ---------------------------------------------------------- lifecycle hooks used by NodeService
    async def initialize_node(self, node: Node) -> None:
        limits = node.configuration.resource_limits if node.configuration else None
        hw = node.hardware_info
        self._limits[node.node_id] = {
            "cpu_percent": (limits.cpu_percent if limits and limits.cpu_percent else 100.0),
            "memory_bytes": (limits.memory_bytes if limits and limits.memory_bytes
                             else (hw.memory.total_bytes if hw else None)),
            "disk_bytes": (limits.disk_bytes if limits and limits.disk_bytes
                           else (hw.storage.total_bytes if hw else None)),
        }

    async def start_monitoring(self, node_id: str) -> None:
        self._monitored.add(node_id)

    async def record(self, node_id: str, sample: dict[str, Any]) -> None:
        """One heartbeat's figures (validated at the API boundary) into the node's history."""
        missing = [k for k in SAMPLE_FIELDS if k not in sample]
        if missing:
            raise ValueError(f"resource sample lacks {missing}")
        await self.samples.add(node_id, utcnow(), sample)

    async def stop_monitoring(self, node_id: str) -> None:
        self._monitored.discard(node_id)

    def knows(self, node_id: str) -> bool:
        return node_id in self._limits

    def is_monitoring(self, node_id: str) -> bool:
        return node_id in self._monitored

    def forget(self, node_id: str) -> None:
        for d in (self._limits, self._thresholds, self._allocations):
            d.pop(node_id, None)
        self._monitored.discard(node_id)

    # ---------------------------------------------------------- retention loop
    async def prune(self) -> None:
        """Drop samples older than the retention (a database that is away: the next pass prunes)."""
        await self.samples.prune(utcnow() - self.retention)

    def start(self) -> None:
        self._retention.start()

    async def close(self) -> None:
        await self._retention.stop()

    # ---------------------------------------------------------- queries
    async def get_node_resources(self, node_id: str, time_range: str = "1h") -> dict[str, Any]:
        samples = await self.samples.since(node_id, utcnow() - TIME_RANGES[time_range])
        current = samples[-1] if samples else None
        return {"node_id": node_id, "time_range": time_range, "monitoring": node_id in self._monitored,
                "current": current, "samples": samples, "alerts": self._alerts(node_id, current),
                "allocations": self._allocations.get(node_id, {})}

    def _alerts(self, node_id: str, current: dict[str, Any] | None) -> list[str]:
        if current is None:
            return []
        return [f"{k} {current[k]} above threshold {v}" for k, v in self._thresholds.get(node_id, {}).items()
                if k in current and current[k] > v]

    async def set_thresholds(self, node_id: str, thresholds: dict[str, float]) -> dict[str, float]:
        self._thresholds[node_id] = dict(thresholds)
        return self._thresholds[node_id]

    async def allocate(self, node_id: str, request: dict[str, float]) -> dict[str, float]:
        """Reserve resources on a node: the sum of allocations stays within the node's limits."""
        limits = self._limits.get(node_id)
        if limits is None:
            raise NodeNotFoundError(f"Node {node_id} has no resource record")
        if not request or any(v is None or v < 0 for v in request.values()):
            raise InvalidAllocationError("Allocation amounts must be non-negative")
        current = self._allocations.setdefault(node_id, {})
        for key, amount in request.items():
            limit = limits.get(key)
            if limit is not None and current.get(key, 0) + amount > limit:
                raise ResourceLimitError(f"{key} allocation exceeds the node's limit {limit}")
        for key, amount in request.items():
            current[key] = current.get(key, 0) + amount
        return dict(current)

    def health(self) -> dict[str, Any]:
        t = time.perf_counter()
        sample_host()
        return {"status": "healthy", "sample_ms": round((time.perf_counter() - t) * 1000, 3),
                "monitored_nodes": len(self._monitored)}
