"""Attacks on IF.gateway's parts, on the embedded store: a hostile provider's stream and usage blocks, a
configuration that fails open, and settlements racing sweepers for the same holds. Three failed when written
(a non-object usage in ``message_start`` raised in the meter, a line without end grew it without bound,
``allow_larger = "false"`` read as true); the fixes are in the same commit."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.gateway.config import GatewayConfig
from infrafabric.gateway.reservations import HOLDS, Hold, ReservationLedger
from infrafabric.gateway.usage import StreamMeter, anthropic_usage, openai_usage

_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                               st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=3)), max_leaves=8)


# ---------------------------------------------------------------------------------------------- usage
@settings(max_examples=300, deadline=None)
@given(usage=st.one_of(_json, st.dictionaries(st.sampled_from(
    ["prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "cache_read_input_tokens",
     "cache_creation_input_tokens", "prompt_tokens_details"]), st.one_of(_json, st.integers(-10**13, 10**13),
                                                                         st.fixed_dictionaries({"cached_tokens": _json})),
    max_size=7)), embeddings=st.booleans(), started=st.one_of(st.none(), st.integers(0, 10**6)))
def test_a_forged_usage_block_never_parses_to_a_negative_or_unbounded_count(usage: Any, embeddings: bool,
                                                                            started: int | None) -> None:
    """Attack: any JSON where a provider's usage goes. Parsing never raises, and what it reads is counts
    from 0 to 10^12 each (so a price of them is finite and non-negative, then capped at the hold)."""
    for read in (openai_usage(usage, embeddings=embeddings), anthropic_usage(usage, started)):
        if read is not None:
            for n in (read.input_tokens, read.output_tokens, read.cached_input_tokens):
                assert type(n) is int and 0 <= n <= 4 * 10**12


_events = st.one_of(
    st.builds(lambda u: {"type": "message_start", "message": {"usage": u}}, _json),
    st.builds(lambda m: {"type": "message_start", "message": m}, _json),
    st.builds(lambda u: {"type": "message_delta", "usage": u}, _json),
    st.builds(lambda u: {"choices": [], "usage": u}, _json), _json)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["chat", "messages"]), events=st.lists(_events, min_size=1, max_size=6))
@example(kind="messages", events=[{"type": "message_start", "message": {"usage": [1]}}])
def test_no_event_a_provider_streams_makes_the_meter_raise(kind: str, events: list[Any]) -> None:
    """Attack: a provider streams events of any shape where usage is read (message_start / message_delta /
    a chunk with usage). The meter must read or skip them, never raise mid-relay."""
    meter = StreamMeter(kind)
    for event in events:
        meter.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    usage = meter.usage()
    assert usage is None or min(usage.input_tokens, usage.output_tokens) >= 0


def test_a_line_without_end_does_not_grow_the_meter_without_bound() -> None:
    """Attack: a provider streams 3 MB of one line with no newline (the meter's comment promises a bound of
    about 1 MB for that)."""
    meter = StreamMeter("chat")
    meter.feed(b"data: {\"choices\":[]}\n\n")
    piece = b"x" * 65536
    for _ in range(48):
        meter.feed(piece)
    assert len(meter._buffer) <= (1 << 20) + len(piece)


def test_usage_split_anywhere_and_after_junk_is_still_read() -> None:
    """Attack: the final usage event arrives byte by byte after an unparseable event and a comment line: still
    read (a meter that lost it would charge the reservation, one that misread it the wrong amount)."""
    meter = StreamMeter("chat")
    stream = (b": keep-alive\n\ndata: {not json usage\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}]}\n\n"
              b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n")
    for i in range(len(stream)):
        meter.feed(stream[i:i + 1])
    usage = meter.usage()
    assert usage is not None and (usage.input_tokens, usage.output_tokens) == (12, 7) and meter.any_output


# ---------------------------------------------------------------------------------------------- config
_BASE = {"version": "v", "models": {"small": {"input": 1, "output": 1, "max_output_tokens": 10, "provider": "p"},
                                    "large": {"input": 9, "output": 9, "max_output_tokens": 10, "provider": "p"}},
         "providers": {"p": {"kind": "openai", "base_url": "http://x/v1", "api_key_env": "K"}},
         "policy": {"cheaper_unless_allowed": {"large": "small"}}}


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_a_mistyped_allow_larger_is_refused_not_read_as_true(value: Any) -> None:
    """Attack (operator slip an attacker benefits from): allow_larger = "false" must not let the swarm use the
    larger model."""
    data = {**_BASE, "swarms": {"s": {"allow_larger": value}}}
    try:
        config = GatewayConfig.from_dict(data, environ={"K": "k"})
    except Exception:  # noqa: BLE001 - refusing the file is the right answer
        return
    assert config.policy("s").allow_larger is False


# ---------------------------------------------------------------------------------------------- ledger races
async def _seed(kv: Any, swarm: str, budget: str) -> None:
    await kv.put(f"/governor/budgets/{swarm}", json.dumps({"budget": budget, "spent": "0"}))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.2"), places=6),
                                st.decimals(min_value=Decimal(0), max_value=Decimal("0.5"), places=6),
                                st.booleans()), min_size=1, max_size=12))
def test_settlements_racing_two_sweepers_for_a_dead_replicas_holds_charge_each_once(
        calls: list[tuple[Decimal, Decimal, bool]]) -> None:
    """Attack: a replica's lease ends while its calls are settling; two other replicas sweep at the same
    moment. Each hold is charged exactly once (by its settlement, capped at the hold, or by a sweeper at the
    hold), spent equals the sum of what every party reports charged, and spent + held never pass the budget."""
    async def run() -> None:
        async with open_kv("memory://") as kv:
            await _seed(kv, "s", "1.0")
            dying, living = await kv.grant_lease(60), await kv.grant_lease(60)
            owner = ReservationLedger(kv)
            holds: list[tuple[Hold, Decimal, bool]] = []
            for i, (amount, cost, dead) in enumerate(calls):
                try:
                    holds.append((await owner.reserve("s", f"h{i}", amount, dying if dead else living), cost, dead))
                except Exception:  # noqa: BLE001 - a refusal: nothing held, nothing to settle
                    continue
            await kv.revoke_lease(dying)
            sweepers = [ReservationLedger(kv), ReservationLedger(kv)]
            results = await asyncio.gather(*(owner.settle(h, c) for h, c, _ in holds),
                                           *(s.sweep() for s in sweepers))
            settled = results[:len(holds)]
            swept = [h for found in results[len(holds):] for h in found]
            by_sweep = {h.hold_id: h.amount for h in swept}
            assert len(by_sweep) == len(swept)  # no hold swept twice
            for (hold, cost, dead), charged in zip(holds, settled, strict=True):
                if charged is None:  # a sweeper took it: only a dead replica's hold, at its amount
                    assert dead and by_sweep[hold.hold_id] == hold.amount
                else:
                    assert hold.hold_id not in by_sweep and charged == min(cost, hold.amount)
            budget = json.loads((await kv.get("/governor/budgets/s")).value)
            left = await kv.get(f"{HOLDS}s")
            assert not left or json.loads(left.value)["holds"] == {}
            total = sum((c for c in settled if c is not None), Decimal(0)) + sum(by_sweep.values(), Decimal(0))
            assert Decimal(budget["spent"]) == total <= Decimal("1.0")

    asyncio.run(run())
