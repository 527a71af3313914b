"""Payout ledger. Every state change is a compare-and-set on ``status`` (and on the transaction hash when
a claim is taken), so two workers, or a worker and a recovery pass, never both send one payout.

A claim also requires the payout's node to exist at that moment (read under a share lock on PostgreSQL, so
a deletion committing meanwhile is waited for): a payout queued for a node deleted since is never sent,
and :meth:`SqlPayoutRepository.cancel_orphaned` moves it to ``cancelled``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import BatchConflictError, IdempotencyKeyConflictError
from ..models.node_models import Node, utcnow
from ..models.payout_models import Payout, PayoutStatus
from ..validators import from_micros, to_micros
from .engine import NodeDatabase
from .node_repo import node_from_row
from .tables import nodes, payout_batches, payouts

__all__ = ["SqlPayoutRepository", "Claim", "Outcome", "BatchRecord", "NODE_GONE"]

NODE_GONE = "Node deleted before the payout was sent"
# The payout's node still exists; FOR SHARE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes) makes
# a concurrent DELETE of it, which holds the row FOR UPDATE, finish first and then counts as gone.
_NODE_EXISTS = exists(select(nodes.c.node_id).where(nodes.c.node_id == payouts.c.node_id)
                      .with_for_update(read=True))


@dataclass(frozen=True)
class Claim:
    """pending -> processing, recording the prepared chain transaction before it is broadcast."""

    payout_id: str
    transaction_hash: str | None
    tx_payload: dict[str, Any] | None


@dataclass(frozen=True)
class Outcome:
    payout_id: str
    status: PayoutStatus
    transaction_hash: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    request_hash: str
    status: str
    total: int
    successful: int
    failed: int
    created_at: Any
    completed_at: Any
    scheduled_at: Any = None


def _to_row(p: Payout) -> dict[str, Any]:
    row = p.model_dump(mode="python", exclude={"amount"})
    row["amount_micros"] = to_micros(p.amount)
    row["status"] = p.status.value
    return row


def same_payment(stored: Payout, wanted: Payout) -> bool:
    """Whether a stored row is the payment ``wanted`` asks for: what would be paid, to whom, in which
    batch. (Status, ids and times are the ledger's own.)"""
    return (stored.node_id == wanted.node_id and stored.amount == wanted.amount
            and stored.wallet_address == wanted.wallet_address and stored.currency == wanted.currency
            and stored.batch_id == wanted.batch_id)


def _from_row(row: Any) -> Payout:
    d = dict(row._mapping)
    d["amount"] = from_micros(d.pop("amount_micros"))
    return Payout.model_validate(d)


class SqlPayoutRepository:
    def __init__(self, db: NodeDatabase) -> None:
        self.db = db

    # ------------------------------------------------------------------ nodes
    async def get_node_by_id(self, node_id: str) -> Node | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(nodes).where(nodes.c.node_id == node_id))).first()
        return node_from_row(row) if row is not None else None

    async def get_existing_node_ids(self, node_ids: Iterable[str]) -> set[str]:
        ids = set(node_ids)
        if not ids:
            return set()
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(select(nodes.c.node_id).where(nodes.c.node_id.in_(ids)))).all()
        return {r[0] for r in rows}

    # ------------------------------------------------------------------ payouts
    async def save_payout(self, payout: Payout) -> Payout:
        """Insert unless the idempotency key exists; return the stored row either way."""
        return (await self.save_payouts([payout]))[0]

    async def save_payouts(self, items: Sequence[Payout]) -> list[Payout]:
        """Atomic insert-if-absent by idempotency key (ON CONFLICT DO NOTHING), then read back: a key that
        was already in the ledger comes back in its stored state."""
        if not items:
            return []
        stmt = self.db.insert_ignore(payouts).on_conflict_do_nothing(index_elements=["idempotency_key"])
        keys = [p.idempotency_key for p in items]
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt, [_to_row(p) for p in items])
            rows = (await conn.execute(select(payouts).where(payouts.c.idempotency_key.in_(keys)))).all()
        by_key = {r.idempotency_key: _from_row(r) for r in rows}
        return [by_key[k] for k in keys]

    async def get_by_key(self, key: str) -> Payout | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(payouts).where(payouts.c.idempotency_key == key))).first()
        return _from_row(row) if row is not None else None

    async def get_by_ids(self, payout_ids: Sequence[str]) -> list[Payout]:
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(select(payouts).where(payouts.c.payout_id.in_(list(payout_ids))))).all()
        return [_from_row(r) for r in rows]

    async def claim(self, claims: Sequence[Claim]) -> set[str]:
        """pending -> processing with the prepared transaction, in one transaction. Returns the ids this
        caller won (its own transaction hash is on the row), so a concurrent claimer's rows are left alone."""
        if not claims:
            return set()
        now = utcnow()
        stmt = (update(payouts)
                .where(payouts.c.payout_id == bindparam("b_id"), payouts.c.status == PayoutStatus.PENDING.value,
                       _NODE_EXISTS)
                .values(status=PayoutStatus.PROCESSING.value, transaction_hash=bindparam("b_tx"),
                        tx_payload=bindparam("b_payload"), processed_at=now, updated_at=now))
        params = [{"b_id": c.payout_id, "b_tx": c.transaction_hash, "b_payload": c.tx_payload} for c in claims]
        wanted = {c.payout_id: c.transaction_hash for c in claims}
        async with self.db.engine.begin() as conn:
            if len(params) == 1:
                res = await conn.execute(stmt, params[0])
                return {claims[0].payout_id} if res.rowcount == 1 else set()
            await conn.execute(stmt, params)
            rows = (await conn.execute(select(payouts.c.payout_id, payouts.c.transaction_hash, payouts.c.status)
                                       .where(payouts.c.payout_id.in_(list(wanted))))).all()
        return {r.payout_id for r in rows
                if r.status == PayoutStatus.PROCESSING.value and r.transaction_hash == wanted[r.payout_id]}

    async def cancel_orphaned(self, payout_ids: Sequence[str]) -> list[str]:
        """pending -> cancelled for those of ``payout_ids`` whose node no longer exists (a claim refused
        them); returns the ids cancelled. A payout whose node is there is left as it is."""
        if not payout_ids:
            return []
        now = utcnow()
        ids = list(payout_ids)
        async with self.db.engine.begin() as conn:
            res = await conn.execute(
                update(payouts).where(payouts.c.payout_id.in_(ids), payouts.c.status == PayoutStatus.PENDING.value,
                                      ~_NODE_EXISTS)
                .values(status=PayoutStatus.CANCELLED.value, error_message=NODE_GONE, updated_at=now))
            if res.rowcount == 0:
                return []
            rows = (await conn.execute(select(payouts.c.payout_id).where(
                payouts.c.payout_id.in_(ids), payouts.c.status == PayoutStatus.CANCELLED.value,
                payouts.c.updated_at == now))).all()
        return [r[0] for r in rows]

    async def replace_transaction(self, payout_id: str, old_hash: str | None, new_hash: str,
                                  payload: dict[str, Any]) -> bool:
        """Swap an expired, never-landed transaction for a fresh one (CAS on the old hash)."""
        async with self.db.engine.begin() as conn:
            res = await conn.execute(
                update(payouts).where(payouts.c.payout_id == payout_id,
                                      payouts.c.status == PayoutStatus.PROCESSING.value,
                                      payouts.c.transaction_hash == old_hash)
                .values(transaction_hash=new_hash, tx_payload=payload, retry_count=payouts.c.retry_count + 1,
                        updated_at=utcnow()))
        return res.rowcount == 1

    async def finalize(self, outcomes: Sequence[Outcome]) -> None:
        """processing -> completed/failed for many payouts in one transaction."""
        if not outcomes:
            return
        now = utcnow()
        stmt = (update(payouts)
                .where(payouts.c.payout_id == bindparam("b_id"), payouts.c.status == PayoutStatus.PROCESSING.value)
                .values(status=bindparam("b_status"), transaction_hash=bindparam("b_tx"),
                        error_message=bindparam("b_err"), completed_at=bindparam("b_done"), updated_at=now))
        params = [{"b_id": o.payout_id, "b_status": o.status.value, "b_tx": o.transaction_hash,
                   "b_err": o.error_message, "b_done": now if o.status == PayoutStatus.COMPLETED else None}
                  for o in outcomes]
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt, params if len(params) > 1 else params[0])

    async def fail_pending(self, payout_id: str, error: str) -> bool:
        async with self.db.engine.begin() as conn:
            res = await conn.execute(update(payouts).where(payouts.c.payout_id == payout_id,
                                                           payouts.c.status == PayoutStatus.PENDING.value)
                                     .values(status=PayoutStatus.FAILED.value, error_message=error,
                                             updated_at=utcnow()))
        return res.rowcount == 1

    async def list_by_status(self, statuses: Sequence[PayoutStatus], limit: int = 1000,
                             batch_id: str | None = None, due_only: bool = False) -> list[Payout]:
        stmt = select(payouts).where(payouts.c.status.in_([s.value for s in statuses]))
        if batch_id is not None:
            stmt = stmt.where(payouts.c.batch_id == batch_id)
        if due_only:
            stmt = stmt.where(or_(payouts.c.scheduled_at.is_(None), payouts.c.scheduled_at <= utcnow()))
        stmt = stmt.order_by(payouts.c.created_at, payouts.c.payout_id).limit(limit)
        async with self.db.reader.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(stmt)).all()]

    def _filtered(self, stmt: Any, node_id: str | None, batch_id: str | None, status: str | None) -> Any:
        if node_id is not None:
            stmt = stmt.where(payouts.c.node_id == node_id)
        if batch_id is not None:
            stmt = stmt.where(payouts.c.batch_id == batch_id)
        if status is not None:
            stmt = stmt.where(payouts.c.status == str(status))
        return stmt

    async def list_payouts(self, *, node_id: str | None = None, batch_id: str | None = None,
                           status: str | None = None, offset: int = 0, limit: int = 20) -> list[Payout]:
        stmt = self._filtered(select(payouts), node_id, batch_id, status)
        stmt = stmt.order_by(payouts.c.created_at.desc(), payouts.c.payout_id).offset(offset).limit(limit)
        async with self.db.reader.connect() as conn:
            return [_from_row(r) for r in (await conn.execute(stmt)).all()]

    async def count_payouts(self, *, node_id: str | None = None, batch_id: str | None = None,
                            status: str | None = None) -> int:
        stmt = self._filtered(select(func.count()).select_from(payouts), node_id, batch_id, status)
        async with self.db.reader.connect() as conn:
            return int(await conn.scalar(stmt) or 0)

    async def status_counts(self, batch_id: str) -> dict[str, int]:
        stmt = (select(payouts.c.status, func.count()).where(payouts.c.batch_id == batch_id)
                .group_by(payouts.c.status))
        async with self.db.reader.connect() as conn:
            return {r[0]: int(r[1]) for r in (await conn.execute(stmt)).all()}

    # ------------------------------------------------------------------ batches
    async def record_batch(self, batch_id: str, request_hash: str, items: Sequence[Payout],
                           scheduled_at: Any = None) -> BatchRecord:
        """Claim ``batch_id`` and record its payouts as ``pending`` in ONE transaction.

        Why one: checking the id, inserting payouts and then creating the batch as three steps let two
        racing payloads both insert their payouts while only one won the id (the loser was paid too).
        Here the batch row is inserted first; a concurrent claim of the same id waits on its unique key
        and then fails, rolling back everything it did. The same id with the same payload is returned
        as stored (nothing inserted); another payload is :class:`BatchConflictError`; an idempotency key
        already in the ledger for a different payment is :class:`IdempotencyKeyConflictError`. Either
        refusal leaves nothing behind."""
        keys = [p.idempotency_key for p in items]
        if len(set(keys)) != len(keys):
            raise IdempotencyKeyConflictError("The batch names one idempotency key for two payouts")
        now = utcnow()
        try:
            async with self.db.engine.begin() as conn:
                taken = await conn.execute(self.db.insert_ignore(payout_batches).on_conflict_do_nothing(
                    index_elements=["batch_id"]).values(
                    batch_id=batch_id, request_hash=request_hash, status="scheduled" if scheduled_at else "queued",
                    total=len(items), successful=0, failed=0, scheduled_at=scheduled_at, created_at=now,
                    updated_at=now))
                if taken.rowcount == 1 and items:
                    stmt = self.db.insert_ignore(payouts).on_conflict_do_nothing(index_elements=["idempotency_key"])
                    await conn.execute(stmt, [_to_row(p) for p in items])
                    rows = (await conn.execute(select(payouts).where(payouts.c.idempotency_key.in_(keys)))).all()
                    stored = {r.idempotency_key: _from_row(r) for r in rows}
                    clash = [p.idempotency_key for p in items if not same_payment(stored[p.idempotency_key], p)]
                    if clash:  # raising inside the block rolls back the batch row and every payout
                        raise IdempotencyKeyConflictError(
                            f"{len(clash)} idempotency key(s) already used for a different payout",
                            details={"idempotency_keys": clash[:50]})
        except IntegrityError:
            pass  # a concurrent claim of this id committed first; its record decides below
        rec = await self.get_batch(batch_id)
        if rec is None:
            raise BatchConflictError(f"Batch {batch_id} could not be recorded")
        if rec.request_hash != request_hash:
            raise BatchConflictError(f"Batch {batch_id} was submitted with a different payload")
        return rec

    async def update_batch(self, batch_id: str, *, status: str, successful: int, failed: int,
                           done: bool = False) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(update(payout_batches).where(payout_batches.c.batch_id == batch_id).values(
                status=status, successful=successful, failed=failed, updated_at=utcnow(),
                completed_at=utcnow() if done else None))

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(payout_batches).where(payout_batches.c.batch_id == batch_id))).first()
        if row is None:
            return None
        m = row._mapping
        return BatchRecord(m["batch_id"], m["request_hash"], m["status"], m["total"], m["successful"], m["failed"],
                           m["created_at"], m["completed_at"], m["scheduled_at"])

    async def list_batches(self, status: str | None = None, limit: int = 100) -> list[BatchRecord]:
        stmt = select(payout_batches.c.batch_id)
        if status is not None:
            stmt = stmt.where(payout_batches.c.status == status)
        async with self.db.reader.connect() as conn:
            ids = [r[0] for r in (await conn.execute(stmt.order_by(payout_batches.c.created_at).limit(limit))).all()]
        return [b for b in [await self.get_batch(i) for i in ids] if b is not None]

    async def due_scheduled_batches(self) -> list[str]:
        stmt = select(payout_batches.c.batch_id).where(payout_batches.c.status == "scheduled",
                                                       payout_batches.c.scheduled_at <= utcnow())
        async with self.db.reader.connect() as conn:
            return [r[0] for r in (await conn.execute(stmt)).all()]

    async def unfinished_batches(self) -> list[str]:
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(select(payout_batches.c.batch_id)
                                       .where(payout_batches.c.status.in_(["queued", "processing"])))).all()
        return [r[0] for r in rows]
