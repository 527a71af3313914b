"""Reserve, then settle: a model call's maximum cost held against the swarm's budget in the shared ledger.

Why: a proxy that checks the budget, forwards the call, and records the spend afterwards lets N
concurrent calls all pass the check (the spend is recorded too late); counters kept in one process do
the same across replicas. Here the check and the hold are one compare-and-swap transaction on the
governor's own records in the store (``/governor/budgets/<swarm>``, the breaker, and the holds record
``/governor/holds/<swarm>``), so whatever the number of calls and gateway replicas, the budget minus what
is spent minus what is held is never below zero, and a settled call is charged at most what was held.

One round trip per operation when nothing else wrote: each replica keeps the last state it read or wrote
per swarm and sends its compare-and-swap against those revisions; a transaction that loses returns the
current records in the same round trip, and the operation is decided again on them. Operations of one
swarm in one replica go one at a time (a lock per swarm), so a burst of concurrent calls does not turn
into a storm of transactions that invalidate each other.

Each hold also has a liveness key on its gateway replica's lease (``/governor/holds-live/<swarm>/<id>``).
If the replica dies mid-call the key expires with the lease, and any replica's sweeper settles the hold
at its full amount (the call may have run; the swarm pays at most what was reserved, never nothing and
never twice).
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

from backends.errors import BackendUnavailable, OutcomeUnknown
from backends.jsonsafe import loads_bounded
from backends.kv import Compare, Delete, Get, KeyValue, KeyValueStore, Put
from infrafabric.errors import CircuitOpenError, InfraFabricError, UnknownSwarmError
from infrafabric.governor.ledger_keys import HOLDS, LIVE
from infrafabric.governor.ledger_keys import breaker_key as _breaker_key
from infrafabric.governor.ledger_keys import budget_key as _budget_key
from infrafabric.governor.ledger_keys import holds_key as _holds_key
from infrafabric.governor.ledger_keys import live_key as _live_key
from infrafabric.governor.money import LEDGER, part_of, to_money

_ATTEMPTS = 512

AuditFn = Callable[[str, dict[str, Any], str], None]


class BudgetExceededError(InfraFabricError):
    """The call's maximum cost does not fit in what the swarm has left: refused before it is sent."""

    error_code = "IF_ERR_BUDGET_EXCEEDED"
    http_status = 429

    def __init__(self, message: str, *, remaining: Decimal, needed: Decimal) -> None:
        super().__init__(message)
        self.remaining, self.needed = max(remaining, Decimal(0)), needed


@dataclass(frozen=True)
class Hold:
    swarm_id: str
    hold_id: str
    amount: Decimal


def _encode(record: Any) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


@dataclass
class _Ledger:
    """One consistent read of a swarm's records, with the revisions to guard the write on."""

    budget_kv: KeyValue | None
    breaker_kv: KeyValue | None
    holds_kv: KeyValue | None
    budget: dict[str, Any]
    breaker_open: bool
    holds: dict[str, str]

    @property
    def spent(self) -> Decimal:
        return to_money(self.budget["spent"], "spent")

    @property
    def limit(self) -> Decimal:
        return to_money(self.budget["budget"], "budget")

    @property
    def reserved(self) -> Decimal:
        return sum((Decimal(v) for v in self.holds.values()), Decimal(0))

    def guard(self, swarm_id: str) -> list[Compare]:
        return [Compare.mod_revision(_budget_key(swarm_id), self.budget_kv.mod_revision if self.budget_kv else 0),
                Compare.mod_revision(_breaker_key(swarm_id), self.breaker_kv.mod_revision if self.breaker_kv else 0),
                Compare.mod_revision(_holds_key(swarm_id), self.holds_kv.mod_revision if self.holds_kv else 0)]


def _after(ledger: _Ledger, swarm_id: str, writes: list[Put | Delete], revision: int) -> _Ledger:
    """The records as a successful transaction at ``revision`` left them (our view until someone else writes)."""
    rows = {_budget_key(swarm_id): ledger.budget_kv, _breaker_key(swarm_id): ledger.breaker_kv,
            _holds_key(swarm_id): ledger.holds_kv}
    for op in writes:
        if isinstance(op, Put) and op.key in rows:
            old = rows[op.key]
            rows[op.key] = KeyValue(op.key, op.value, old.create_revision if old else revision, revision,
                                    (old.version if old else 0) + 1, op.lease)
    budget_kv, breaker_kv, holds_kv = rows.values()
    assert budget_kv is not None
    return _Ledger(budget_kv, breaker_kv, holds_kv, loads_bounded(budget_kv.value),
                   breaker_kv is not None and loads_bounded(breaker_kv.value).get("state") != "closed",
                   dict(loads_bounded(holds_kv.value)["holds"]) if holds_kv is not None else {})


class ReservationLedger:
    def __init__(self, kv: KeyValueStore, *, audit: AuditFn | None = None) -> None:
        self.kv = kv
        self._audit = audit
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._known: dict[str, _Ledger] = {}  # the last state read or written, per swarm

    def audit(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        if self._audit is not None:
            self._audit(operation, params, severity)

    def known_open(self, swarm_id: str) -> bool:
        """The swarm's breaker is open in this replica's last view of its records."""
        known = self._known.get(swarm_id)
        return known is not None and known.breaker_open

    @staticmethod
    def _reads(swarm_id: str) -> list[Get]:
        return [Get(_budget_key(swarm_id)), Get(_breaker_key(swarm_id)), Get(_holds_key(swarm_id))]

    def _parse(self, swarm_id: str, results: list[Any]) -> _Ledger:
        rows = [r[0] if isinstance(r, list) and r else None for r in results]
        budget_kv, breaker_kv, holds_kv = rows
        if budget_kv is None:
            self._known.pop(swarm_id, None)
            raise UnknownSwarmError(f"swarm {swarm_id} has no budget in the ledger")
        try:
            budget = loads_bounded(budget_kv.value)
            to_money(budget["spent"], "spent"), to_money(budget["budget"], "budget")
            breaker_open = breaker_kv is not None and loads_bounded(breaker_kv.value).get("state") != "closed"
            holds = dict(loads_bounded(holds_kv.value)["holds"]) if holds_kv is not None else {}
            for value in holds.values():
                to_money(value, "hold")
        except Exception:  # noqa: BLE001 - a damaged record: nothing is spent against it (fail closed)
            self._known.pop(swarm_id, None)
            raise CircuitOpenError(f"the ledger of {swarm_id} cannot be read; no call is admitted") from None
        ledger = _Ledger(budget_kv, breaker_kv, holds_kv, budget, breaker_open, holds)
        self._known[swarm_id] = ledger
        return ledger

    async def _read(self, swarm_id: str) -> _Ledger:
        return self._parse(swarm_id, (await self.kv.txn([], self._reads(swarm_id))).results)

    async def _current(self, swarm_id: str) -> tuple[_Ledger, bool]:
        """Our view of the swarm's records (False), or a fresh read when we have none (True)."""
        known = self._known.get(swarm_id)
        return (known, False) if known is not None else (await self._read(swarm_id), True)

    async def _write(self, swarm_id: str, ledger: _Ledger, writes: list[Put | Delete]) -> bool:
        """One guarded transaction; on a lost race the current records come back in the same round trip."""
        res = await self.kv.txn(ledger.guard(swarm_id), writes, self._reads(swarm_id))
        if not res.succeeded:
            self._parse(swarm_id, res.results)
            return False
        self._known[swarm_id] = _after(ledger, swarm_id, writes, res.revision)
        return True

    async def reserve(self, swarm_id: str, hold_id: str, amount: Decimal, lease: int,
                      details: dict[str, Any] | None = None, *, at_least: Decimal | None = None,
                      share: Decimal | None = None, audit_as: str = "model_call") -> Hold:
        """Hold ``amount`` against the swarm's budget, or raise BudgetExceededError / CircuitOpenError.

        With ``at_least`` (an allowance block), hold up to ``amount`` but no more than ``share`` of what is
        left (so one replica never takes it all), and never less than ``at_least``; refused only when
        ``at_least`` does not fit. Audited as ``<audit_as>_reserved`` / ``<audit_as>_refused``."""
        amount = to_money(amount, "amount")
        floor = amount if at_least is None else min(to_money(at_least, "at_least"), amount)
        with localcontext(LEDGER):  # amounts have up to 40 digits; the default context rounds at 28
            async with self._locks[swarm_id]:
                ledger, fresh = await self._current(swarm_id)
                for _ in range(_ATTEMPTS):
                    if hold_id in ledger.holds:
                        return Hold(swarm_id, hold_id, Decimal(ledger.holds[hold_id]))  # a retried, applied reservation
                    remaining = ledger.limit - ledger.spent - ledger.reserved
                    if (ledger.breaker_open or floor > remaining) and not fresh:
                        ledger, fresh = await self._read(swarm_id), True  # refusals are decided on fresh records
                        continue
                    if ledger.breaker_open:
                        self.audit(f"{audit_as}_refused", {"swarm_id": swarm_id, "hold_id": hold_id,
                                                           "reason": "breaker_open", **(details or {})}, "WARN")
                        raise CircuitOpenError(f"breaker of {swarm_id} is open")
                    if floor > remaining:
                        self.audit(f"{audit_as}_refused", {"swarm_id": swarm_id, "hold_id": hold_id, "reason": "budget",
                                                           "needed": str(floor), "remaining": str(remaining),
                                                           **(details or {})}, "WARN")
                        raise BudgetExceededError(f"the call may cost {floor} but {swarm_id} has {remaining} left",
                                                  remaining=remaining, needed=floor)
                    # a share of what is left, rounded down to an amount's places: shares of shares would
                    # otherwise add two decimals per block until to_money refused the block's own settlement
                    part = remaining if share is None else part_of(remaining, share)
                    taking = amount if at_least is None else min(amount, max(floor, part))
                    holds = {**ledger.holds, hold_id: str(taking)}
                    writes: list[Put | Delete] = [Put(_holds_key(swarm_id), _encode({"holds": holds})),
                                                  Put(_live_key(swarm_id, hold_id), b"1", lease)]
                    try:
                        done = await self._write(swarm_id, ledger, writes)
                    except OutcomeUnknown:
                        self._known.pop(swarm_id, None)
                        done = hold_id in (await self._read(swarm_id)).holds
                    if not done:  # lost to another writer: decide again on the records that came back
                        ledger, fresh = (await self._current(swarm_id))[0], True
                        continue
                    self.audit(f"{audit_as}_reserved", {"swarm_id": swarm_id, "hold_id": hold_id,
                                                        "amount": str(taking), "remaining": str(remaining - taking),
                                                        **(details or {})})
                    return Hold(swarm_id, hold_id, taking)
        raise BackendUnavailable(f"reservation for {swarm_id} kept losing to other writers; try again")

    async def settle(self, hold: Hold, cost: Decimal, details: dict[str, Any] | None = None,
                     operation: str = "model_call_settled", *, keep: Decimal = Decimal(0)) -> Decimal | None:
        """Charge ``cost`` (never more than was held) and drop the hold, in one transaction. Returns what
        was charged, or None if the hold was settled already (by this call or by a sweeper).

        With ``keep`` the hold is not dropped but shrunk to ``keep`` (an allowance block settling the calls
        it covered and keeping the rest); what is neither charged nor kept goes back to the budget."""
        cost = min(max(to_money(cost, "cost"), Decimal(0)), hold.amount)
        keep = to_money(keep, "keep")
        swarm_id = hold.swarm_id
        with localcontext(LEDGER):  # amounts have up to 40 digits; the default context rounds at 28
            async with self._locks[swarm_id]:
                try:
                    ledger, fresh = await self._current(swarm_id)
                except UnknownSwarmError:
                    return None
                for _ in range(_ATTEMPTS):
                    if hold.hold_id not in ledger.holds:
                        if not fresh:  # not in our view: make sure on fresh records
                            try:
                                ledger, fresh = await self._read(swarm_id), True
                            except UnknownSwarmError:
                                return None
                            continue
                        return None
                    held = Decimal(ledger.holds[hold.hold_id])
                    charge = min(cost, held)
                    kept = min(max(keep, Decimal(0)), held - charge)
                    spent = ledger.spent + charge
                    holds = {k: v for k, v in ledger.holds.items() if k != hold.hold_id}
                    if kept > 0:
                        holds[hold.hold_id] = str(kept)
                    budget = {**ledger.budget, "spent": str(spent), "last_charge": hold.hold_id}
                    writes: list[Put | Delete] = [Put(_budget_key(swarm_id), _encode(budget)),
                                                  Put(_holds_key(swarm_id), _encode({"holds": holds}))]
                    if kept <= 0:
                        writes.append(Delete(_live_key(swarm_id, hold.hold_id)))
                    trip = ledger.limit - spent <= 0 and not ledger.breaker_open
                    if trip:
                        writes.append(Put(_breaker_key(swarm_id), _encode({
                            "state": "open", "reason": "budget_exhausted", "consecutive_failures": 0, "opened_at": None})))
                    try:
                        done = await self._write(swarm_id, ledger, writes)
                    except OutcomeUnknown:
                        self._known.pop(swarm_id, None)
                        try:
                            after = (await self._read(swarm_id)).holds.get(hold.hold_id)
                        except UnknownSwarmError:
                            return None
                        done = after is None if kept <= 0 else after == str(kept) and after != ledger.holds[hold.hold_id]
                    if not done:
                        try:
                            ledger, fresh = (await self._current(swarm_id))[0], True
                        except UnknownSwarmError:
                            return None
                        continue
                    self.audit(operation, {"swarm_id": swarm_id, "hold_id": hold.hold_id, "held": str(held),
                                           "charged": str(charge), "remaining": str(ledger.limit - spent),
                                           **({"kept": str(kept)} if kept > 0 else {}), **(details or {})})
                    if trip:
                        self.audit("circuit_breaker_tripped", {"swarm_id": swarm_id, "reason": "budget_exhausted"},
                                   "HIGH")
                    return charge
        raise BackendUnavailable(f"settlement for {swarm_id} kept losing to other writers; try again")

    async def release(self, hold: Hold, details: dict[str, Any] | None = None) -> None:
        """Drop the hold, charging nothing (the upstream failed before producing anything)."""
        await self.settle(hold, Decimal(0), details, operation="model_call_released")

    async def sweep(self) -> list[Hold]:
        """Settle, at their full amount, holds whose gateway replica died (their liveness key expired).

        Returns the holds this call settled, each with what it charged (a hold another sweeper settled
        first is not among them), so the caller can account each charge once."""
        records = await self.kv.get_prefix(HOLDS)  # first: a hold seen here already has its liveness key,
        live = {kv.key for kv in await self.kv.get_prefix(LIVE)}  # so missing below means expired or settled
        settled: list[Hold] = []
        for record in records:
            swarm_id = record.key[len(HOLDS):]
            try:
                holds = dict(loads_bounded(record.value)["holds"])
            except Exception:  # noqa: BLE001 - a damaged record is the reservation path's to refuse
                continue
            for hold_id, amount in holds.items():
                if _live_key(swarm_id, hold_id) in live:
                    continue
                charged = await self.settle(Hold(swarm_id, hold_id, Decimal(amount)), Decimal(amount),
                                            {"reason": "gateway replica gone"}, operation="model_call_expired")
                if charged is not None:
                    settled.append(Hold(swarm_id, hold_id, charged))
        return settled
