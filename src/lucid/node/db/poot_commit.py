"""PoOT group commit: concurrent validations stored in one transaction, by the database's writer process
(an SQLite file) or its engine (the writer thread; PostgreSQL).

Why apart from the repository's reads: storing is where the rules are enforced (the node re-read in the
transaction, the nonce claimed, a replay recorded as a failed attempt; ``poot_rules`` and
``poot_sqlite.group_transaction``), where a group's fate is reconciled after a lost writer process, and
where the caches learn of each commit. The reads (``poot_repo.SqlPoOTRepository``) only serve those caches.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from .. import poot_rules
from ..errors import InvalidPoOTError, NonceReplayError
from ..models.node_models import NodeStatus, utcnow
from ..models.poot_models import PoOTValidationResult
from ..sqlite_writer import poot_sqlite
from .engine import NodeDatabase
from .group_commit import drain_groups, group_failed, settle_group
from .poot_writer_process import PoOTWriterProcess, WriterProcessLost
from .tables import nodes, poot_nonces, poot_validations

__all__ = ["NONCE_WINDOW", "PoOTGroupCommitter", "ValidationSummary"]

_log = logging.getLogger("lucid.node.poot")

NONCE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ValidationSummary:
    is_valid: bool
    score: float
    created_at: datetime | None = None
    validation_id: str | None = None


def _rejection(code: str) -> InvalidPoOTError:
    if code == poot_rules.REPLAY:
        return NonceReplayError("Nonce already used")
    if code == poot_rules.INACTIVE:
        return InvalidPoOTError("Node not found or inactive")
    return InvalidPoOTError("Invalid or missing signature")


# (result, claim its nonce, key it was checked against (or None) / None if unchecked, waiter)
_Queued = tuple[PoOTValidationResult, bool, "tuple[str | None] | None", "asyncio.Future[None]"]


def _to_row(v: PoOTValidationResult) -> dict[str, Any]:
    return v.model_dump(mode="python")


def _replay_attempt(v: PoOTValidationResult) -> PoOTValidationResult:
    """What a replayed proof leaves on record: a failed attempt, as the validator records other refusals."""
    return PoOTValidationResult(validation_id=v.validation_id, node_id=v.node_id, output_hash=v.output_hash,
                                timestamp=v.timestamp, nonce=v.nonce, is_valid=False, errors=["Nonce already used"],
                                batch_id=v.batch_id, validation_time_ms=v.validation_time_ms, created_at=v.created_at)


_NODE_STATE = (select(nodes.c.node_id, nodes.c.status, nodes.c.public_key)
               .where(nodes.c.node_id.in_(bindparam("b_nodes", expanding=True))))
_INSERT_VALIDATION = poot_validations.insert()
_STORED_ERRORS = (select(poot_validations.c.validation_id, poot_validations.c.errors)
                  .where(poot_validations.c.validation_id.in_(bindparam("b_ids", expanding=True))))
_SET_SCORE = (update(nodes).where(nodes.c.node_id == bindparam("b_node"))
              .values(poot_score=bindparam("b_score")))


class PoOTGroupCommitter:
    """Stores validations in groups; each caller learns its own proof's fate (stored, or why not)."""

    def __init__(self, db: NodeDatabase, *, store_output: bool, max_group: int, process: PoOTWriterProcess | None,
                 process_group: int, process_depth: int) -> None:
        self.db = db
        self.store_output = store_output
        self.max_group = max_group
        self._process = process
        if process is not None:
            process.stored = self._stored_ids  # how a lost group is reconciled (by its results' ids)
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
        # Statements are built once so SQLAlchemy's compiled cache always hits (a multi-VALUES insert
        # built per group was recompiled for every group size). A claim wins if the row is new or its
        # previous use is older than the window; RETURNING names the winners.
        ins = db.insert_ignore(poot_nonces)
        self._claim = (ins.values(node_id=bindparam("b_node"), nonce=bindparam("b_nonce"), used_at=bindparam("b_used"))
                       .on_conflict_do_update(index_elements=["node_id", "nonce"],
                                              set_={"used_at": ins.excluded.used_at},
                                              where=poot_nonces.c.used_at < bindparam("b_cutoff"))
                       .returning(poot_nonces.c.node_id, poot_nonces.c.nonce))

    @property
    def process(self) -> PoOTWriterProcess | None:
        """The writer process the groups go to (None: the writer thread or the engine commits them)."""
        return self._process

    async def save(self, validation: PoOTValidationResult, *, claim_nonce: bool = False,
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
            self._flusher = asyncio.create_task(
                drain_groups(self._queue, self.max_group, self._write, self._after_commit))
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
            batch = self._queue[:self.process_group]
            del self._queue[:self.process_group]  # the list itself: a drain may hold it
            now = utcnow()
            items = [poot_sqlite.item_of(v, claim, against) for v, claim, against, _ in batch]
            try:
                answer = proc.submit(now, now - NONCE_WINDOW, self.store_output, items,
                                     [v.validation_id for v, *_ in batch])
            except Exception as exc:  # noqa: BLE001 - not sent: nothing of it can be stored
                settle_group(batch, error=group_failed(len(batch), exc))
                continue
            self._groups_in_flight += 1
            answer.add_done_callback(partial(self._group_answered, batch, self._generation))

    async def _start_process(self) -> None:
        assert self._process is not None
        try:
            await self._process.start()
        except Exception as exc:  # noqa: BLE001 - the queued proofs fail; the next one tries again
            _log.error("PoOT writer process could not start: %r", exc)
            queued = self._queue[:]
            self._queue.clear()
            settle_group(queued, error=group_failed(len(queued), exc))
            return
        self._kick(asyncio.get_running_loop())

    def _group_answered(self, batch: list[_Queued], generation: int, answer: asyncio.Future[dict[int, str]]) -> None:
        if generation == self._generation:
            self._groups_in_flight -= 1
        exc = answer.exception() if not answer.cancelled() else asyncio.CancelledError()
        if exc is None:
            rejected = {i: _rejection(code) for i, code in answer.result().items()}
            self._after_commit(batch, rejected)
            settle_group(batch, rejected=rejected)
        elif isinstance(exc, WriterProcessLost):
            task = asyncio.ensure_future(self._reconcile(batch, exc))
            self._reconciling.add(task)  # referenced until done (the loop keeps only weak references)
            task.add_done_callback(self._reconciling.discard)
        else:  # WriterProcessError: rolled back
            settle_group(batch, error=group_failed(len(batch), exc))
        if self._queue:
            self._kick(asyncio.get_running_loop())

    async def _stored_ids(self, ids: list[str]) -> list[str]:
        return await self.db.read(lambda conn: [r[0] for r in conn.execute(_STORED_ERRORS, {"b_ids": ids}).all()])

    async def _reconcile(self, batch: list[_Queued], lost: WriterProcessLost) -> None:
        """The process died with this group in flight. The group is one transaction: if any of its
        rows is in the database it was committed, and each proof's fate is read from its row (a
        replay's row is a failed attempt; a refused proof has none); if none is, nothing was."""
        if lost.committed is False:  # the writer component found none of its ids stored
            settle_group(batch, error=group_failed(len(batch), lost))
            return
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
            settle_group(batch, error=group_failed(len(batch), exc, "whether it was stored is unknown; "
                                                     "a retry is refused as a replay if it was"))
            return
        if not stored:
            settle_group(batch, error=group_failed(len(batch), lost))
            return
        rejected: dict[int, Exception] = {}
        for i, (v, *_) in enumerate(batch):
            errors = stored.get(v.validation_id)
            if errors is None:
                rejected[i] = _rejection(poot_rules.refusal_of_unstored(states.get(v.node_id), NodeStatus.ACTIVE.value))
            elif poot_rules.is_replay_record(errors, v.errors):
                rejected[i] = _rejection(poot_rules.REPLAY)
        self._after_commit(batch, rejected)
        settle_group(batch, rejected=rejected)

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
