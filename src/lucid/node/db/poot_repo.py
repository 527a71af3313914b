"""PoOT persistence: validations, and the nonce table whose primary key (node_id, nonce) makes replay
detection atomic on both engines: of two concurrent submissions of one nonce exactly one INSERT wins."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import bindparam, func, select, tuple_

from ..models.node_models import Node, NodeStatus, utcnow
from ..models.poot_models import PoOTValidationResult
from ..poot.repository import RepositoryTraits
from ..poot.score_window import ScoreWindow
from .engine import NodeDatabase
from .node_repo import node_from_row
from .poot_commit import NONCE_WINDOW, PoOTGroupCommitter, ValidationSummary
from .tables import nodes, poot_nonces, poot_validations

__all__ = ["SqlPoOTRepository", "NONCE_WINDOW", "STALE_SERVE", "ValidationSummary", "ENV_POOT_WRITER"]

_log = logging.getLogger("lucid.node.poot")

ENV_POOT_WRITER = "LUCID_NODE_POOT_WRITER"  # "process" (the default on an SQLite file) or "thread"
STALE_SERVE = 30.0  # seconds past expiry a history window may still be scored with while it reloads


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A background reload's outcome is not awaited: a failure is logged, and the next proof retries."""
    if not fut.cancelled() and fut.exception() is not None:
        _log.warning("PoOT history reload failed: %r", fut.exception())


def _from_row(row: Any) -> PoOTValidationResult:
    d = dict(row._mapping)
    d["output_data"] = d.get("output_data") or ""
    return PoOTValidationResult.model_validate(d)


_NODE_BY_ID = select(nodes).where(nodes.c.node_id == bindparam("b_node"))
_NONCE_LOOKUP = select(poot_nonces).where(
    tuple_(poot_nonces.c.node_id, poot_nonces.c.nonce).in_(bindparam("b_keys", expanding=True)),
    poot_nonces.c.used_at >= bindparam("b_since"))
_HISTORY = (select(poot_validations.c.is_valid, poot_validations.c.score, poot_validations.c.created_at,
                    poot_validations.c.validation_id)
            .where(poot_validations.c.node_id == bindparam("b_node"))
            .order_by(poot_validations.c.created_at.desc()).limit(bindparam("b_limit")))
_HISTORY_SINCE = _HISTORY.where(poot_validations.c.created_at >= bindparam("b_since"))


class SqlPoOTRepository:
    """The PoOTValidator's single repository (nodes are read through it too, as the seed's tests expect).

    Hot path, per proof: the node and its recent history come from the NodeDatabase's caches (caches.py);
    concurrent nonce look-ups share one SELECT; concurrent saves share one transaction (group commit).
    The node's status and key are re-read inside that transaction, so the caches never decide a rule."""

    def __init__(self, db: NodeDatabase, *, store_output: bool = True, max_group: int = 500,
                 writer: str | None = None, process_group: int = 16, process_depth: int = 2) -> None:
        """``writer`` chooses who commits the groups on an SQLite file: ``"process"`` (the default; env
        LUCID_NODE_POOT_WRITER), the database's PoOT writer process, up to ``process_depth`` groups of at
        most ``process_group`` in flight, so validating and committing overlap (poot_writer_process);
        ``"thread"``, the writer thread, one group of at most ``max_group`` at a time. PostgreSQL always
        commits through its engine (``max_group``)."""
        self.db = db
        self.store_output = store_output
        self.max_group = max_group
        mode = (writer or os.environ.get(ENV_POOT_WRITER) or "process").strip().lower()
        if mode not in ("process", "thread"):
            raise ValueError(f"{ENV_POOT_WRITER} must be 'process' or 'thread', not {mode!r}")
        self.commits = PoOTGroupCommitter(
            db, store_output=store_output, max_group=max_group,
            process=db.poot_writer_process() if mode == "process" else None,
            process_group=process_group, process_depth=process_depth)
        self._nonce_queue: list[tuple[str, str, datetime, Any]] = []
        self._nonce_flusher: asyncio.Task[None] | None = None
        self._history_reads: dict[str, asyncio.Future[list[ValidationSummary]]] = {}

    # nodes come from a cache; a lost nonce claim is stored as a failed attempt in the claiming transaction;
    # the node's live score window is served (get_score_window)
    traits: ClassVar[RepositoryTraits] = RepositoryTraits(caches_nodes=True, records_nonce_replays=True,
                                                          keeps_score_windows=True)

    async def get_by_id(self, node_id: str, *, fresh: bool = False) -> Node | None:
        """The node, from NodeSnapshotCache when it holds it (the object is shared: do not mutate).

        Only active nodes are cached: a refusal ("not found or inactive") always comes from a fresh read,
        and an acceptance is confirmed inside the storing transaction, so a stale snapshot can neither
        refuse an active node nor admit an inactive one. ``fresh`` skips the cache (PoOTValidator asks for
        it before refusing a signature, in case the node was re-keyed elsewhere)."""
        cache = self.db.node_cache
        if fresh:
            cache.invalidate(node_id)
        else:
            node = cache.get(node_id)
            if node is not None:
                return node  # type: ignore[no-any-return]
        generation = cache.generation
        row = await self.db.read(lambda conn: conn.execute(_NODE_BY_ID, {"b_node": node_id}).first())
        if row is None:
            return None
        node = node_from_row(row)
        if node.status == NodeStatus.ACTIVE:
            cache.put(node, generation)
        return node

    async def get_by_nonce(self, node_id: str, nonce: str, since: datetime | None = None) -> dict[str, Any] | None:
        """The nonce's claim if it was used since ``since``. Concurrent calls share one SELECT."""
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._nonce_queue.append((node_id, nonce, since or utcnow() - NONCE_WINDOW, fut))
        if self._nonce_flusher is None or self._nonce_flusher.done():
            self._nonce_flusher = asyncio.create_task(self._drain_nonces())
        return await fut

    async def _drain_nonces(self) -> None:
        while self._nonce_queue:
            batch, self._nonce_queue = self._nonce_queue[:self.max_group], self._nonce_queue[self.max_group:]
            params = {"b_keys": list({(n, k) for n, k, _, _ in batch}), "b_since": min(b[2] for b in batch)}
            try:
                found = await self.db.read(lambda conn, params=params: {
                    (r.node_id, r.nonce): dict(r._mapping) for r in conn.execute(_NONCE_LOOKUP, params).all()})
            except Exception as exc:  # noqa: BLE001 - every waiter of this look-up gets the failure
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for node_id, nonce, since, fut in batch:
                hit = found.get((node_id, nonce))
                if not fut.done():
                    fut.set_result(hit if hit is not None and hit["used_at"] >= since else None)

    async def get_recent_validations(self, node_id: str, limit: int = 100,
                                     since: datetime | None = None) -> list[ValidationSummary]:
        """The node's latest results, lightweight: this runs on every proof, and only validity and score
        feed reliability and confidence. Served from PoOTHistoryCache when it can."""
        history = self.db.poot_history
        if since is not None:
            return await self._read_history(node_id, limit, since)
        cached = history.get(node_id, limit)
        if cached is not None:
            return cached
        items = await asyncio.shield(self._load_history(node_id, limit))
        return items[:limit]

    def _load_history(self, node_id: str, limit: int = 0) -> asyncio.Future[list[ValidationSummary]]:
        """Single flight: under load every proof of a node whose entry expired (or whose load raced a
        commit) missed at once and each read the same rows; now they share one read."""
        pending = self._history_reads.get(node_id)
        if pending is None:
            rows = max(limit, self.db.poot_history.capacity)
            pending = asyncio.ensure_future(self._read_history(node_id, rows, None))
            self._history_reads[node_id] = pending
            pending.add_done_callback(lambda _f, node_id=node_id: self._history_reads.pop(node_id, None))
        return pending

    async def get_score_window(self, node_id: str, limit: int = 100) -> ScoreWindow:
        """The node's newest ``limit`` summaries with their running sums (what the validator scores with):
        the cached window itself when it is loaded, so a proof costs no copy of the history.

        A window expired for less than ``STALE_SERVE`` seconds is served while a reload runs in the
        background: this process's own commits are always in it (appended as they commit); only other
        processes' validations of the node can be missing, for one reload longer than before. A blocking
        reload put a database read on the proof that found the entry expired (see caches.py for how
        often that is)."""
        history = self.db.poot_history
        if limit == history.capacity:
            aged = history.aged_window(node_id)
            if aged is not None:
                window, overdue = aged
                if overdue <= 0:
                    return window
                if overdue <= STALE_SERVE:
                    self._load_history(node_id).add_done_callback(_retrieve)
                    return window
        items = await self.get_recent_validations(node_id, limit)
        if limit == history.capacity:
            window = history.window(node_id)  # loaded by that read unless a commit raced it
            if window is not None:
                return window
        return ScoreWindow.of(items, limit)

    async def _read_history(self, node_id: str, limit: int, since: datetime | None) -> list[ValidationSummary]:
        history = self.db.poot_history
        params: dict[str, Any] = {"b_node": node_id, "b_limit": limit}
        if since is not None:
            params["b_since"] = since
            rows = await self.db.read(lambda conn: conn.execute(_HISTORY_SINCE, params).all())
            return [ValidationSummary(bool(r[0]), float(r[1]), r[2], r[3]) for r in rows]
        version = history.version(node_id)
        try:
            rows = await self.db.read(lambda conn: conn.execute(_HISTORY, params).all())
        except BaseException:
            history.abandon(node_id)
            raise
        items = [ValidationSummary(bool(r[0]), float(r[1]), r[2], r[3]) for r in rows]
        history.load(node_id, items, version)
        return items

    async def save_validation(self, validation: PoOTValidationResult, *, claim_nonce: bool = False,
                              checked_against: tuple[str | None] | None = None) -> None:
        """Store a result (``PoOTGroupCommitter.save``: the nonce claimed and the node re-checked in the
        storing transaction; concurrent calls share one)."""
        await self.commits.save(validation, claim_nonce=claim_nonce, checked_against=checked_against)

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
