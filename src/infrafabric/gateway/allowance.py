"""Per-replica allowances: calls admitted against a block of budget this replica already holds in the ledger.

Why: reserving every call in the shared ledger puts one etcd round trip (p99 above a millisecond here) in
front of every model call, and its settlement a second one behind it. A replica instead holds an allowance
block: one hold in the same ledger (``ReservationLedger``), sized for ``calls`` calls like the one that
needed it but at most a quarter of what is left of the budget (never less than that one call). Calls are admitted against the block's free part in memory; their
settlements are written to the ledger together (one guarded transaction charges what they cost and shrinks
the block by what they cost), after the answer has gone, as Doorman-style quota leases do. A settled call
keeps only its cost taken in the block until that write; the rest of what it reserved is free at once (calls
that cost a fraction of their bound reuse one block instead of taking a new one every ``calls`` calls).

What still holds, for any number of replicas: the ledger's spent plus held never passes the budget (a block
is a hold, taken by the ledger's compare-and-swap); a call is charged once, at most what it reserved; a
refused call costs nothing; a call is refused only after this replica has given back every free part of
its blocks and the ledger still cannot fit it (another replica's block may still have room: at most a
quarter of what was left when that block was taken). Each call's ``model_call_settled`` entry is written when its
charge is in the ledger, so the ledger and the audit log agree whenever nothing is in flight.

What changes: the ledger shows a block, not each call in flight; a block comes back to the budget when no
call has used it for ``idle`` seconds, or when the gateway closes. A replica killed with a block held is
charged the whole unsettled block when its lease expires (the calls it had in flight may have run; what the
swarm pays for is bounded by two blocks per replica: the one in use, and the next, which a replica takes in
the background once the one in use is half spent, so that no call waits for the ledger at a block's end).
A breaker opened elsewhere stops admissions here at the replica's next ledger write (each is guarded on the
breaker's revision) or when the block is ``max_age`` old.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from backends.errors import BackendError
from infrafabric.errors import CircuitOpenError
from infrafabric.gateway.reservations import AuditFn, BudgetExceededError, Hold, ReservationLedger
from infrafabric.governor.money import LEDGER as _L
from infrafabric.governor.money import to_money

__all__ = ["AllowanceLedger"]

_ZERO = Decimal(0)


def _total(amounts: Iterable[Decimal]) -> Decimal:
    """An exact sum: amounts have up to 40 digits and the default context rounds at 28."""
    total = _ZERO
    for amount in amounts:
        total = _L.add(total, amount)
    return total


@dataclass
class _Settlement:
    hold: Hold
    cost: Decimal
    details: dict[str, Any]
    operation: str
    done: asyncio.Future[Decimal | None]


@dataclass
class _Block:
    hold: Hold  # the block's hold in the ledger; hold.amount is what the ledger holds for it now
    opened: float
    lease: int  # the replica lease its liveness key is on
    calls: dict[str, Decimal] = field(default_factory=dict)  # admitted, not settled yet
    pending: list[_Settlement] = field(default_factory=list)  # settled here, not in the ledger yet
    in_calls: Decimal = _ZERO  # what ``calls`` hold
    in_pending: Decimal = _ZERO  # what ``pending`` cost (a settled call's cost is known: the rest of what it
    # held is free again at once, not after the ledger write)
    flushing: Decimal = _ZERO  # what the settlements being written now cost
    closing: bool = False
    last_used: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.size = self.hold.amount  # as taken: the block is refilled once half of it is spent

    def free(self) -> Decimal:
        return _L.subtract(_L.subtract(_L.subtract(self.hold.amount, self.in_calls), self.in_pending), self.flushing)

    def admit(self, call_id: str, amount: Decimal) -> None:
        self.calls[call_id] = amount
        self.in_calls = _L.add(self.in_calls, amount)

    def settled(self, settlement: _Settlement) -> None:
        amount = self.calls.pop(settlement.hold.hold_id)
        self.in_calls = _L.subtract(self.in_calls, amount)
        self.pending.append(settlement)
        self.in_pending = _L.add(self.in_pending, settlement.cost)

    def take_pending(self) -> list[_Settlement]:
        taken, self.pending, self.in_pending = self.pending, [], _ZERO
        return taken

    def put_back(self, taken: list[_Settlement]) -> None:
        self.pending = taken + self.pending
        self.in_pending = _total(s.cost for s in self.pending)


class AllowanceLedger:
    """``reserve`` / ``settle`` / ``release`` / ``sweep`` as ``ReservationLedger`` has them, on blocks."""

    def __init__(self, ledger: ReservationLedger, *, calls: int = 8, idle: float = 1.0, max_age: float = 5.0,
                 flush_window: float = 0.05, share: Decimal = Decimal("0.25"), audit: AuditFn | None = None) -> None:
        if calls < 1:
            raise ValueError("an allowance covers at least one call")
        self.ledger = ledger
        self.calls, self.idle, self.max_age, self.flush_window = calls, idle, max_age, flush_window
        self.share = share  # a block takes at most this share of what is left (other replicas need room too)
        self._audit = audit
        self._blocks: defaultdict[str, list[_Block]] = defaultdict(list)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # ledger writes, per swarm
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._refills: dict[str, asyncio.Task[None]] = {}  # the next block being taken early, per swarm
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count()
        self._replica = uuid.uuid4().hex[:8]
        self._lease: int | None = None

    def audit(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        if self._audit is not None:
            self._audit(operation, params, severity)

    # ------------------------------------------------------------------ admission
    def _admit(self, swarm_id: str, hold_id: str, amount: Decimal, details: dict[str, Any] | None) -> Hold | None:
        """Admit against a block with room, without a round trip (no await: atomic on the event loop)."""
        now = time.monotonic()
        for block in self._blocks.get(swarm_id, ()):
            if block.closing:
                continue
            if now - block.opened > self.max_age or block.lease != self._lease:
                # old enough to look at the ledger again, or taken on a lease this replica lost: new calls
                # take a new block
                block.closing = True
                self._schedule_close(swarm_id, 0.0)
                continue
            if block.free() >= amount:
                block.admit(hold_id, amount)
                block.last_used = now
                self.audit("model_call_reserved", {"swarm_id": swarm_id, "hold_id": hold_id, "amount": str(amount),
                                                   "allowance": block.hold.hold_id,
                                                   "allowance_left": str(block.free()), **(details or {})})
                if block.free() < block.size / 2 and swarm_id not in self._refills:
                    self._refill_soon(swarm_id, amount)
                return Hold(swarm_id, hold_id, amount)
        return None

    def _refill_soon(self, swarm_id: str, amount: Decimal) -> None:
        """Take the next block before this one runs out, so the calls after it do not wait for the ledger."""
        task = asyncio.ensure_future(self._refill(swarm_id, amount, self._lease))
        self._refills[swarm_id] = task  # referenced until done (the loop keeps only weak references)
        task.add_done_callback(lambda _t: self._refills.pop(swarm_id, None))

    async def _refill(self, swarm_id: str, amount: Decimal, lease: int | None) -> None:
        if lease is None:
            return
        async with self._locks[swarm_id]:
            if any(not b.closing and b.free() >= b.size / 2 for b in self._blocks.get(swarm_id, ())):
                return  # settlements or another taker made room meanwhile
            try:
                block = await self._take(swarm_id, amount, lease)
            except (BudgetExceededError, CircuitOpenError, BackendError) as exc:
                # a call that finds no room takes a block itself, and that decides and reports
                self.audit("allowance_refill_skipped", {"swarm_id": swarm_id, "reason": type(exc).__name__})
                return
            self._blocks[swarm_id].append(block)

    async def reserve(self, swarm_id: str, hold_id: str, amount: Decimal, lease: int,
                      details: dict[str, Any] | None = None) -> Hold:
        """Admit the call against a block, taking a new block from the ledger when none has room."""
        amount = to_money(amount, "amount")
        self._lease = lease
        admitted = self._admit(swarm_id, hold_id, amount, details)
        if admitted is not None:
            return admitted
        async with self._locks[swarm_id]:
            admitted = self._admit(swarm_id, hold_id, amount, details)  # a block may have come while we waited
            if admitted is not None:
                return admitted
            try:
                try:
                    block = await self._take(swarm_id, amount, lease)
                except BudgetExceededError:
                    if not await self._give_back_free(swarm_id):
                        raise
                    block = await self._take(swarm_id, amount, lease)  # decided again with nothing held idle
            except BudgetExceededError as exc:
                self.audit("model_call_refused", {"swarm_id": swarm_id, "hold_id": hold_id, "reason": "budget",
                                                  "needed": str(amount), "remaining": str(exc.remaining),
                                                  **(details or {})}, "WARN")
                raise BudgetExceededError(
                    f"the call may cost {amount} but {swarm_id} has {exc.remaining} left",
                    remaining=exc.remaining, needed=amount) from None
            except CircuitOpenError:
                self.audit("model_call_refused", {"swarm_id": swarm_id, "hold_id": hold_id,
                                                  "reason": "breaker_open", **(details or {})}, "WARN")
                raise
            self._blocks[swarm_id].append(block)
            admitted = self._admit(swarm_id, hold_id, amount, details)
            assert admitted is not None  # the block was taken for at least this call, and no await since
            return admitted

    async def _take(self, swarm_id: str, amount: Decimal, lease: int) -> _Block:
        block_id = f"allowance-{self._replica}-{next(self._numbers)}"
        hold = await self.ledger.reserve(swarm_id, block_id, _L.multiply(amount, Decimal(self.calls)), lease,
                                         {"for": str(amount)}, at_least=amount, share=self.share, audit_as="allowance")
        return _Block(hold, time.monotonic(), lease)

    async def _give_back_free(self, swarm_id: str) -> bool:
        """Shrink every block of the swarm to what its calls hold (caller holds the lock). True if any shrank."""
        gave = False
        for block in list(self._blocks.get(swarm_id, ())):
            if block.free() > 0 or not block.calls and not block.pending:
                block.closing = True
                await self._write(swarm_id, block)
                gave = True
        return gave

    # ------------------------------------------------------------------ settlement
    def _block_of(self, hold: Hold) -> _Block | None:
        for block in self._blocks.get(hold.swarm_id, ()):
            if hold.hold_id in block.calls:
                return block
        return None

    async def settle(self, hold: Hold, cost: Decimal, details: dict[str, Any] | None = None,
                     operation: str = "model_call_settled") -> Decimal | None:
        """Charge ``cost`` (at most what the call reserved) once its block's next ledger write commits.
        Returns what was charged, or None if the call is not (or no longer) held here."""
        block = self._block_of(hold)
        if block is None:
            return None
        held = block.calls[hold.hold_id]
        cost = min(max(to_money(cost, "cost"), _ZERO), held)
        done: asyncio.Future[Decimal | None] = asyncio.get_running_loop().create_future()
        block.settled(_Settlement(Hold(hold.swarm_id, hold.hold_id, held), cost, dict(details or {}), operation, done))
        block.last_used = time.monotonic()
        self._kick(hold.swarm_id)
        return await asyncio.shield(done)

    async def release(self, hold: Hold, details: dict[str, Any] | None = None) -> None:
        """Drop the call's reservation, charging nothing (the upstream failed before producing anything)."""
        await self.settle(hold, _ZERO, details, operation="model_call_released")

    def _kick(self, swarm_id: str) -> None:
        """Write the swarm's pending settlements unless a writer is already at it (it takes them next)."""
        if swarm_id not in self._flushers:
            self._flushers[swarm_id] = asyncio.ensure_future(self._flush(swarm_id))

    async def _flush(self, swarm_id: str) -> None:
        pause = 0.05
        try:
            # settlements that come within the window share one transaction (and one round trip of
            # the event loop's and etcd's time that the calls in flight would otherwise compete with)
            await asyncio.sleep(self.flush_window)
            while True:
                blocks = [b for b in self._blocks.get(swarm_id, ()) if b.pending]
                if not blocks:
                    return
                try:
                    async with self._locks[swarm_id]:
                        for block in blocks:
                            await self._write(swarm_id, block)
                    return  # what was settled meanwhile waits for the next window (the kick below)
                except Exception as exc:  # noqa: BLE001 - store away or a record damaged: the calls stay
                    # pending (and held) until the ledger takes them; a charge is never dropped
                    self.audit("settlement_retried", {"swarm_id": swarm_id, "error": type(exc).__name__}, "WARN")
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            self._flushers.pop(swarm_id, None)
            if any(b.pending for b in self._blocks.get(swarm_id, ())):
                self._kick(swarm_id)  # settled while we were leaving
            else:
                self._schedule_close(swarm_id, self.idle)

    async def _write(self, swarm_id: str, block: _Block) -> None:
        """One ledger transaction: charge the block's pending calls and keep the rest of the block (what a
        call reserved but did not cost returns to the block's free part); a closing block keeps only what
        its admitted calls hold and gives the rest back. Caller holds the swarm's lock."""
        taken = block.take_pending()
        cost = _total(s.cost for s in taken)
        block.flushing = cost
        keep = block.in_calls if block.closing else _L.subtract(block.hold.amount, cost)
        try:
            charged = await self.ledger.settle(block.hold, cost, {"calls": len(taken)}, "allowance_settled",
                                               keep=keep)
        except BaseException:
            block.put_back(taken)  # nothing is lost: written by the next attempt
            block.flushing = _ZERO
            raise
        block.flushing = _ZERO
        if charged is None:  # the block is gone from the ledger (its lease expired and a sweeper charged it all)
            self._drop(swarm_id, block)
            for s in taken:
                self.audit("model_call_expired", {"swarm_id": swarm_id, "hold_id": s.hold.hold_id, "charged": "0",
                                                  "covered_by": block.hold.hold_id, **s.details}, "WARN")
                s.done.set_result(None) if not s.done.done() else None
            return
        block.hold = Hold(swarm_id, block.hold.hold_id, keep)
        if keep <= 0:
            self._drop(swarm_id, block)
        elif self.ledger.known_open(swarm_id):
            block.closing = True  # the breaker opened: the block serves only the calls it already admitted
        # One settlement at a time, the event loop free to serve the calls in flight between two: each one's
        # audit entry, and the cost accounting of the call waiting for it, took ~0.2 ms of the loop here, and
        # a window's dozen in one go held the answers of the calls in flight back by milliseconds (the top 2 %
        # of gateway calls overlapped a settlement write 9 times in 10, benchmarks/RESULTS.md).
        left = list(reversed(taken))
        try:
            while left:
                self._settled(swarm_id, block, left.pop())
                if left:
                    await asyncio.sleep(0)
        finally:  # cancelled between two (close() timing out): the rest are in the ledger, so answered now
            while left:
                self._settled(swarm_id, block, left.pop())

    def _settled(self, swarm_id: str, block: _Block, s: _Settlement) -> None:
        """A settlement whose charge is in the ledger: audited, and its call told what it was charged."""
        self.audit(s.operation, {"swarm_id": swarm_id, "hold_id": s.hold.hold_id, "held": str(s.hold.amount),
                                 "charged": str(s.cost), "allowance": block.hold.hold_id, **s.details})
        if not s.done.done():
            s.done.set_result(s.cost)

    def _drop(self, swarm_id: str, block: _Block) -> None:
        blocks = self._blocks.get(swarm_id)
        if blocks is not None and block in blocks:
            blocks.remove(block)
            if not blocks:
                del self._blocks[swarm_id]

    # ------------------------------------------------------------------ giving blocks back
    def _schedule_close(self, swarm_id: str, after: float) -> None:
        timer = self._closers.pop(swarm_id, None)
        if timer is not None:
            timer.cancel()
        if self._blocks.get(swarm_id):
            self._closers[swarm_id] = asyncio.get_running_loop().call_later(after, self._start_close, swarm_id)

    def _start_close(self, swarm_id: str) -> None:
        task = asyncio.ensure_future(self._close_idle(swarm_id))
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    async def _close_idle(self, swarm_id: str) -> None:
        self._closers.pop(swarm_id, None)
        now = time.monotonic()
        try:
            async with self._locks[swarm_id]:
                for block in list(self._blocks.get(swarm_id, ())):
                    if not block.calls and not block.pending and \
                            (block.closing or now - block.last_used >= self.idle):
                        block.closing = True
                        await self._write(swarm_id, block)
        except BackendError as exc:
            self.audit("allowance_return_failed", {"swarm_id": swarm_id, "error": type(exc).__name__}, "WARN")
        if self._blocks.get(swarm_id):
            self._schedule_close(swarm_id, self.idle)

    async def close(self, timeout: float = 10.0) -> None:
        """Write every settlement and give every block back (what is still in flight stays held, for the
        sweeper to charge when this replica's lease ends)."""
        for timer in self._closers.values():
            timer.cancel()
        self._closers.clear()
        flushers = list(self._flushers.values()) + list(self._refills.values())
        if flushers:
            await asyncio.wait(flushers, timeout=timeout)
        for swarm_id in list(self._blocks):
            try:
                async with self._locks[swarm_id]:
                    for block in list(self._blocks.get(swarm_id, ())):
                        block.closing = True
                        await asyncio.wait_for(self._write(swarm_id, block), timeout)
            except (BackendError, asyncio.TimeoutError) as exc:
                self.audit("allowance_return_failed", {"swarm_id": swarm_id, "error": type(exc).__name__}, "WARN")

    async def sweep(self) -> list[Hold]:
        return await self.ledger.sweep()
