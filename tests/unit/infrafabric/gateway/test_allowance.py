"""Per-replica allowances over the shared ledger, on the embedded store: two replicas, hostile sequences,
bursts, a replica that dies holding a block, a breaker opened elsewhere, a ledger that fails a write."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.errors import BackendUnavailable, OutcomeUnknown
from backends.kv import open_kv
from infrafabric.errors import CircuitOpenError
from infrafabric.gateway.allowance import AllowanceLedger
from infrafabric.gateway.reservations import HOLDS, BudgetExceededError, Hold, ReservationLedger


async def _seed(kv: Any, swarm: str, budget: str) -> None:
    await kv.put(f"/governor/budgets/{swarm}", json.dumps({"budget": budget, "spent": "0"}))


async def _state(kv: Any, swarm: str) -> tuple[Decimal, Decimal, dict[str, str]]:
    budget = json.loads((await kv.get(f"/governor/budgets/{swarm}")).value)
    holds_kv = await kv.get(f"{HOLDS}{swarm}")
    holds = json.loads(holds_kv.value)["holds"] if holds_kv else {}
    return Decimal(budget["budget"]), Decimal(budget["spent"]), holds


class Audit(list[tuple[str, dict[str, Any]]]):
    def __call__(self, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        self.append((operation, params))

    def charged(self, *operations: str) -> Decimal:
        return sum((Decimal(p["charged"]) for op, p in self if op in operations), Decimal(0))

    def ops(self, operation: str) -> list[dict[str, Any]]:
        return [p for op, p in self if op == operation]


class _Writes:
    """Counts the store's transactions, and those made while a test marks a call as waiting (``in_call``)."""

    def __init__(self, kv: Any) -> None:
        self.total = self.during_call = 0
        self.in_call = False
        txn = kv.txn

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.total += 1
            self.during_call += self.in_call
            return await txn(*args, **kwargs)

        kv.txn = counted


def _replica(kv: Any, audit: Audit, **options: Any) -> AllowanceLedger:
    return AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, flush_window=0.0, **options)


@asynccontextmanager
async def _ledger(budget: str, **options: Any) -> AsyncIterator[tuple[Any, Audit, AllowanceLedger, int]]:
    """One swarm ("s") with ``budget`` in an embedded store, one replica, a lease, and the audit it writes."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", budget)
        audit = Audit()
        yield kv, audit, _replica(kv, audit, **options), await kv.grant_lease(60)


amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.3"), places=6)


async def _try_reserve(replica: AllowanceLedger, call_id: str, amount: Decimal, lease: int) -> Hold | None:
    try:
        return await replica.reserve("s", call_id, amount, lease)
    except (BudgetExceededError, CircuitOpenError):
        return None


def ledger_ops(kinds: list[str], max_size: int) -> st.SearchStrategy[list[tuple[str, int, Decimal, Decimal]]]:
    """(operation, which replica or call, amount reserved, cost settled) steps."""
    return st.lists(st.tuples(st.sampled_from(kinds), st.integers(0, 1), amounts,
                              st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=6)),
                    min_size=1, max_size=max_size)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ledger_ops(["reserve", "settle", "release"], 40), calls=st.integers(1, 8))
def test_two_replicas_never_pass_the_budget_and_the_ledger_agrees_with_the_audit(
        ops: list[tuple[str, int, Decimal, Decimal]], calls: int) -> None:
    async def run() -> None:
        async with open_kv("memory://") as kv:
            await _seed(kv, "s", "1.0")
            audit = Audit()
            replicas = [_replica(kv, audit, calls=calls), _replica(kv, audit, calls=calls)]
            lease = await kv.grant_lease(60)
            open_calls: list[tuple[int, Hold]] = []
            charged = Decimal(0)
            for n, (op, r, amount, cost) in enumerate(ops):
                if op == "reserve":
                    if (hold := await _try_reserve(replicas[r], f"c{n}", amount, lease)) is not None:
                        open_calls.append((r, hold))
                elif open_calls:
                    owner, hold = open_calls.pop(r % len(open_calls))
                    if op == "settle":
                        got = await replicas[owner].settle(hold, cost)
                        assert got == min(cost, hold.amount)
                        charged += got
                    else:
                        await replicas[owner].release(hold)
                    assert await replicas[owner].settle(hold, cost) is None  # never charged twice
                budget, spent, holds = await _state(kv, "s")
                assert spent + sum((Decimal(v) for v in holds.values()), Decimal(0)) <= budget
                assert spent == charged  # every settle returned after its charge was in the ledger
            for owner, hold in open_calls:
                charged += await replicas[owner].settle(hold, hold.amount) or 0
            for replica in replicas:
                await replica.close()
            _, spent, holds = await _state(kv, "s")
            assert holds == {} and spent == charged == audit.charged("model_call_settled")
            admitted = {p["hold_id"] for p in audit.ops("model_call_reserved")}
            finished = [p["hold_id"] for op in ("model_call_settled", "model_call_released") for p in audit.ops(op)]
            assert sorted(finished) == sorted(admitted)  # each admitted call settled exactly once

    asyncio.run(run())


async def test_a_burst_over_two_replicas_is_held_to_the_budget_and_charged_once() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        audit = Audit()
        replicas = [_replica(kv, audit), _replica(kv, audit)]
        lease = await kv.grant_lease(60)

        async def call(i: int) -> Decimal | None:
            replica = replicas[i % 2]
            try:
                hold = await replica.reserve("s", f"c{i}", Decimal("0.05"), lease)
            except (BudgetExceededError, CircuitOpenError):
                return None
            await asyncio.sleep(0)
            return await replica.settle(hold, Decimal("0.03"))

        results = await asyncio.gather(*(call(i) for i in range(300)))
        for replica in replicas:
            await replica.close()
        admitted = [r for r in results if r is not None]
        _, spent, holds = await _state(kv, "s")
        assert holds == {} and spent <= Decimal("1.0")
        assert len(admitted) >= 20 and spent == sum(admitted, Decimal(0)) == audit.charged("model_call_settled")
        refused = audit.ops("model_call_refused")
        assert len(refused) == 300 - len(admitted)
        assert len(audit.ops("model_call_settled")) == len(admitted)


async def test_one_replica_uses_its_block_without_a_round_trip_per_call() -> None:
    async with _ledger("10", calls=8) as (kv, audit, replica, lease):
        writes = _Writes(kv)
        holds = [await replica.reserve("s", f"c{i}", Decimal("0.1"), lease) for i in range(8)]
        assert writes.total <= 2  # one block (a read, then the guarded write), not one per call
        _, _, held = await _state(kv, "s")
        assert list(held.values()) == ["0.8"]
        await asyncio.gather(*(replica.settle(h, Decimal("0.01")) for h in holds))
        await replica.close()
        _, spent, held = await _state(kv, "s")
        assert spent == Decimal("0.08") and held == {}


async def test_a_settled_call_frees_what_it_did_not_cost_before_the_ledger_write() -> None:
    """A settled call's cost is known: only that stays taken in its block until the next ledger write. The
    rest of what it reserved is free at once, so calls that cost a fraction of their bound reuse one block
    (before: every settled call kept its whole reservation until the write, a block of 8 ran out within a
    settlement window, and the replica took a new block every 8 calls)."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "100")
        audit = Audit()
        replica = AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, calls=8, flush_window=1.0)
        lease = await kv.grant_lease(60)
        writes = _Writes(kv)
        settling = []
        for i in range(64):  # 8 blocks' worth of calls, all settled within one (long) settlement window
            hold = await replica.reserve("s", f"c{i}", Decimal("0.1"), lease)
            settling.append(asyncio.ensure_future(replica.settle(hold, Decimal("0.001"))))
            await asyncio.sleep(0)  # the settlement is queued for the window's write
        assert writes.total <= 2, writes.total  # the first block only: a read, then its guarded write
        _, spent, held = await _state(kv, "s")
        assert spent == 0 and list(held.values()) == ["0.8"]
        await replica.close()  # the window's write charges them all, then the block goes back
        assert all(task.done() for task in settling)
        _, spent, held = await _state(kv, "s")
        assert spent == Decimal("0.064") and held == {}
        assert audit.charged("model_call_settled") == Decimal("0.064")


async def test_a_call_is_refused_only_when_the_ledger_cannot_fit_it_with_every_free_part_given_back() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "0.35")
        audit = Audit()
        a, b = _replica(kv, audit, calls=8), _replica(kv, audit, calls=8)
        lease = await kv.grant_lease(60)
        first = await a.reserve("s", "a1", Decimal("0.1"), lease)  # 8 calls wanted, a quarter of 0.35 allowed
        _, _, holds = await _state(kv, "s")
        assert list(holds.values()) == ["0.1"]  # not less than the call, not a quarter more
        held_by_b = await b.reserve("s", "b1", Decimal("0.1"), lease)  # so the other replica still has room
        await a.settle(first, Decimal("0.02"))  # a's block keeps 0.08 free (its refill, if taken, is free too)
        await b.settle(held_by_b, Decimal("0.1"))
        await b.close()  # another replica's idle block may keep room from a (documented); here it is given back
        big = await a.reserve("s", "a2", Decimal("0.2"), lease)  # 0.15 left in the ledger, 0.08 free in a's block:
        assert big.amount == Decimal("0.2")  # admitted once a gave its free part back
        with pytest.raises(BudgetExceededError) as refused:
            await a.reserve("s", "a3", Decimal("0.1"), lease)
        assert refused.value.remaining == Decimal("0.03")  # what is truly left
        assert audit.ops("model_call_refused")[-1]["hold_id"] == "a3"
        await a.settle(big, Decimal("0.2"))
        await a.close()
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.32") and holds == {}


async def test_a_settlement_whose_outcome_is_unknown_is_charged_once() -> None:
    async with _ledger("1.0") as (kv, audit, replica, lease):
        hold = await replica.reserve("s", "c0", Decimal("0.1"), lease)
        keep = await replica.reserve("s", "c1", Decimal("0.1"), lease)  # the block stays (kept, not dropped)
        txn, lost = kv.txn, [True]

        async def applied_then_lost(compare: Any, success: Any, *args: Any, **kwargs: Any) -> Any:
            result = await txn(compare, success, *args, **kwargs)
            if success and lost:
                lost.pop()
                raise OutcomeUnknown("the answer was lost")
            return result

        kv.txn = applied_then_lost  # type: ignore[method-assign]
        assert await replica.settle(hold, Decimal("0.04")) == Decimal("0.04")
        _, spent, _ = await _state(kv, "s")
        assert spent == Decimal("0.04")  # not charged again by a retry
        kv.txn = txn  # type: ignore[method-assign]
        await replica.settle(keep, Decimal("0.01"))
        await replica.close()
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.05") and holds == {}


async def test_a_replica_that_dies_holding_a_block_is_charged_the_block_once() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        audit = Audit()
        dying, living = _replica(kv, audit, calls=4), _replica(kv, audit, calls=4)
        dead_lease = await kv.grant_lease(60)
        in_flight = await dying.reserve("s", "x", Decimal("0.1"), dead_lease)
        _, _, holds = await _state(kv, "s")
        (block,) = holds.values()
        await kv.revoke_lease(dead_lease)  # the replica is gone: its lease ends
        assert len(await living.sweep()) == 1
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal(block) and holds == {}  # settled at the reservation: the whole block
        assert await dying.settle(in_flight, Decimal("0.01")) is None  # a late settlement charges nothing more
        _, spent_after, _ = await _state(kv, "s")
        assert spent_after == spent
        expired = audit.ops("model_call_expired")
        assert sum((Decimal(p["charged"]) for p in expired), Decimal(0)) == spent  # ledger and audit agree


async def test_a_breaker_opened_elsewhere_stops_admissions_at_the_next_write() -> None:
    async with _ledger("10", calls=100) as (kv, audit, replica, lease):
        hold = await replica.reserve("s", "c0", Decimal("0.01"), lease)
        await kv.put("/governor/breakers/s", json.dumps({"state": "open", "reason": "operator"}))
        await replica.settle(hold, Decimal("0.01"))  # its write meets the changed breaker
        with pytest.raises(CircuitOpenError):
            await replica.reserve("s", "c1", Decimal("0.01"), lease)
        await replica.close()
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.01") and holds == {}


async def test_a_settlement_the_ledger_fails_to_take_is_retried_never_lost() -> None:
    async with _ledger("1.0") as (kv, audit, replica, lease):
        hold = await replica.reserve("s", "c0", Decimal("0.1"), lease)
        txn, failures = kv.txn, [BackendUnavailable("etcd away"), BackendUnavailable("etcd away")]

        async def flaky(*args: Any, **kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return await txn(*args, **kwargs)

        kv.txn = flaky  # type: ignore[method-assign]
        assert await asyncio.wait_for(replica.settle(hold, Decimal("0.04")), 5) == Decimal("0.04")
        assert len(audit.ops("settlement_retried")) == 2
        await replica.close()
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.04") and holds == {}


async def test_an_idle_block_goes_back_to_the_budget() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        replica = _replica(kv, Audit(), idle=0.05)
        lease = await kv.grant_lease(60)
        await replica.settle(await replica.reserve("s", "c0", Decimal("0.1"), lease), Decimal("0.02"))
        for _ in range(200):
            _, spent, holds = await _state(kv, "s")
            if not holds:
                break
            await asyncio.sleep(0.01)
        assert holds == {} and spent == Decimal("0.02")


async def test_a_budget_record_damaged_mid_flight_refuses_new_calls_and_loses_no_charge() -> None:
    async with _ledger("1.0") as (kv, audit, replica, lease):
        first = await replica.reserve("s", "c0", Decimal("0.1"), lease)
        await replica.settle(first, Decimal("0.02"))
        in_flight = await replica.reserve("s", "c1", Decimal("0.1"), lease)
        good = (await kv.get("/governor/budgets/s")).value
        await kv.put("/governor/budgets/s", b'{"budget": "1.0", "spent": "NaN"}')  # damaged behind our back
        settling = asyncio.ensure_future(replica.settle(in_flight, Decimal("0.03")))
        for _ in range(100):  # the write meets the damaged record: retried, not dropped
            if audit.ops("settlement_retried"):
                break
            await asyncio.sleep(0.01)
        assert audit.ops("settlement_retried") and not settling.done()
        with pytest.raises(CircuitOpenError):  # nothing is admitted against a record that cannot be read
            await replica.reserve("s", "c2", Decimal("0.9"), lease)
        await kv.put("/governor/budgets/s", good)  # an operator repairs it
        assert await asyncio.wait_for(settling, 10) == Decimal("0.03")
        await replica.close()
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.05") and holds == {}


async def test_the_next_block_is_taken_before_the_one_in_use_runs_out() -> None:
    """Calls that cost all they reserve drain a block every 8 calls; the next one is taken in the background
    once half is spent, so after the first call no call waits for a ledger round trip."""
    async with _ledger("100", calls=8) as (kv, audit, replica, lease):
        writes = _Writes(kv)
        await replica.settle(await replica.reserve("s", "first", Decimal("0.1"), lease), Decimal("0.1"))
        for i in range(200):
            writes.in_call = True
            hold = await replica.reserve("s", f"c{i}", Decimal("0.1"), lease)
            writes.in_call = False
            assert await replica.settle(hold, Decimal("0.1")) == Decimal("0.1")
        assert writes.total > 25 and writes.during_call == 0  # blocks were taken, none while a call waited
        await replica.close()
        _, spent, held = await _state(kv, "s")
        assert spent == Decimal("20.1") and held == {}
        assert audit.charged("model_call_settled") == Decimal("20.1")


@pytest.mark.parametrize("budget", ["1000000", "999999999999999.123456789012345678901234", "10000.000000000000000000000001"])
async def test_large_budgets_with_every_decimal_are_reserved_and_settled_exactly(budget: str) -> None:
    """A budget of 10,000 or more left, with an amount's 24 decimals, has more digits than Decimal's default
    context keeps (28): a block's share of it was refused as InvalidOperation, a 500 on every model call
    (the benchmark's swarm of 1,000,000 found it), and sums of holds were rounded."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "big", budget)
        audit = Audit()
        ledger = _replica(kv, audit)
        lease = await kv.grant_lease(60)
        cost = Decimal("0.000000000000000000000007")
        holds = [await ledger.reserve("big", f"c{i}", Decimal("1.000000000000000000000003"), lease) for i in range(20)]
        for hold in holds:
            await ledger.settle(hold, cost)
        await ledger.close()
        limit, spent, left = await _state(kv, "big")
        assert left == {} and spent == cost * 20 and limit == Decimal(budget)
        assert audit.charged("allowance_settled") == cost * 20


async def test_the_calls_in_flight_run_between_the_settlements_of_one_ledger_write() -> None:
    """A window's settlements are answered one per turn of the event loop: a dozen audit entries and the
    cost accounting of the calls waiting for them, in one go, held the answers of calls in flight back."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "100")
        order: list[str] = []

        def audit(operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
            order.append(operation)

        replica = AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, calls=16, flush_window=0.05)
        lease = await kv.grant_lease(60)
        holds = [await replica.reserve("s", f"c{i}", Decimal("0.1"), lease) for i in range(12)]
        settling = [asyncio.ensure_future(replica.settle(h, Decimal("0.01"))) for h in holds]
        stop = False

        async def in_flight() -> None:  # a call whose answer arrives while the settlements are answered
            while not stop:
                order.append("tick")
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(in_flight())
        await asyncio.gather(*settling)
        stop = True
        await ticker
        settled = [i for i, op in enumerate(order) if op == "model_call_settled"]
        assert len(settled) == 12
        assert all("tick" in order[a:b] for a, b in zip(settled, settled[1:])), order[settled[0]:settled[-1] + 1]
        await replica.close()


async def test_settlements_of_a_write_cancelled_midway_are_all_answered_and_audited() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "100")
        audit = Audit()
        replica = AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, calls=16, flush_window=60.0)
        lease = await kv.grant_lease(60)
        holds = [await replica.reserve("s", f"c{i}", Decimal("0.1"), lease) for i in range(6)]
        settling = [asyncio.ensure_future(replica.settle(h, Decimal("0.01"))) for h in holds]
        await asyncio.sleep(0)
        (block,) = replica._blocks["s"]
        async with replica._locks["s"]:
            write = asyncio.ensure_future(replica._write("s", block))
            while len(audit.ops("model_call_settled")) < 2:  # the charge is in the ledger, two answered
                await asyncio.sleep(0)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
        assert len(audit.ops("model_call_settled")) == 6  # the rest answered at the cancellation, none lost
        assert [await task for task in settling] == [Decimal("0.01")] * 6
        _, spent, _ = await _state(kv, "s")
        assert spent == Decimal("0.06")
        for flusher in list(replica._flushers.values()):
            flusher.cancel()
        await replica.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ledger_ops(["reserve", "settle", "tick"], 60), calls=st.integers(1, 8))
def test_settlements_waiting_for_their_write_never_let_a_block_admit_past_its_hold(
        ops: list[tuple[str, int, Decimal, Decimal]], calls: int) -> None:
    """Settlements left pending (a real window, not awaited) while more calls are admitted: what a settled
    call did not cost is free at once, and yet no block ever admits more than it holds in the ledger, the
    ledger never holds and spends more than the budget, and every admitted call is charged once."""
    async def run() -> None:
        async with open_kv("memory://") as kv:
            await _seed(kv, "s", "1.0")
            audit = Audit()
            replicas = [AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, calls=calls,
                                        flush_window=0.002) for _ in range(2)]
            lease = await kv.grant_lease(60)
            open_calls: list[tuple[int, Hold]] = []
            settling: list[asyncio.Future[Decimal | None]] = []

            def check() -> None:
                for replica in replicas:
                    for block in replica._blocks.get("s", ()):
                        taken = block.in_calls + block.in_pending + block.flushing  # admitted + settled, unwritten
                        assert taken <= block.hold.amount, (block.hold.amount, block.in_calls, block.in_pending)

            for n, (op, r, amount, cost) in enumerate(ops):
                if op == "reserve":
                    if (hold := await _try_reserve(replicas[r], f"c{n}", amount, lease)) is not None:
                        open_calls.append((r, hold))
                elif op == "settle" and open_calls:
                    owner, hold = open_calls.pop(r % len(open_calls))
                    settling.append(asyncio.ensure_future(replicas[owner].settle(hold, cost)))
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(0.003 * r)  # sometimes a window's write happens here
                check()
                budget, spent, holds = await _state(kv, "s")
                assert spent + sum((Decimal(v) for v in holds.values()), Decimal(0)) <= budget
            for owner, hold in open_calls:
                settling.append(asyncio.ensure_future(replicas[owner].settle(hold, hold.amount)))
            charged = sum([c or Decimal(0) for c in await asyncio.gather(*settling)], Decimal(0))
            for replica in replicas:
                await replica.close()
            _, spent, holds = await _state(kv, "s")
            assert holds == {} and spent == charged == audit.charged("model_call_settled") and spent <= Decimal("1.0")
            admitted = sorted(p["hold_id"] for p in audit.ops("model_call_reserved"))
            assert sorted(p["hold_id"] for p in audit.ops("model_call_settled")) == admitted

    asyncio.run(run())
