"""The governor's stored state, damaged by anyone with write access to the store: it still starts.

One malformed profile used to make ``governor.load()`` raise, so ``coordinator serve`` could not restart.
Now every record is read on its own: a damaged profile is reported and left out, and a swarm whose budget
or breaker record is damaged starts with its breaker open and no budget (fail closed: an unreadable ledger
must not turn into a fresh budget). Every unreadable record is audited."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.governor import IFGovernor, SwarmProfile

pytestmark = pytest.mark.security

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                       max_leaves=8)
RAW = st.one_of(JSONISH.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40),
                st.just(b"[" * 5000 + b"]" * 5000))
KINDS = ["/swarms/{}/profile", "/governor/budgets/{}", "/governor/breakers/{}"]


async def _seed(kv: Any) -> None:
    governor = IFGovernor(kv=kv, audit=None)
    for name in ("honest", "victim"):
        governor.register_swarm(SwarmProfile(name, ["code:python"], 1.0, 1.0, 10.0))
    governor.track_cost("victim", "op", 2.5)
    await governor.close()


@pytest.mark.parametrize("kind", KINDS, ids=["profile", "budget", "breaker"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=RAW)
async def test_any_damaged_record_is_reported_and_the_rest_loads(kind: str, value: bytes) -> None:
    kv = open_kv("memory://")
    async with kv:
        await _seed(kv)
        await kv.put(kind.format("victim"), value)
        audited: list[tuple[str, dict[str, Any]]] = []
        governor = IFGovernor(kv=kv, audit=lambda component, op, params, severity="INFO": audited.append((op, params)))
        loaded = await governor.load()
        assert "honest" in governor.swarm_registry  # the undamaged swarm is untouched
        assert governor.budget_remaining("honest") == 10
        if governor.load_problems:
            assert ("governor_record_unreadable", ) == tuple({op for op, _ in audited if "unreadable" in op})
            if "victim" in governor.swarm_registry:  # its ledger was the damaged part: closed for spending
                assert governor.circuit_breaker_status("victim")["state"] == "open"
                assert governor.budget_remaining("victim") == 0
        else:  # the value happened to be a well-formed record of that kind: it loads as what it says
            assert loaded >= 1
        await governor.close()


async def test_a_profile_filed_under_another_swarms_key_is_refused() -> None:
    kv = open_kv("memory://")
    async with kv:
        await _seed(kv)
        record = json.loads((await kv.get("/swarms/honest/profile")).value)  # type: ignore[union-attr]
        await kv.put("/swarms/victim/profile", json.dumps({**record, "reputation_score": 1.0}))
        governor = IFGovernor(kv=kv, audit=None)
        await governor.load()
        assert [k for k, _ in governor.load_problems] == ["/swarms/victim/profile"]
        assert "victim" not in governor.swarm_registry
        await governor.close()
