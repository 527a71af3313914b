"""PoOT persistence: validations, and the nonce table whose primary key (node_id, nonce) makes replay
detection atomic on both engines: of two concurrent submissions of one nonce exactly one INSERT wins."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from functools import partial
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, tuple_, update

from ..errors import GroupCommitError, InvalidPoOTError, NonceReplayError
from ..models.node_models import Node, NodeStatus, utcnow
from ..models.poot_models import PoOTValidationResult
from ..poot.score_window import ScoreWindow
from .. import poot_rules
from . import poot_sqlite
from .engine import NodeDatabase
from .node_repo import node_from_row
from .poot_writer_process import PoOTWriterProcess, WriterProcessLost
from .tables import nodes, poot_nonces, poot_validations

__all__ = ["SqlPoOTRepository", "NONCE_WINDOW", "STALE_SERVE", "ValidationSummary", "ENV_POOT_WRITER"]

_log = logging.getLogger("lucid.node.poot")

ENV_POOT_WRITER = "LUCID_NODE_POOT_WRITER"  # "process" (the default on an SQLite file) or "thread"
NONCE_WINDOW = timedelta(hours=24)
STALE_SERVE = 30.0  # seconds past expiry a history window may still be scored with while it reloads


def _rejection(code: str) -> InvalidPoOTError:
    if code == poot_rules.REPLAY:
        return NonceReplayError("Nonce already used")
    if code == poot_rules.INACTIVE:
        return InvalidPoOTError("Node not found or inactive")
    return InvalidPoOTError("Invalid or missing signature")


def _group_failed(size: int, exc: BaseException, outcome: str = "none of them was stored") -> GroupCommitError:
    error = GroupCommitError(f"Storing a group of {size} failed ({type(exc).__name__}); {outcome}")
    error.__cause__ = exc
    return error


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """A background reload's outcome is not awaited: a failure is logged, and the next proof retries."""
    if not fut.cancelled() and fut.exception() is not None:
        _log.warning("PoOT history reload failed: %r", fut.exception())


# (result, claim its nonce, key it was checked against (or None) / None if unchecked, waiter)
_Queued = tuple[PoOTValidationResult, bool, "tuple[str | None] | None", "asyncio.Future[None]"]


@dataclass(frozen=True, slots=True)
class ValidationSummary:
    is_valid: bool
    score: float
    created_at: datetime | None = None
    validation_id: str | None = None


def _to_row(v: PoOTValidationResult) -> dict[str, Any]:
    return v.model_dump(mode="python")


def _replay_attempt(v: PoOTValidationResult) -> PoOTValidationResult:
    """What a replayed proof leaves on record: a failed attempt, as the validator records other refusals."""
    return PoOTValidationResult(validation_id=v.validation_id, node_id=v.node_id, output_hash=v.output_hash,
                                timestamp=v.timestamp, nonce=v.nonce, is_valid=False, errors=["Nonce already used"],
                                batch_id=v.batch_id, validation_time_ms=v.validation_time_ms, created_at=v.created_at)


def _from_row(row: Any) -> PoOTValidationResult:
    d = dict(row._mapping)
    d["output_data"] = d.get("output_data") or ""
    return PoOTValidationResult.model_validate(d)


_NODE_STATE = (select(nodes.c.node_id, nodes.c.status, nodes.c.public_key)
               .where(nodes.c.node_id.in_(bindparam("b_nodes", expanding=True))))
_INSERT_VALIDATION = poot_validations.insert()
_NODE_BY_ID = select(nodes).where(nodes.c.node_id == bindparam("b_node"))
_NONCE_LOOKUP = select(poot_nonces).where(
    tuple_(poot_nonces.c.node_id, poot_nonces.c.nonce).in_(bindparam("b_keys", expanding=True)),
    poot_nonces.c.used_at >= bindparam("b_since"))
_STORED_ERRORS = (select(poot_validations.c.validation_id, poot_validations.c.errors)
                  .where(poot_validations.c.validation_id.in_(bindparam("b_ids", expanding=True))))
_HISTORY = (select(poot_validations.c.is_valid, poot_validations.c.score, poot_validations.c.created_at,
                    poot_validations.c.validation_id)
            .where(poot_validations.c.node_id == bindparam("b_node"))
            .order_by(poot_validations.c.created_at.desc()).limit(bindparam("b_limit")))
_HISTORY_SINCE = _HISTORY.where(poot_validations.c.created_at >= bindparam("b_since"))
_SET_SCORE = (update(nodes).where(nodes.c.node_id == bindparam("b_node"))
              .values(poot_score=bindparam("b_score")))


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
        self._process: PoOTWriterProcess | None = db.poot_writer_process() if mode == "process" else None
        self.process_group = process_group
        self.process_depth = process_depth
        self._groups_in_flight = 0
        self._send_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._restarting: asyncio.Task[None] | None = None
        self._reconciling: set[asyncio.Future[None]] = set()
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._nonce_queue: list[tuple[str, str, datetime, Any]] = []
        # Statements are built once so SQLAlchemy's compiled cache always hits (a multi-VALUES insert
        # built per group was recompiled for every group size). A claim wins if the row is new or its
        # previous use is older than the window; RETURNING names the winners.
        ins = db.insert_ignore(poot_nonces)
        self._claim = (ins.values(node_id=bindparam("b_node"), nonce=bindparam("b_nonce"), used_at=bindparam("b_used"))
                       .on_conflict_do_update(index_elements=["node_id", "nonce"],
                                              set_={"used_at": ins.excluded.used_at},
                                              where=poot_nonces.c.used_at < bindparam("b_cutoff"))
                       .returning(poot_nonces.c.node_id, poot_nonces.c.nonce))
        self._nonce_flusher: asyncio.Task[None] | None = None
        self._history_reads: dict[str, asyncio.Future[list[ValidationSummary]]] = {}

    caches_nodes = True
    records_nonce_replays = True  # a lost claim is stored as a failed attempt, in the claiming transaction

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
        """Store a result. With ``claim_nonce`` the nonce is claimed in the same transaction, and a replay
        raises NonceReplayError, and what is written instead is a failed attempt ("Nonce already used",
        score 0) under the result's id, as the validator records its other refusals. With ``checked_against``
        (``(public key or None,)``, what the PoOTValidator checked the proof against) the result is also
        refused (InvalidPoOTError, nothing written) if, inside that transaction, its node is no longer
        active or no longer has that key.

        Concurrent calls are group-committed, so throughput does not pay one commit per proof: on an
        SQLite file the writer process commits groups of up to ``process_group`` (``process_depth``
        in flight); otherwise whoever finds no flush running drains everything queued in one
        transaction. An idle call is sent at once, without waiting for company. If a transaction fails,
        every waiter of its group gets that error and nothing of the group is stored."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((validation, claim_nonce, checked_against, fut))
        if self._process is not None:
            if loop is not self._loop:  # used from a new event loop: the old loop's groups are not ours
                self._loop, self._groups_in_flight, self._send_scheduled = loop, 0, False
                self._generation += 1
            self._kick(loop)
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._drain())
        await fut

    # ------------------------------------------------------------------ writer process (SQLite file)
    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Send what is queued at the end of this loop iteration, if a pipeline slot is free (proofs
        validated in the same iteration travel together)."""
        if not self._send_scheduled and self._groups_in_flight < self.process_depth:
            self._send_scheduled = True
            loop.call_soon(self._send)

    def _send(self) -> None:
        self._send_scheduled = False
        proc = self._process
        assert proc is not None
        if not proc.running:
            if self._queue and (self._restarting is None or self._restarting.done()):
                self._restarting = asyncio.ensure_future(self._start_process())
            return
        while self._queue and self._groups_in_flight < self.process_depth:
            batch, self._queue = self._queue[:self.process_group], self._queue[self.process_group:]
            now = utcnow()
            items = [poot_sqlite.item_of(v, claim, against) for v, claim, against, _ in batch]
            try:
                answer = proc.submit(now, now - NONCE_WINDOW, self.store_output, items)
            except Exception as exc:  # noqa: BLE001 - not sent: nothing of it can be stored
                self._resolve(batch, error=_group_failed(len(batch), exc))
                continue
            self._groups_in_flight += 1
            answer.add_done_callback(partial(self._group_answered, batch, self._generation))

    async def _start_process(self) -> None:
        assert self._process is not None
        try:
            await self._process.start()
        except Exception as exc:  # noqa: BLE001 - the queued proofs fail; the next one tries again
            _log.error("PoOT writer process could not start: %r", exc)
            queued, self._queue = self._queue, []
            self._resolve(queued, error=_group_failed(len(queued), exc))
            return
        self._kick(asyncio.get_running_loop())

    def _group_answered(self, batch: list[_Queued], generation: int, answer: asyncio.Future[dict[int, str]]) -> None:
        if generation == self._generation:
            self._groups_in_flight -= 1
        exc = answer.exception() if not answer.cancelled() else asyncio.CancelledError()
        if exc is None:
            rejected = {i: _rejection(code) for i, code in answer.result().items()}
            self._after_commit(batch, rejected)
            self._resolve(batch, rejected=rejected)
        elif isinstance(exc, WriterProcessLost):
            task = asyncio.ensure_future(self._reconcile(batch, exc))
            self._reconciling.add(task)  # referenced until done (the loop keeps only weak references)
            task.add_done_callback(self._reconciling.discard)
        else:  # WriterProcessError: rolled back
            self._resolve(batch, error=_group_failed(len(batch), exc))
        if self._queue:
            self._kick(asyncio.get_running_loop())

    async def _reconcile(self, batch: list[_Queued], lost: WriterProcessLost) -> None:
        """The process died with this group in flight. The group is one transaction: if any of its
        rows is in the database it was committed, and each proof's fate is read from its row (a
        replay's row is a failed attempt; a refused proof has none); if none is, nothing was."""
        ids = [v.validation_id for v, *_ in batch]
        try:
            stored = dict(await self.db.read(lambda conn: [tuple(r) for r in conn.execute(
                _STORED_ERRORS, {"b_ids": ids}).all()]))
            states: dict[str, tuple[str, str | None]] = {}
            if stored:
                refused = list({v.node_id for v, *_ in batch if v.validation_id not in stored})
                if refused:
                    states = {r.node_id: (r.status, r.public_key or None) for r in await self.db.read(
                        lambda conn: conn.execute(_NODE_STATE, {"b_nodes": refused}).all())}
        except Exception as exc:  # noqa: BLE001 - the outcome cannot be read: say so, not "not stored"
            self._resolve(batch, error=_group_failed(len(batch), exc, "whether it was stored is unknown; "
                                                     "a retry is refused as a replay if it was"))
            return
        if not stored:
            self._resolve(batch, error=_group_failed(len(batch), lost))
            return
        rejected: dict[int, Exception] = {}
        for i, (v, *_) in enumerate(batch):
            errors = stored.get(v.validation_id)
            if errors is None:
                rejected[i] = _rejection(poot_rules.refusal_of_unstored(states.get(v.node_id), NodeStatus.ACTIVE.value))
            elif poot_rules.is_replay_record(errors, v.errors):
                rejected[i] = _rejection(poot_rules.REPLAY)
        self._after_commit(batch, rejected)
        self._resolve(batch, rejected=rejected)

    @staticmethod
    def _resolve(batch: list[_Queued], *, rejected: dict[int, Exception] | None = None,
                 error: Exception | None = None) -> None:
        for i, (*_, fut) in enumerate(batch):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            elif rejected and i in rejected:
                fut.set_exception(rejected[i])
            else:
                fut.set_result(None)

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_group], self._queue[self.max_group:]
            try:
                rejected = await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - every waiter of this group gets the failure
                self._resolve(batch, error=_group_failed(len(batch), exc))
                continue
            self._after_commit(batch, rejected)
            self._resolve(batch, rejected=rejected)

    def _after_commit(self, batch: list[_Queued], rejected: dict[int, Exception]) -> None:
        history, node_cache = self.db.poot_history, self.db.node_cache
        for i, (v, *_) in enumerate(batch):
            if i in rejected:
                if isinstance(rejected[i], NonceReplayError):
                    history.append(v.node_id, ValidationSummary(False, 0.0, v.created_at, v.validation_id))
                else:
                    node_cache.invalidate(v.node_id)  # the snapshot was stale
                continue
            history.append(v.node_id, ValidationSummary(v.is_valid, v.score, v.created_at, v.validation_id))
            if v.is_valid:
                cached = node_cache.get(v.node_id)
                if cached is not None:
                    # the committed score (already validated, 0-100) into the shared snapshot; Node
                    # validates assignments, a cost per proof for a value that is known good
                    cached.__dict__["poot_score"] = v.score

    async def _write(self, batch: list[_Queued]) -> dict[int, Exception]:
        return await self.db.write(partial(self._write_tx, batch))

    def _write_tx(self, batch: list[_Queued], conn: Connection) -> dict[int, Exception]:
        """One transaction for a group (runs on the writer thread on SQLite, see NodeDatabase.write).
        On SQLite it is poot_sqlite.group_transaction, as in the writer process; elsewhere SQLAlchemy
        Core's statements, with the same rules."""
        now = utcnow()
        if conn.dialect.name == "sqlite":
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                codes = poot_sqlite.group_transaction(
                    cur, [poot_sqlite.item_of(v, claim, against) for v, claim, against, _ in batch],
                    now, now - NONCE_WINDOW, self.store_output, NodeStatus.ACTIVE.value)
            finally:
                cur.close()
            return {i: _rejection(code) for i, code in codes.items()}
        codes = poot_rules.decide_group(
            [(v.node_id, v.nonce, claim, against) for v, claim, against, _ in batch],
            states=lambda node_ids: {r.node_id: (r.status, r.public_key or None)
                                     for r in conn.execute(_NODE_STATE, {"b_nodes": node_ids}).all()},
            claim=lambda keys: self._claim_core(conn, keys, now), active=NodeStatus.ACTIVE.value)
        written, scores = poot_rules.stored_rows(((v.node_id, v.is_valid, v.score) for v, *_ in batch), codes)
        if written:
            rows = [_to_row(_replay_attempt(batch[i][0]) if as_replay else batch[i][0]) for i, as_replay in written]
            if not self.store_output:
                for row in rows:
                    row["output_data"] = None
            conn.execute(_INSERT_VALIDATION, rows)
        if scores:
            conn.execute(_SET_SCORE, [{"b_node": k, "b_score": v} for k, v in scores.items()])
        return {i: _rejection(code) for i, code in codes.items()}

    def _claim_core(self, conn: Connection, keys: list[tuple[str, str]], now: datetime) -> set[tuple[str, str]]:
        """An upsert that wins if the nonce is new or its last use is older than the window; RETURNING
        names the winners (PostgreSQL runs concurrent transactions: the upsert is the arbiter)."""
        cutoff = now - NONCE_WINDOW
        return {(r.node_id, r.nonce) for r in conn.execute(
            self._claim, [{"b_node": n, "b_nonce": k, "b_used": now, "b_cutoff": cutoff} for n, k in keys])}

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
