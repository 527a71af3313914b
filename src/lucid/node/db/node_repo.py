"""Node persistence. Pool membership counters change in the same transaction as the node rows, under
the pool row's lock (creations) or a conditional UPDATE ``node_count < max_nodes`` (joins), so concurrent
joins cannot overfill a pool."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import (
    InvalidAllocationError, NodeAlreadyExistsError, NodeNotFoundError, NodePayoutsPendingError, PoolNotFoundError,
    ResourceLimitError,
)
from ..models.node_models import Node, utcnow
from . import node_sqlite
from .engine import NodeDatabase
from .group_commit import drain_groups
from .tables import node_pools, nodes, payouts

__all__ = ["SqlNodeRepository", "node_from_row", "node_to_row"]

_JSON_FIELDS = ("hardware_info", "location", "configuration")
_UNSETTLED = ("pending", "processing")  # payout states that may still send money
# What update() may write: pool membership has its own statements (the pool counters move with it), the
# score is the PoOT writer's, the id and creation time never change.
_UPDATABLE = frozenset({"name", "status", "node_type", "hardware_info", "location", "configuration", "public_key",
                        "last_heartbeat", "updated_at"})


def node_to_row(node: Node) -> dict[str, Any]:
    row = node.model_dump(mode="python")
    for f in _JSON_FIELDS:
        value = getattr(node, f)
        row[f] = value.model_dump(mode="json") if value is not None else None
    row["status"] = node.status.value
    row["node_type"] = node.node_type.value
    return row


def node_from_row(row: Any) -> Node:
    return Node.model_validate(dict(row._mapping))


async def _join_pool(conn: AsyncConnection, pool_id: str) -> None:
    res = await conn.execute(
        update(node_pools).where(node_pools.c.pool_id == pool_id, node_pools.c.node_count < node_pools.c.max_nodes)
        .values(node_count=node_pools.c.node_count + 1, updated_at=utcnow())
    )
    if res.rowcount == 1:
        return
    exists = await conn.scalar(select(node_pools.c.pool_id).where(node_pools.c.pool_id == pool_id))
    if exists is None:
        raise PoolNotFoundError(f"Pool {pool_id} not found")
    raise ResourceLimitError(f"Pool {pool_id} is full")


async def _leave_pool(conn: AsyncConnection, pool_id: str) -> None:
    await conn.execute(
        update(node_pools).where(node_pools.c.pool_id == pool_id, node_pools.c.node_count > 0)
        .values(node_count=node_pools.c.node_count - 1, updated_at=utcnow())
    )


# Pool seats are read under the pool rows' lock (BEGIN IMMEDIATE on SQLite, FOR UPDATE on PostgreSQL).
_POOL_SEATS = (select(node_pools.c.pool_id, node_pools.c.node_count, node_pools.c.max_nodes)
               .where(node_pools.c.pool_id.in_(bindparam("b_pools", expanding=True))).with_for_update())
_POOL_JOIN = (update(node_pools).where(node_pools.c.pool_id == bindparam("b_pool"))
              .values(node_count=node_pools.c.node_count + bindparam("b_n"), updated_at=bindparam("b_now")))


class SqlNodeRepository:
    """The NodeService's ``node_repository``."""

    def __init__(self, db: NodeDatabase, *, max_group: int = 200) -> None:
        self.db = db
        self.max_group = max_group
        self._queue: list[tuple[Node, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Built once so the compiled form is cached; ON CONFLICT DO NOTHING RETURNING names the new rows.
        self._insert = db.insert_ignore(nodes).on_conflict_do_nothing().returning(nodes.c.node_id)

    async def create(self, node: Node) -> Node:
        """Insert a node (joining its pool if it names one).

        Concurrent creations are group-committed: the caller that finds no flush running writes every
        queued node in one transaction. Per node the outcome is exact: ON CONFLICT DO NOTHING RETURNING
        tells which names were new (NodeAlreadyExistsError for the rest), and pool seats are handed out
        under the pool rows' lock (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE on PostgreSQL)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((node, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(drain_groups(self._queue, self.max_group, self._write))
        await fut
        return node

    async def _write(self, batch: list[tuple[Node, Any]]) -> dict[int, Exception]:
        return await self.db.write(partial(self._write_tx, batch))

    def _write_tx(self, batch: list[tuple[Node, Any]], conn: Connection) -> dict[int, Exception]:
        """One transaction for a group (one hop to the writer thread on SQLite, see NodeDatabase.write).
        On SQLite the statements are node_sqlite's, each one step; elsewhere SQLAlchemy Core's."""
        cur = conn.connection.dbapi_connection.cursor() if conn.dialect.name == "sqlite" else None  # type: ignore[union-attr]
        try:
            return self._group_tx(batch, conn, cur)
        finally:
            if cur is not None:
                cur.close()

    def _group_tx(self, batch: list[tuple[Node, Any]], conn: Connection, cur: Any) -> dict[int, Exception]:
        errors: dict[int, Exception] = {}
        pool_ids = list({n.pool_id for n, _ in batch if n.pool_id})
        seats: dict[str, int] = {}
        if pool_ids:
            if cur is not None:
                seats = node_sqlite.pool_seats(cur, pool_ids)
            else:
                rows = conn.execute(_POOL_SEATS, {"b_pools": pool_ids}).all()
                seats = {r.pool_id: r.max_nodes - r.node_count for r in rows}
        todo: list[tuple[int, Node]] = []
        for i, (n, _) in enumerate(batch):
            if n.pool_id:
                if n.pool_id not in seats:
                    errors[i] = PoolNotFoundError(f"Pool {n.pool_id} not found")
                    continue
                if seats[n.pool_id] <= 0:
                    errors[i] = ResourceLimitError(f"Pool {n.pool_id} is full")
                    continue
                seats[n.pool_id] -= 1
            todo.append((i, n))
        if not todo:
            return errors
        if cur is not None:
            # under BEGIN IMMEDIATE's write lock: what exists now is what the insert would meet; the group's
            # own duplicates are decided here too (the first one wins, as the upsert below would)
            ids, names = node_sqlite.taken(cur, (n for _, n in todo))
            inserted: set[str] = set()
            for _, n in todo:
                if n.node_id not in ids and n.name not in names:
                    inserted.add(n.node_id)
                    ids.add(n.node_id)
                    names.add(n.name)
            node_sqlite.insert_nodes(cur, [node_sqlite.node_values(n) for _, n in todo if n.node_id in inserted])
        else:
            inserted = {r[0] for r in conn.execute(self._insert, [node_to_row(n) for _, n in todo]).all()}
        joined: dict[str, int] = {}
        for i, n in todo:
            if n.node_id not in inserted:
                errors[i] = NodeAlreadyExistsError(f"Node named {n.name!r} already exists")
            elif n.pool_id:
                joined[n.pool_id] = joined.get(n.pool_id, 0) + 1
        if joined:
            if cur is not None:
                node_sqlite.join_pools(cur, joined, utcnow())
            else:
                conn.execute(_POOL_JOIN, [{"b_pool": k, "b_n": v, "b_now": utcnow()} for k, v in joined.items()])
        return errors

    async def get_by_id(self, node_id: str) -> Node | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.node_id == node_id))).first()
        return node_from_row(row) if row is not None else None

    async def get_by_ids(self, node_ids: list[str]) -> dict[str, Node]:
        if not node_ids:
            return {}
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(select(nodes).where(nodes.c.node_id.in_(set(node_ids))))).all()
        return {r.node_id: node_from_row(r) for r in rows}

    async def update(self, node: Node, expected_status: str | None = None, *, fields: Collection[str] | None = None,
                     expected_updated_at: datetime | None = None) -> bool:
        """Write the node's mutable fields, or only ``fields`` (``updated_at`` is always set).

        With ``expected_status`` it is a compare-and-set on status, with ``expected_updated_at`` also on the
        row's last edit. Callers name the columns they changed: a write of the whole row read earlier undid
        whatever committed in between (a heartbeat restored a rotated-out key). ``poot_score`` is the PoOT
        writer's alone and is never written here."""
        row = node_to_row(node)
        if fields is None:
            for k in ("node_id", "pool_id", "pool_priority", "created_at", "poot_score"):
                row.pop(k)
        else:
            unknown = set(fields) - _UPDATABLE
            if unknown:
                raise ValueError(f"not updatable through update(): {sorted(unknown)}")
            row = {k: row[k] for k in fields}
        node.updated_at = row["updated_at"] = utcnow()
        stmt = update(nodes).where(nodes.c.node_id == node.node_id)
        if expected_status is not None:
            stmt = stmt.where(nodes.c.status == str(expected_status))
        if expected_updated_at is not None:
            stmt = stmt.where(nodes.c.updated_at == expected_updated_at)
        stmt = stmt.values(**row)
        try:
            # Through the same writer as PoOT saves (NodeDatabase.write): heartbeats and state changes then
            # queue behind proofs in-process instead of meeting them at SQLite's busy handler.
            rowcount = await self.db.write(lambda conn: conn.execute(stmt).rowcount)
        except IntegrityError as exc:
            raise NodeAlreadyExistsError(f"Node named {node.name!r} already exists") from exc
        finally:
            self.db.node_cache.invalidate(node.node_id)
        return bool(rowcount == 1)

    async def delete(self, node_id: str) -> bool:
        try:
            return await self._delete(node_id)
        finally:
            self.db.node_cache.invalidate(node_id)

    async def _delete(self, node_id: str) -> bool:
        """Delete, unless a payout to the node is pending or processing (NodePayoutsPendingError): a payout
        must not outlive its node. The node row is locked first (FOR UPDATE; BEGIN IMMEDIATE on SQLite), so a
        payout claim, which reads it under a share lock, either finished before (and is seen here) or finds
        the node gone (and cancels the payout). A payout queued after this check meets the same claim rule."""
        async with self.db.engine.begin() as conn:
            pool_id = (await conn.execute(select(nodes.c.pool_id).where(nodes.c.node_id == node_id)
                                          .with_for_update())).first()
            if pool_id is None:
                return False
            unsettled = await conn.scalar(
                select(func.count()).select_from(payouts).where(
                    payouts.c.node_id == node_id, payouts.c.status.in_(_UNSETTLED)))
            if unsettled:
                raise NodePayoutsPendingError(
                    f"Node {node_id} has {unsettled} payout(s) pending or processing; delete it once they "
                    "settle",
                    details={"unsettled_payouts": int(unsettled)})
            await conn.execute(nodes.delete().where(nodes.c.node_id == node_id))
            if pool_id[0]:
                await _leave_pool(conn, pool_id[0])
        return True

    def _filtered(self, stmt: Any, status: str | None, pool_id: str | None, name: str | None) -> Any:
        if status is not None:
            stmt = stmt.where(nodes.c.status == str(status))
        if pool_id is not None:
            stmt = stmt.where(nodes.c.pool_id == pool_id)
        if name is not None:
            stmt = stmt.where(nodes.c.name == name)
        return stmt

    async def list(self, offset: int = 0, limit: int = 20, status: str | None = None, pool_id: str | None = None,
                   name: str | None = None) -> list[Node]:
        stmt = self._filtered(select(nodes), status, pool_id, name)
        stmt = stmt.order_by(nodes.c.created_at, nodes.c.node_id).offset(offset).limit(limit)
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [node_from_row(r) for r in rows]

    async def count(self, status: str | None = None, pool_id: str | None = None, name: str | None = None) -> int:
        stmt = self._filtered(select(func.count()).select_from(nodes), status, pool_id, name)
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def count_by_status(self) -> dict[str, int]:
        """Nodes per status, in one GROUP BY (the metrics scrape)."""
        stmt = select(nodes.c.status, func.count()).group_by(nodes.c.status)
        async with self.db.reader.connect() as conn:
            return {str(status): int(n) for status, n in (await conn.execute(stmt)).all()}

    async def assign_pool(self, node_id: str, pool_id: str, priority: int = 50) -> None:
        try:
            await self._assign_pool(node_id, pool_id, priority)
        finally:
            self.db.node_cache.invalidate(node_id)

    async def _assign_pool(self, node_id: str, pool_id: str, priority: int) -> None:
        async with self.db.engine.begin() as conn:
            current = (await conn.execute(select(nodes.c.pool_id).where(nodes.c.node_id == node_id))).first()
            if current is None:
                raise NodeNotFoundError(f"Node {node_id} not found")
            if current[0] == pool_id:
                raise InvalidAllocationError(f"Node {node_id} is already in pool {pool_id}")
            if current[0]:
                raise InvalidAllocationError(f"Node {node_id} is already in pool {current[0]}")
            await _join_pool(conn, pool_id)
            await conn.execute(update(nodes).where(nodes.c.node_id == node_id)
                               .values(pool_id=pool_id, pool_priority=priority, updated_at=utcnow()))

    async def unassign_pool(self, node_id: str, pool_id: str) -> None:
        try:
            await self._unassign_pool(node_id, pool_id)
        finally:
            self.db.node_cache.invalidate(node_id)

    async def _unassign_pool(self, node_id: str, pool_id: str) -> None:
        async with self.db.engine.begin() as conn:
            res = await conn.execute(update(nodes).where(nodes.c.node_id == node_id, nodes.c.pool_id == pool_id)
                                     .values(pool_id=None, updated_at=utcnow()))
            if res.rowcount != 1:
                raise NodeNotFoundError(f"Node {node_id} is not in pool {pool_id}")
            await _leave_pool(conn, pool_id)
