"""The reservation ledger and the price bounds, on the embedded store: hostile sequences, concurrency."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.errors import CircuitOpenError, ValidationError
from infrafabric.gateway.config import GatewayConfig
from infrafabric.gateway.prices import RateCard
from infrafabric.gateway.reservations import HOLDS, BudgetExceededError, Hold, ReservationLedger

RATES = {"version": "v1", "models": {"m": {"input": 1.5, "output": 6, "cached_input": 0.75,
                                           "max_output_tokens": 4096, "provider": "p"}}}


async def _seed(kv, swarm: str, budget: str) -> None:  # type: ignore[no-untyped-def]
    await kv.put(f"/governor/budgets/{swarm}", json.dumps({"budget": budget, "spent": "0"}))


async def _state(kv, swarm: str) -> tuple[Decimal, Decimal, dict[str, str]]:  # type: ignore[no-untyped-def]
    budget = json.loads((await kv.get(f"/governor/budgets/{swarm}")).value)
    holds_kv = await kv.get(f"{HOLDS}{swarm}")
    holds = json.loads(holds_kv.value)["holds"] if holds_kv else {}
    return Decimal(budget["budget"]), Decimal(budget["spent"]), holds


amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.5"), places=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["reserve", "settle", "release", "settle_again"]), amounts, amounts),
                    min_size=1, max_size=40))
def test_any_sequence_keeps_spent_plus_held_within_the_budget(ops: list[tuple[str, Decimal, Decimal]]) -> None:
    async def run() -> None:
        async with open_kv("memory://") as kv:
            await _seed(kv, "s", "1.000000")
            ledger = ReservationLedger(kv)
            lease = await kv.grant_lease(60)
            open_holds: list[Hold] = []
            done: list[Hold] = []
            charged_total = Decimal(0)
            for i, (op, amount, cost) in enumerate(ops):
                if op == "reserve":
                    try:
                        open_holds.append(await ledger.reserve("s", f"h{i}", amount, lease))
                    except (BudgetExceededError, CircuitOpenError):
                        pass
                elif op in ("settle", "release") and open_holds:
                    hold = open_holds.pop(0)
                    charged = await ledger.settle(hold, cost) if op == "settle" else (await ledger.release(hold), 0)[1]
                    assert charged is not None and charged <= hold.amount  # never more than was held
                    charged_total += charged
                    done.append(hold)
                elif op == "settle_again" and done:
                    assert await ledger.settle(done[-1], cost) is None  # a second settlement charges nothing
                budget, spent, holds = await _state(kv, "s")
                held = sum((Decimal(v) for v in holds.values()), Decimal(0))
                assert spent + held <= budget
                assert spent == charged_total
                assert set(holds) == {h.hold_id for h in open_holds}

    asyncio.run(run())


async def test_concurrent_reservations_cannot_all_pass_the_check() -> None:
    """The bug of proxies that check, forward, then record: 200 concurrent calls against room for 10."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        ledger = ReservationLedger(kv)
        lease = await kv.grant_lease(60)
        results = await asyncio.gather(*(ledger.reserve("s", f"h{i}", Decimal("0.1"), lease) for i in range(200)),
                                       return_exceptions=True)
        held = [r for r in results if isinstance(r, Hold)]
        assert len(held) == 10 and all(isinstance(r, BudgetExceededError) for r in results if r not in held)
        refused = next(r for r in results if isinstance(r, BudgetExceededError))
        assert refused.remaining == 0 and refused.needed == Decimal("0.1")


async def test_the_breaker_trips_at_exhaustion_and_then_refuses() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "0.3")
        ledger = ReservationLedger(kv)
        lease = await kv.grant_lease(60)
        hold = await ledger.reserve("s", "a", Decimal("0.3"), lease)
        assert await ledger.settle(hold, Decimal("0.3")) == Decimal("0.3")
        with pytest.raises(CircuitOpenError):
            await ledger.reserve("s", "b", Decimal("0.000001"), lease)


@pytest.mark.parametrize("damage", [b"not json", b'{"budget": "1", "spent": "NaN"}', b'{"budget": "x"}', b"[]"])
async def test_a_damaged_budget_record_admits_nothing(damage: bytes) -> None:
    async with open_kv("memory://") as kv:
        await kv.put("/governor/budgets/s", damage)
        with pytest.raises(CircuitOpenError):
            await ReservationLedger(kv).reserve("s", "a", Decimal("0.01"), await kv.grant_lease(60))


async def test_a_hold_whose_replica_died_is_settled_at_its_amount_once() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        ledger = ReservationLedger(kv)
        dying, living = await kv.grant_lease(60), await kv.grant_lease(60)
        await ledger.reserve("s", "dead", Decimal("0.2"), dying)
        await ledger.reserve("s", "alive", Decimal("0.3"), living)
        assert await ledger.sweep() == []
        await kv.revoke_lease(dying)  # what a lease expiring does
        assert await ledger.sweep() == [Hold("s", "dead", Decimal("0.2"))] and await ledger.sweep() == []
        _, spent, holds = await _state(kv, "s")
        assert spent == Decimal("0.2") and set(holds) == {"alive"}


async def test_two_replicas_sweeping_the_same_dead_holds_at_once_charge_each_once() -> None:
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        dying = await kv.grant_lease(60)
        for i in range(5):
            await ReservationLedger(kv).reserve("s", f"dead-{i}", Decimal("0.1"), dying)
        await kv.revoke_lease(dying)
        together = asyncio.Barrier(2)

        class ReadsTogether:  # both sweepers have read the holds before either settles one
            def __getattr__(self, name: str) -> Any:
                return getattr(kv, name)

            async def get_prefix(self, prefix: str) -> Any:
                found = await kv.get_prefix(prefix)
                if prefix == HOLDS:
                    await together.wait()
                return found

        a, b = await asyncio.gather(ReservationLedger(ReadsTogether()).sweep(),  # type: ignore[arg-type]
                                    ReservationLedger(ReadsTogether()).sweep())  # type: ignore[arg-type]
        assert sorted(h.hold_id for h in a + b) == [f"dead-{i}" for i in range(5)]  # each charge reported once
        _, spent, holds = await _state(kv, "s")
        assert spent == sum((h.amount for h in a + b), Decimal(0)) == Decimal("0.5") and holds == {}


@given(prompt=st.text(max_size=300), out=st.integers(min_value=0, max_value=4096),
       cached=st.integers(min_value=0, max_value=1000))
def test_the_reservation_bounds_any_usage_within_its_limits(prompt: str, out: int, cached: int) -> None:
    """Whatever the prompt, a usage of at most one token per prompt byte and at most the reserved output
    costs no more than the reservation."""
    rate = RateCard.from_dict(RATES).rate("m")
    size = len(prompt.encode("utf-8", "surrogatepass"))
    bound = rate.max_cost(size, rate.output_bound(out or None))
    assert rate.cost(size, min(out, rate.output_bound(out or None)), min(cached, size)) <= bound


@given(size=st.integers(min_value=0, max_value=10_000), out=st.integers(min_value=0, max_value=4096),
       split=st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=10_000)),
       write=st.sampled_from(["0", "0.8", "1.00", "2.0", "9.5"]), cached=st.sampled_from(["0", "0.08", "3"]))
def test_the_reservation_bounds_cache_reads_and_writes_at_any_rates(size: int, out: int, split: tuple[int, int],
                                                                    write: str, cached: str) -> None:
    """Anthropic bills prompt tokens written to its cache above the input rate (1.25x): a call whose prompt
    tokens (read from, written to the cache or neither, at most one per byte) and output stay within the
    reservation's limits costs no more than the reservation, whatever the cache rates."""
    rate = RateCard.from_dict({"version": "v", "models": {"m": {
        "input": "0.8", "output": "4", "cached_input": cached, "cache_write": write, "max_output_tokens": 4096,
        "provider": "p"}}}).rate("m")
    read, written = min(split[0], size), min(split[1], size - min(split[0], size))
    bound = rate.max_cost(size, rate.output_bound(out or None))
    assert rate.cost(size, min(out, rate.output_bound(out or None)), read, written) <= bound


@given(price=st.decimals(min_value=0, max_value=1_000_000, places=12, allow_nan=False, allow_infinity=False),
       size=st.integers(min_value=0, max_value=16 * 1024 * 1024), out=st.integers(min_value=0, max_value=1_000_000))
def test_every_charge_a_rates_table_allows_is_an_amount_the_ledger_takes(price: Decimal, size: int, out: int) -> None:
    from infrafabric.governor.money import to_money

    rate = RateCard.from_dict({"version": "v", "models": {"m": {
        "input": str(price), "output": str(price), "cached_input": str(price), "max_output_tokens": 1_000_000,
        "provider": "p"}}}).rate("m")
    assert to_money(rate.max_cost(size, out)) == rate.max_cost(size, out)
    assert to_money(rate.cost(size, out, size // 2)) == rate.cost(size, out, size // 2)


def test_cache_writes_are_charged_at_their_rate_and_read_from_anthropic_usage() -> None:
    from infrafabric.gateway.usage import anthropic_usage

    usage = anthropic_usage({"input_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 2000,
                             "output_tokens": 50})
    assert usage is not None and (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == \
        (3010, 1000, 2000)
    rate = RateCard.from_dict({"version": "v", "models": {"m": {
        "input": "1", "output": "5", "cached_input": "0.1", "cache_write": "1.25", "max_output_tokens": 100,
        "provider": "p"}}}).rate("m")
    expected = (Decimal(10) * 1 + Decimal(1000) * Decimal("0.1") + Decimal(2000) * Decimal("1.25") + 50 * 5) / 10**6
    assert rate.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens,
                     usage.cache_write_tokens) == expected


@pytest.mark.parametrize("bad", [
    {"version": "v", "models": {}},
    {"version": "v", "models": {"m": {"input": 1, "output": 1, "cache_write": "-1", "max_output_tokens": 1,
                                      "provider": "p"}}},
    {"version": "v", "models": {"m": {"input": "NaN", "output": 1, "max_output_tokens": 1, "provider": "p"}}},
    {"version": "v", "models": {"m": {"input": -1, "output": 1, "max_output_tokens": 1, "provider": "p"}}},
    {"version": "v", "models": {"m": {"input": 1, "output": 1, "max_output_tokens": 0, "provider": "p"}}},
    # 19 decimals per million tokens: a charge would need 25, more than an amount holds (every call refused)
    {"version": "v", "models": {"m": {"input": "0.1234567890123456789", "output": 1, "max_output_tokens": 1,
                                      "provider": "p"}}},
])
def test_a_bad_rates_table_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        RateCard.from_dict(bad)


def test_provider_keys_never_come_from_the_file_and_must_exist() -> None:
    base = {**RATES, "providers": {"p": {"kind": "openai", "base_url": "http://x/v1", "api_key_env": "K"}}}
    assert GatewayConfig.from_dict(base, environ={"K": "secret"}).providers["p"].api_key == "secret"
    assert "secret" not in repr(GatewayConfig.from_dict(base, environ={"K": "secret"}).providers["p"])
    with pytest.raises(ValidationError, match="empty"):
        GatewayConfig.from_dict(base, environ={})
    inline = {**RATES, "providers": {"p": {"kind": "openai", "base_url": "http://x/v1", "api_key": "sk-1"}}}
    with pytest.raises(ValidationError, match="api_key_env"):
        GatewayConfig.from_dict(inline, environ={})


async def test_a_replicas_view_never_outlives_another_writer() -> None:
    """Two ledgers (two replicas) and an operator writing the same records: every decision holds."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "1.0")
        a, b = ReservationLedger(kv), ReservationLedger(kv)
        lease = await kv.grant_lease(60)
        await a.settle(await a.reserve("s", "a1", Decimal("0.5"), lease), Decimal("0.5"))  # a's view: spent 0.5
        await b.settle(await b.reserve("s", "b1", Decimal("0.4"), lease), Decimal("0.4"))  # behind a's back
        with pytest.raises(BudgetExceededError) as caught:  # a's view says 0.5 left; the store says 0.1
            await a.reserve("s", "a2", Decimal("0.2"), lease)
        assert caught.value.remaining == Decimal("0.1")
        hold = await a.reserve("s", "a3", Decimal("0.1"), lease)
        assert await a.settle(hold, Decimal("0.1")) == Decimal("0.1")  # exhausted: a's view has the breaker open
        await kv.put("/governor/breakers/s", json.dumps({"state": "closed", "reason": None,
                                                          "consecutive_failures": 0}))
        await kv.put("/governor/budgets/s", json.dumps({"budget": "2.0", "spent": "1.0"}))  # an operator's reset
        assert (await a.reserve("s", "a4", Decimal("0.5"), lease)).amount == Decimal("0.5")


async def test_blocks_taken_as_shares_of_shares_stay_amounts_that_settle() -> None:
    """Each block takes a quarter of what is left: without rounding, each took two more decimals than the last,
    until the ledger's own settlement of a block was refused as too precise (the chaos run left 26 holds)."""
    async with open_kv("memory://") as kv:
        await _seed(kv, "s", "0.0123457")
        ledger = ReservationLedger(kv)
        lease = await kv.grant_lease(60)
        holds = [await ledger.reserve("s", f"b{i}", Decimal("1"), lease, at_least=Decimal("0.0000001"),
                                      share=Decimal("0.25")) for i in range(20)]
        assert all(-h.amount.as_tuple().exponent <= 24 for h in holds)  # type: ignore[operator]
        for h in holds:
            assert await ledger.settle(h, h.amount) == h.amount
        _, spent, left = await _state(kv, "s")
        assert left == {} and spent == sum((h.amount for h in holds), Decimal(0))
