"""PoOT persistence: validations, and the nonce table whose primary key (node_id, nonce) makes replay
detection atomic on both engines: of two concurrent submissions of one nonce exactly one INSERT wins."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update

from ..errors import NonceReplayError
from ..models.node_models import Node, utcnow
from ..models.poot_models import PoOTValidationResult
from .engine import NodeDatabase
from .node_repo import node_from_row
from .tables import nodes, poot_nonces, poot_validations

__all__ = ["SqlPoOTRepository", "NONCE_WINDOW", "ValidationSummary"]

NONCE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ValidationSummary:
    is_valid: bool
    score: float
    created_at: datetime | None = None


def _to_row(v: PoOTValidationResult) -> dict[str, Any]:
    return v.model_dump(mode="python")


def _from_row(row: Any) -> PoOTValidationResult:
    d = dict(row._mapping)
    d["output_data"] = d.get("output_data") or ""
    return PoOTValidationResult.model_validate(d)


class SqlPoOTRepository:
    """The PoOTValidator's single repository (nodes are read through it too, as the seed's tests expect)."""

    def __init__(self, db: NodeDatabase, *, store_output: bool = True, max_group: int = 500) -> None:
        self.db = db
        self.store_output = store_output
        self.max_group = max_group
        self._queue: list[tuple[PoOTValidationResult, bool, Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def get_by_id(self, node_id: str) -> Node | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.node_id == node_id))).first()
        return node_from_row(row) if row is not None else None

    async def get_by_nonce(self, node_id: str, nonce: str, since: datetime | None = None) -> dict[str, Any] | None:
        since = since or utcnow() - NONCE_WINDOW
        stmt = select(poot_nonces).where(poot_nonces.c.node_id == node_id, poot_nonces.c.nonce == nonce,
                                         poot_nonces.c.used_at >= since)
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return dict(row._mapping) if row is not None else None

    async def get_recent_validations(self, node_id: str, limit: int = 100,
                                     since: datetime | None = None) -> list[ValidationSummary]:
        """The node's latest results, lightweight: this runs on every proof, and only validity and score
        feed reliability and confidence."""
        stmt = select(poot_validations.c.is_valid, poot_validations.c.score, poot_validations.c.created_at)
        stmt = stmt.where(poot_validations.c.node_id == node_id)
        if since is not None:
            stmt = stmt.where(poot_validations.c.created_at >= since)
        stmt = stmt.order_by(poot_validations.c.created_at.desc()).limit(limit)
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [ValidationSummary(bool(r[0]), float(r[1]), r[2]) for r in rows]

    async def save_validation(self, validation: PoOTValidationResult, *, claim_nonce: bool = False) -> None:
        """Store a result. With ``claim_nonce`` the nonce is claimed in the same transaction, and a replay
        raises NonceReplayError with nothing of this validation written.

        Concurrent calls are group-committed: whoever finds no flush running drains everything queued
        in one transaction (one upsert ... RETURNING decides every claim), so throughput does not pay
        one commit per proof. An idle call flushes at once, without waiting for company."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((validation, claim_nonce, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        await fut

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_group], self._queue[self.max_group:]
            try:
                rejected = await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - every waiter of this group gets the failure
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for i, (_, _, fut) in enumerate(batch):
                if not fut.done():
                    if i in rejected:
                        fut.set_exception(NonceReplayError("Nonce already used"))
                    else:
                        fut.set_result(None)

    async def _write(self, batch: list[tuple[PoOTValidationResult, bool, Any]]) -> set[int]:
        now = utcnow()
        claims: dict[tuple[str, str], int] = {}
        rejected: set[int] = set()
        for i, (v, claim, _) in enumerate(batch):
            if claim:
                if (v.node_id, v.nonce) in claims:  # the same nonce twice in one group: the later one is a replay
                    rejected.add(i)
                else:
                    claims[(v.node_id, v.nonce)] = i
        async with self.db.engine.begin() as conn:
            if claims:
                ins = self.db.insert_ignore(poot_nonces)
                ins = ins.on_conflict_do_update(index_elements=["node_id", "nonce"],
                                                set_={"used_at": ins.excluded.used_at},
                                                where=poot_nonces.c.used_at < now - NONCE_WINDOW)
                ins = ins.values([{"node_id": k[0], "nonce": k[1], "used_at": now} for k in claims])
                won = {(r.node_id, r.nonce) for r in
                       (await conn.execute(ins.returning(poot_nonces.c.node_id, poot_nonces.c.nonce))).all()}
                rejected |= {i for k, i in claims.items() if k not in won}
            rows = []
            scores: dict[str, float] = {}
            for i, (v, _, _) in enumerate(batch):
                if i in rejected:
                    continue
                row = _to_row(v)
                if not self.store_output:
                    row["output_data"] = None
                rows.append(row)
                if v.is_valid:
                    scores[v.node_id] = v.score
            if rows:
                await conn.execute(poot_validations.insert(), rows)
            if scores:
                await conn.execute(update(nodes).where(nodes.c.node_id == bindparam("b_node"))
                                   .values(poot_score=bindparam("b_score")),
                                   [{"b_node": k, "b_score": v} for k, v in scores.items()])
        return rejected

    async def list_history(self, node_id: str, offset: int = 0, limit: int = 20) -> list[PoOTValidationResult]:
        stmt = (select(poot_validations).where(poot_validations.c.node_id == node_id)
                .order_by(poot_validations.c.created_at.desc()).offset(offset).limit(limit))
        async with self.db.reader.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(stmt)).all()]

    async def count_history(self, node_id: str) -> int:
        stmt = select(func.count()).select_from(poot_validations).where(poot_validations.c.node_id == node_id)
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def latest(self, node_id: str, *, valid_only: bool = False) -> PoOTValidationResult | None:
        stmt = select(poot_validations).where(poot_validations.c.node_id == node_id)
        if valid_only:
            stmt = stmt.where(poot_validations.c.is_valid.is_(True))
        stmt = (stmt.order_by(poot_validations.c.created_at.desc()).limit(1))
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return _from_row(row) if row is not None else None

    async def find_by_min_score(self, min_score: float, limit: int = 100) -> list[PoOTValidationResult]:
        stmt = select(poot_validations).where(poot_validations.c.score >= min_score).limit(limit)
        async with self.db.reader.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(stmt)).all()]
