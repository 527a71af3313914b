"""Pool persistence."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import InvalidAllocationError, PoolAlreadyExistsError, ResourceLimitError
from ..models.node_models import utcnow
from ..models.pool_models import NodePool
from .engine import NodeDatabase
from .tables import node_pools

__all__ = ["SqlPoolRepository"]

_JSON = ("resource_limits", "scaling_policy")


def _to_row(pool: NodePool) -> dict[str, Any]:
    row = pool.model_dump(mode="python")
    for f in _JSON:
        v = getattr(pool, f)
        row[f] = v.model_dump(mode="json") if v is not None else None
    return row


def _from_row(row: Any) -> NodePool:
    return NodePool.model_validate(dict(row._mapping))


class SqlPoolRepository:
    def __init__(self, db: NodeDatabase) -> None:
        self.db = db

    async def create(self, pool: NodePool) -> NodePool:
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(node_pools.insert().values(**_to_row(pool)))
        except IntegrityError as exc:
            raise PoolAlreadyExistsError(f"Pool {pool.pool_id} / {pool.name!r} already exists") from exc
        return pool

    async def get_by_id(self, pool_id: str) -> NodePool | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(node_pools).where(node_pools.c.pool_id == pool_id))).first()
        return _from_row(row) if row is not None else None

    async def list(self, offset: int = 0, limit: int = 20) -> list[NodePool]:
        stmt = select(node_pools).order_by(node_pools.c.created_at, node_pools.c.pool_id).offset(offset).limit(limit)
        async with self.db.reader.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(stmt)).all()]

    async def count(self) -> int:
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(node_pools)) or 0)

    async def update(self, pool: NodePool) -> bool:
        row = _to_row(pool)
        for k in ("pool_id", "node_count", "created_at"):
            row.pop(k)
        row["updated_at"] = utcnow()
        try:
            async with self.db.engine.begin() as conn:
                stmt = update(node_pools).where(node_pools.c.pool_id == pool.pool_id,
                                                node_pools.c.node_count <= row["max_nodes"])
                res = await conn.execute(stmt.values(**row))
        except IntegrityError as exc:
            raise PoolAlreadyExistsError(f"Pool named {pool.name!r} already exists") from exc
        if res.rowcount != 1:
            raise ResourceLimitError("max_nodes is below the pool's current node count")
        return True

    async def delete(self, pool_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            row = (await conn.execute(select(node_pools.c.node_count).where(node_pools.c.pool_id == pool_id))).first()
            if row is None:
                return False
            if row[0] > 0:
                raise InvalidAllocationError(f"Pool {pool_id} still has {row[0]} nodes")
            await conn.execute(node_pools.delete().where(node_pools.c.pool_id == pool_id))
        return True
