"""PayoutProcessor: validates, records, sends and reconciles USDT payouts.

Ledger states: pending -> processing -> completed | failed, and pending -> cancelled when the node was
deleted after the payout was queued (a claim requires the node: nothing is sent to a node that is gone).
A payout's idempotency key is unique in the database, so a retried or re-submitted payout finds its row
instead of making a new one. With a two-phase TRON client (the default local ledger, tronpy) the signed
transaction and its id are stored in the same transaction that moves the row to ``processing``; only then
is it broadcast. After a crash a payout found in ``processing`` is reconciled by that id: found on chain ->
its outcome is recorded; not found and not expired -> the *same* signed transaction is re-broadcast (the
chain refuses duplicates); not found and expired -> it can never land, so a fresh transaction replaces it.
Nothing is re-sent blindly.

On a chain that executes transactions in later blocks (``final_at_broadcast`` false: TRON through tronpy) an
accepted broadcast is not yet a payment: the payout stays ``processing`` until the transaction's receipt
is read (completed, or failed if it failed in execution). The processor waits up to ``confirm_timeout``
for receipts; whatever is still unconfirmed then is settled by a later reconciliation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from ..db.payout_repo import NODE_GONE, BatchRecord, Claim, Outcome, same_payment
from ..errors import IdempotencyKeyConflictError, NodeNotFoundError, TronNodeError, ValidationError
from ..models.node_models import utcnow
from ..models.payout_models import FINAL_STATES, Payout, PayoutRequest, PayoutStatus
from ..tron.base import PreparedTransfer, TwoPhaseTronClient
from ..validators import validate_amount, validate_node_id, validate_tron_address
from .audit import WitnessAuditLogger

__all__ = ["PayoutProcessor", "batch_request_hash"]

_log = logging.getLogger("lucid.node.payouts")
UNKNOWN_OUTCOME = "outcome unknown: awaiting reconciliation"


def batch_request_hash(requests: Sequence[PayoutRequest], scheduled_at: datetime | None = None) -> str:
    """The digest a batch id is bound to: re-submitting the id with any other payout or schedule is a 409."""
    canon: list[dict[str, Any]] = [p.model_dump(mode="json") for p in requests]
    for p in canon:
        p["amount"] = str(p["amount"])
    doc: Any = canon if scheduled_at is None else {"payouts": canon, "scheduled_at": scheduled_at.isoformat()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _conflict_result(key: str, req: PayoutRequest) -> dict[str, Any]:
    err = IdempotencyKeyConflictError()
    return {"idempotency_key": key, "node_id": req.node_id, "status": PayoutStatus.FAILED.value,
            "error_code": err.error_code, "error_message": err.message, "amount": req.amount}


def _validate(request: dict[str, Any] | PayoutRequest) -> PayoutRequest:
    if isinstance(request, PayoutRequest):
        return request
    if not isinstance(request, dict):
        raise ValidationError("Invalid payout request")
    validate_tron_address(request.get("wallet_address"))
    validate_amount(request.get("amount"))
    validate_node_id(request.get("node_id"))
    if request.get("currency", "USDT") != "USDT":
        raise ValidationError("Invalid currency: only USDT is paid on TRON")
    try:
        return PayoutRequest.model_validate(request)
    except PydanticValidationError as exc:
        raise ValidationError("Invalid payout request",
                              details={"errors": [e["msg"] for e in exc.errors(include_input=False)]}) from exc


class PayoutProcessor:
    def __init__(self, repository: Any, tron_client: Any, audit_logger: Any | None = None, *,
                 chunk_size: int = 100, confirm_timeout: float = 60.0, confirm_interval: float = 1.0) -> None:
        self.repository = repository
        self.tron_client = tron_client
        self.audit_logger = audit_logger or WitnessAuditLogger()
        self.chunk_size = chunk_size
        self.confirm_timeout = confirm_timeout  # seconds to wait for receipts after a broadcast
        self.confirm_interval = confirm_interval  # TRON makes a block every 3 s

    @property
    def two_phase(self) -> bool:
        return isinstance(self.tron_client, TwoPhaseTronClient)

    @property
    def final_at_broadcast(self) -> bool:
        return bool(getattr(self.tron_client, "final_at_broadcast", True))

    # ------------------------------------------------------------------ public API
    async def process_payout(self, payout_request: dict[str, Any] | PayoutRequest, *,
                             batch_id: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        req = _validate(payout_request)
        key = idempotency_key or req.idempotency_key or f"single/{uuid.uuid4().hex}"
        if self.two_phase:
            return (await self._process_many([(key, req)], batch_id))[0]
        return await self._process_one_shot(key, req, batch_id)

    async def process_batch_payouts(self, payout_requests: Sequence[dict[str, Any] | PayoutRequest], *,
                                    batch_id: str | None = None) -> dict[str, Any]:
        """Process a batch; each payout's key is ``<batch_id>/<index>`` unless it brings its own, so
        re-submitting a batch id pays nothing twice. Invalid items fail alone."""
        batch_id = batch_id or f"batch_{uuid.uuid4().hex[:24]}"
        results: list[dict[str, Any] | None] = [None] * len(payout_requests)
        valid: list[tuple[int, str, PayoutRequest]] = []
        for i, raw in enumerate(payout_requests):
            try:
                req = _validate(raw)
            except ValidationError as exc:
                results[i] = {"status": PayoutStatus.FAILED.value, "error_message": exc.message,
                              "node_id": raw.get("node_id") if isinstance(raw, dict) else None}
                continue
            valid.append((i, req.idempotency_key or f"{batch_id}/{i}", req))
        if self.two_phase:
            done = await self._process_many([(k, r) for _, k, r in valid], batch_id)
        else:
            done = []
            for _, k, r in valid:
                try:
                    done.append(await self._process_one_shot(k, r, batch_id))
                except NodeNotFoundError as exc:
                    done.append({"status": PayoutStatus.FAILED.value, "error_message": exc.message,
                                 "node_id": r.node_id})
        for (i, _, _), res in zip(valid, done, strict=True):
            results[i] = res
        final = [r for r in results if r is not None]
        successful = sum(1 for r in final if r["status"] == PayoutStatus.COMPLETED.value)
        failed = sum(1 for r in final if r["status"] == PayoutStatus.FAILED.value)
        return {"batch_id": batch_id, "total_processed": len(final), "successful": successful, "failed": failed,
                "in_progress": len(final) - successful - failed, "results": final}

    async def recover(self, *, limit: int = 10_000) -> dict[str, int]:
        """Finish what a crash left: reconcile every ``processing`` payout, then send the ``pending`` ones."""
        stuck = await self.repository.list_by_status([PayoutStatus.PROCESSING], limit=limit)
        undecided = 0
        for p in stuck:
            undecided += not await self._reconcile_or_defer(p)
        pending = await self.repository.list_by_status([PayoutStatus.PENDING], limit=limit, due_only=True)
        for i in range(0, len(pending), self.chunk_size):
            await self._run_chunk(pending[i:i + self.chunk_size])
        report = {"reconciled": len(stuck) - undecided, "resumed": len(pending)}
        if undecided:
            report["deferred"] = undecided
        return report

    async def enqueue_batch(self, requests: Sequence[PayoutRequest], batch_id: str,
                            scheduled_at: datetime | None = None) -> BatchRecord:
        """Claim ``batch_id`` and record its payouts as ``pending`` in one transaction (durable before the
        API answers 202). Keys are ``<batch_id>/<index>`` unless a request brings its own. The same id with
        the same payload inserts nothing; another payload, or a key already used for a different payment,
        raises a conflict and leaves nothing behind."""
        known = await self.repository.get_existing_node_ids(r.node_id for r in requests)
        missing = sorted({r.node_id for r in requests} - known)
        if missing:
            raise NodeNotFoundError(f"{len(missing)} node(s) not found", details={"missing": missing[:50]})
        payouts = []
        for i, r in enumerate(requests):
            p = self._new_payout(r.idempotency_key or f"{batch_id}/{i}", r, batch_id)
            p.scheduled_at = r.scheduled_at or scheduled_at
            payouts.append(p)
        return await self.repository.record_batch(batch_id, batch_request_hash(requests, scheduled_at), payouts,
                                                  scheduled_at)

    async def run_batch(self, batch_id: str) -> None:
        """Send (or reconcile) every unfinished payout of a batch, chunk by chunk."""
        previous: set[str] = set()
        while True:
            rows = await self.repository.list_by_status([PayoutStatus.PENDING, PayoutStatus.PROCESSING],
                                                        limit=self.chunk_size, batch_id=batch_id, due_only=True)
            ids = {p.payout_id for p in rows}
            if not rows or ids == previous:  # nothing left, or only outcomes that cannot be settled now
                return
            previous = ids
            await self._run_chunk(rows)

    # ------------------------------------------------------------------ one-shot client (no recovery)
    async def _process_one_shot(self, key: str, req: PayoutRequest, batch_id: str | None) -> dict[str, Any]:
        node = await self.repository.get_node_by_id(req.node_id)
        if node is None:
            raise NodeNotFoundError(f"Node {req.node_id} not found")
        payout = self._new_payout(key, req, batch_id)
        stored = await self.repository.save_payout(payout)
        if isinstance(stored, Payout):
            if not same_payment(stored, payout):
                raise IdempotencyKeyConflictError(f"Idempotency key {key} already used for a different payout")
            payout = stored
        if payout.status != PayoutStatus.PENDING:
            return payout.result()  # already paid, failed, or in flight elsewhere: never sent again
        claimed = await self.repository.claim([Claim(payout.payout_id, None, None)])
        if isinstance(claimed, set) and payout.payout_id not in claimed:
            await self._cancel_orphaned([payout])
            return payout.result()
        payout.status = PayoutStatus.PROCESSING
        try:
            response = await self.tron_client.transfer_usdt(to_address=req.wallet_address, amount=req.amount)
        except Exception as exc:  # noqa: BLE001 - the outcome is unknown: keep it processing, never re-send
            _log.warning("transfer for %s raised %s; left in processing", payout.payout_id, type(exc).__name__)
            payout.error_message = UNKNOWN_OUTCOME
            await self._audit("payout.unknown", payout, "WARN")
            return payout.result()
        outcome = self._outcome(payout.payout_id, response)
        if outcome is None:
            payout.error_message = UNKNOWN_OUTCOME
            return payout.result()
        await self.repository.finalize([outcome])
        self._apply(payout, outcome)
        await self._audit(f"payout.{payout.status.value}", payout)
        return payout.result()

    # ------------------------------------------------------------------ two-phase client (crash-safe)
    async def _process_many(self, items: list[tuple[str, PayoutRequest]], batch_id: str | None) -> list[dict[str, Any]]:
        known = await self.repository.get_existing_node_ids(r.node_id for _, r in items)
        if len(items) == 1 and items[0][1].node_id not in known:
            raise NodeNotFoundError(f"Node {items[0][1].node_id} not found")
        out: dict[str, dict[str, Any]] = {}
        payouts: list[Payout] = []
        for key, req in items:
            if req.node_id in known:
                payouts.append(self._new_payout(key, req, batch_id))
            else:
                out[key] = {"idempotency_key": key, "node_id": req.node_id, "status": PayoutStatus.FAILED.value,
                            "error_message": f"Node {req.node_id} not found", "amount": req.amount}
        wanted = {p.idempotency_key: p for p in payouts}
        reqs = dict(items)
        for i in range(0, len(payouts), self.chunk_size):
            stored = await self.repository.save_payouts(payouts[i:i + self.chunk_size])
            clash = [p for p in stored if not same_payment(p, wanted[p.idempotency_key])]
            for p in clash:  # the key names another payment: that one is not paid again, nor this one
                out[p.idempotency_key] = _conflict_result(p.idempotency_key, reqs[p.idempotency_key])
            if len(items) == 1 and clash:
                raise IdempotencyKeyConflictError(f"Idempotency key {items[0][0]} already used for a different payout")
            stored = [p for p in stored if p.idempotency_key not in out]
            await self._run_chunk(stored)
            for p in await self.repository.get_by_ids([p.payout_id for p in stored]):
                out[p.idempotency_key] = p.result()
        return [out[k] for k, _ in items]

    async def _run_chunk(self, stored: list[Payout]) -> None:
        pending = [p for p in stored if p.status == PayoutStatus.PENDING]
        for p in stored:
            if p.status == PayoutStatus.PROCESSING:
                await self._reconcile_or_defer(p)
        if not pending:
            return
        made = await self.tron_client.prepare_many([(p.wallet_address, p.amount, p.idempotency_key)
                                                     for p in pending])
        prepared: dict[str, PreparedTransfer] = {p.payout_id: t for p, t in zip(pending, made, strict=True)}
        won = await self.repository.claim([Claim(pid, t.txid, t.to_payload()) for pid, t in prepared.items()])
        sending = [p for p in pending if p.payout_id in won]
        if len(sending) < len(pending):
            await self._cancel_orphaned([p for p in pending if p.payout_id not in won])
        try:
            responses = await self.tron_client.broadcast_many([prepared[p.payout_id] for p in sending])
        except Exception as exc:  # noqa: BLE001 - unknown outcome; the stored txids make recovery exact
            _log.warning("broadcast of %d payouts raised %s; left in processing", len(sending), type(exc).__name__)
            return
        outcomes = []
        accepted: list[tuple[Payout, str]] = []  # broadcast accepted, receipt still to come
        for p, resp in zip(sending, responses, strict=True):
            o = self._outcome(p.payout_id, resp, broadcast=True)
            if o is not None:
                outcomes.append(o)
                self._apply(p, o)
            elif isinstance(resp, dict) and resp.get("success"):
                accepted.append((p, prepared[p.payout_id].txid))
        await self.repository.finalize(outcomes)
        for p in sending:
            if p.status in FINAL_STATES:
                await self._audit(f"payout.{p.status.value}", p)
        if accepted:
            await self._await_receipts(accepted)

    async def _await_receipts(self, accepted: list[tuple[Payout, str]]) -> None:
        """Settle accepted transfers from their receipts as blocks include them, for up to
        ``confirm_timeout``; the rest stay ``processing`` for a later reconciliation."""
        deadline = time.monotonic() + self.confirm_timeout
        waiting = accepted
        while waiting:
            try:
                receipts = await self._receipts([txid for _, txid in waiting])
            except TronNodeError as exc:
                _log.warning("receipts unreadable (%s): %d payouts left in processing", exc.message, len(waiting))
                return
            settled: list[Payout] = []
            outcomes: list[Outcome] = []
            still: list[tuple[Payout, str]] = []
            for (p, txid), found in zip(waiting, receipts, strict=True):
                o = self._outcome(p.payout_id, found)
                if o is None:
                    still.append((p, txid))
                else:
                    outcomes.append(o)
                    self._apply(p, o)
                    settled.append(p)
            await self.repository.finalize(outcomes)
            for p in settled:
                await self._audit(f"payout.{p.status.value}", p)
            waiting = still
            if waiting:
                if time.monotonic() + self.confirm_interval > deadline:
                    _log.warning("%d payouts not yet in a block; left in processing", len(waiting))
                    return
                await asyncio.sleep(self.confirm_interval)  # the next block

    async def _receipts(self, txids: list[str], parallel: int = 16) -> list[Any]:
        """``get_transaction`` for each id, ``parallel`` at a time (each is a round trip to a TRON node)."""
        found: list[Any] = []
        for i in range(0, len(txids), parallel):
            found += await asyncio.gather(*(self.tron_client.get_transaction(t) for t in txids[i:i + parallel]))
        return found

    async def _reconcile_or_defer(self, p: Payout) -> bool:
        """Reconcile ``p``; if the chain cannot be asked now (TronNodeError: outcome unknown), leave it in
        ``processing`` for a later pass and go on with the others: one payout whose fate cannot be read
        must not hold up the rest of a batch or of a recovery. False when deferred (unreadable, or
        accepted and not yet in a block)."""
        try:
            return await self._reconcile(p)
        except TronNodeError as exc:
            _log.warning("payout %s left in processing: %s", p.payout_id, exc.message)
            return False

    async def _reconcile(self, p: Payout) -> bool:
        if not self.two_phase or p.transaction_hash is None or p.tx_payload is None:
            _log.warning("payout %s in processing without a prepared transaction: manual review", p.payout_id)
            return True
        found = await self.tron_client.get_transaction(p.transaction_hash)
        if found is None:
            prepared = PreparedTransfer.from_payload(p.tx_payload)
            if self.tron_client.definitely_expired(prepared, utcnow()):
                fresh = await self.tron_client.prepare_usdt_transfer(p.wallet_address, p.amount,
                                                                     reference=p.idempotency_key)
                if not await self.repository.replace_transaction(p.payout_id, p.transaction_hash, fresh.txid,
                                                                 fresh.to_payload()):
                    return  # someone else reconciled it first
                prepared = fresh
            outcome = self._outcome(p.payout_id, await self.tron_client.broadcast(prepared), broadcast=True)
        else:
            outcome = self._outcome(p.payout_id, found)
        if outcome is None:
            return False
        await self.repository.finalize([outcome])
        self._apply(p, outcome)
        await self._audit(f"payout.{p.status.value}", p, trace_id=None, reconciled=True)
        return True

    async def _cancel_orphaned(self, lost: list[Payout]) -> None:
        """Claims lost to another worker are left alone; those lost because the node was deleted after the
        payout was queued are cancelled (never sent) and audited."""
        cancel = getattr(self.repository, "cancel_orphaned", None)
        if cancel is None:
            return
        gone = set(await cancel([p.payout_id for p in lost]))
        for p in lost:
            if p.payout_id in gone:
                p.status, p.error_message = PayoutStatus.CANCELLED, NODE_GONE
                _log.warning("payout %s cancelled: node %s no longer exists", p.payout_id, p.node_id)
                await self._audit("payout.cancelled", p, "WARN")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _new_payout(key: str, req: PayoutRequest, batch_id: str | None) -> Payout:
        return Payout(idempotency_key=key, node_id=req.node_id, amount=req.amount, currency=req.currency,
                      wallet_address=req.wallet_address, priority=req.priority, batch_id=batch_id,
                      scheduled_at=req.scheduled_at)

    def _outcome(self, payout_id: str, response: Any, *, broadcast: bool = False) -> Outcome | None:
        """Map a chain response to a final state; None when the outcome is not final (expired, or an
        accepted broadcast on a chain where only the receipt is final)."""
        if not isinstance(response, dict):
            return None
        if response.get("success"):
            if broadcast and not self.final_at_broadcast:
                return None
            return Outcome(payout_id, PayoutStatus.COMPLETED, response.get("transaction_hash"), None)
        error = str(response.get("error") or "transfer failed")
        if error == "TRANSACTION_EXPIRED":
            return None
        return Outcome(payout_id, PayoutStatus.FAILED, response.get("transaction_hash"), error)

    @staticmethod
    def _apply(p: Payout, o: Outcome) -> None:
        p.status = o.status
        p.transaction_hash = o.transaction_hash
        p.error_message = o.error_message

    async def _audit(self, operation: str, p: Payout, severity: str | None = None, trace_id: str | None = None,
                     reconciled: bool = False) -> None:
        result = p.result()
        if reconciled:
            result["reconciled"] = True
        sev = severity or ("INFO" if p.status == PayoutStatus.COMPLETED else "WARN")
        try:
            await self.audit_logger.log_payout_operation(operation, result, severity=sev)
        except Exception:  # noqa: BLE001 - an audit sink failure must not undo a payout already made
            _log.exception("audit of %s failed", p.payout_id)

    @staticmethod
    def total(results: Sequence[dict[str, Any]]) -> Decimal:
        return sum((Decimal(str(r["amount"])) for r in results if r.get("status") == "completed"), Decimal(0))
