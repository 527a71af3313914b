"""Resource samples of nodes, as their heartbeats report them: the monitor's history lives in the database,
so it survives a restart of the API and every replica of it sees the same charts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select

from .engine import NodeDatabase
from .tables import node_resource_samples as samples

__all__ = ["SAMPLE_FIELDS", "SqlResourceSampleRepository"]

SAMPLE_FIELDS = ("cpu_percent", "memory_percent", "memory_used_bytes", "memory_total_bytes", "disk_percent",
                 "disk_used_bytes", "disk_total_bytes", "network_bytes_sent", "network_bytes_recv")


class SqlResourceSampleRepository:
    def __init__(self, db: NodeDatabase) -> None:
        self.db = db

    async def add(self, node_id: str, sampled_at: datetime, sample: dict[str, Any]) -> None:
        row = {"node_id": node_id, "sampled_at": sampled_at, **{k: sample[k] for k in SAMPLE_FIELDS}}
        async with self.db.engine.begin() as conn:
            await conn.execute(insert(samples), [row])

    async def since(self, node_id: str, since: datetime, limit: int = 5000) -> list[dict[str, Any]]:
        """Samples of one node from ``since``, oldest first (at most the newest ``limit``)."""
        stmt = (select(samples).where(samples.c.node_id == node_id, samples.c.sampled_at >= since)
                .order_by(samples.c.sampled_at.desc(), samples.c.id.desc()).limit(limit))
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [{"timestamp": r.sampled_at.isoformat(), **{k: getattr(r, k) for k in SAMPLE_FIELDS}}
                for r in reversed(rows)]

    async def prune(self, before: datetime) -> int:
        async with self.db.engine.begin() as conn:
            return (await conn.execute(delete(samples).where(samples.c.sampled_at < before))).rowcount or 0

    async def forget(self, node_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(delete(samples).where(samples.c.node_id == node_id))
