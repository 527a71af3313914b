"""The seed's synchronous ``track_cost`` on a governor that shares its store with others (replicas, the
model gateway's ledger): every charge lands in the stored total, none is written over.

Why: ``track_cost`` wrote this replica's cached budget record back blindly, so a charge another replica
(or the gateway, settling a model call) had stored in between was forgotten: two replicas charging 4 × 1.25
and 4 × 0.50 stored 2.00 or 5.00 instead of 7.00, and a budget the two exhausted together stayed open.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import KeyValueStore, open_kv
from infrafabric.governor import IFGovernor, SwarmProfile

BUDGET_KEY = "/governor/budgets/{}"
BREAKER_KEY = "/governor/breakers/{}"


@pytest.fixture(params=["memory", "sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[KeyValueStore, KeyValueStore]]:
    """Two replicas' clients of one store (memory: one client, as in one process)."""
    if request.param == "memory":
        async with open_kv(f"memory://governor-{uuid.uuid4().hex[:8]}") as kv:
            yield kv, kv
        return
    url = f"sqlite:///{tmp_path}/governor.db" if request.param == "sqlite" else \
        str(request.getfixturevalue("etcd_server").url)
    async with open_kv(url) as first, open_kv(url) as second:
        yield first, second


async def _stored(kv: KeyValueStore, key: str) -> dict[str, str]:
    found = await kv.get(key)
    assert found is not None, key
    return json.loads(found.value)


async def _replicas(stores: tuple[KeyValueStore, KeyValueStore], budget: float) -> tuple[str, IFGovernor, IFGovernor]:
    sid = f"sync-{uuid.uuid4().hex[:8]}"
    first = IFGovernor(kv=stores[0], audit=None, cost_sink=None)
    first.register_swarm(SwarmProfile(sid, ["code:python"], 1.0, 0.9, budget))
    await first.flush()
    second = IFGovernor(kv=stores[1], audit=None, cost_sink=None)
    assert await second.load() >= 1
    return sid, first, second


async def test_sync_charges_of_two_replicas_all_land_in_the_stored_total(two_stores) -> None:  # type: ignore[no-untyped-def]
    sid, first, second = await _replicas(two_stores, 10.0)
    for _ in range(4):  # interleaved, each queued behind the other's (a running loop: writes are queued)
        first.track_cost(sid, "llm", Decimal("1.25"))
        second.track_cost(sid, "llm", Decimal("0.50"))
    await asyncio.gather(first.flush(), second.flush())
    stored = await _stored(two_stores[0], BUDGET_KEY.format(sid))
    assert Decimal(stored["spent"]) == Decimal("7.00")
    third = IFGovernor(kv=two_stores[1], audit=None, cost_sink=None)
    await third.load()
    assert third.budget_remaining(sid) == Decimal("3.00")
    # a replica's view is the stored total as of its own last charge: the one stored last saw them all
    assert min(first.budget_remaining(sid), second.budget_remaining(sid)) == Decimal("3.00")
    for governor in (first, second, third):
        await governor.close()


async def test_charges_made_before_the_registration_is_stored_are_counted_once(two_stores) -> None:  # type: ignore[no-untyped-def]
    """The registration's create-if-absent write and the charges wait in one queue: the registration
    stores the budget as registered, each charge adds itself (a charge that changed the cached account in
    place made the queued registration store it too, and the stored total counted it twice)."""
    sid = f"early-{uuid.uuid4().hex[:8]}"
    governor = IFGovernor(kv=two_stores[0], audit=None, cost_sink=None)
    governor.register_swarm(SwarmProfile(sid, ["code:python"], 1.0, 0.9, 10.0))
    assert governor.track_cost(sid, "op", 0.1) == Decimal("9.9")
    assert governor.track_cost(sid, "op", 0.2) == Decimal("9.7")
    await governor.flush()
    stored = await _stored(two_stores[0], BUDGET_KEY.format(sid))
    assert (Decimal(stored["budget"]), Decimal(stored["spent"])) == (Decimal("10"), Decimal("0.3"))
    assert governor.budget_remaining(sid) == Decimal("9.7")
    await governor.close()


async def test_a_sync_charge_keeps_a_charge_the_shared_ledger_took_in_between(two_stores) -> None:  # type: ignore[no-untyped-def]
    """As the gateway settles model calls into the same record (``acharge`` is that compare-and-swap)."""
    sid, first, second = await _replicas(two_stores, 10.0)
    assert await first.acharge(sid, "model_call", Decimal("2.5")) == Decimal("7.5")
    second.track_cost(sid, "wasm-task", Decimal("0.25"))  # its cache still says 10 left
    await second.flush()
    stored = await _stored(two_stores[0], BUDGET_KEY.format(sid))
    assert Decimal(stored["spent"]) == Decimal("2.75") and Decimal(stored["budget"]) == Decimal("10")
    assert second.budget_remaining(sid) == Decimal("7.25")
    await first.close()
    await second.close()


async def test_a_budget_two_replicas_exhaust_together_trips_the_stored_breaker(two_stores) -> None:  # type: ignore[no-untyped-def]
    sid, first, second = await _replicas(two_stores, 1.0)
    await first.acharge(sid, "model_call", Decimal("0.7"))
    second.track_cost(sid, "llm", Decimal("0.5"))  # alone it leaves 0.5; with the other's, -0.2
    await second.flush()
    breaker = await _stored(two_stores[0], BREAKER_KEY.format(sid))
    assert breaker["state"] == "open" and breaker["reason"] == "budget_exhausted"
    assert second.circuit_breaker_status(sid)["state"] == "open"
    fresh = IFGovernor(kv=two_stores[1], audit=None, cost_sink=None)
    await fresh.load()
    assert not fresh.is_available(sid) and fresh.budget_remaining(sid) == Decimal("-0.2")
    for governor in (first, second, fresh):
        await governor.close()


DAMAGED_BUDGETS = [b'{"budget": "10", "spent": "not money"}', b'{"budget": "10", "spent": "-1"}',
                   b'{"budget": "NaN", "spent": "0"}', b'{"budget": "10", "spent": "Infinity"}',
                   b'{"budget": "10", "spent": "1e400"}', b'{"budget": true, "spent": "0"}', b'{"budget": "10"}',
                   b'{"spent": "0"}', b'{"budget": null, "spent": null}', b'null', b'[]', b'"10"', b'{"budget": "10",',
                   b'\xff\xfe', b'']


@pytest.mark.parametrize("damaged", DAMAGED_BUDGETS)
async def test_a_damaged_budget_record_is_left_as_evidence_and_the_swarm_fails_closed(two_stores, damaged: bytes) -> None:  # type: ignore[no-untyped-def]
    sid, first, second = await _replicas(two_stores, 10.0)
    await two_stores[0].put(BUDGET_KEY.format(sid), damaged)
    audit: list[tuple[str, dict[str, object]]] = []
    second._audit = lambda component, op, params, severity="INFO": audit.append((op, params))
    second.track_cost(sid, "llm", Decimal("1"))
    await second.flush()
    assert (await two_stores[0].get(BUDGET_KEY.format(sid))).value == damaged
    assert not second.is_available(sid) and second.budget_remaining(sid) == 0
    assert any(op == "governor_record_unreadable" and params["key"] == BUDGET_KEY.format(sid) for op, params in audit)
    assert second.load_problems and second.load_problems[-1][0] == BUDGET_KEY.format(sid)
    await first.close()
    await second.close()


def test_sync_charges_without_a_running_loop_are_stored_at_once(tmp_path: Path) -> None:
    """The seed's plain synchronous use (no event loop), two governors on one SQLite file."""
    url = f"sqlite:///{tmp_path}/plain.db"
    first, second = IFGovernor(kv=open_kv(url), audit=None, cost_sink=None), None
    first.register_swarm(SwarmProfile("plain-swarm", ["code:python"], 1.0, 0.9, 5.0))
    second = IFGovernor(kv=open_kv(url), audit=None, cost_sink=None)
    asyncio.run(second.load())
    assert first.track_cost("plain-swarm", "llm", 1.5) == Decimal("3.5")
    assert second.track_cost("plain-swarm", "llm", 1.0) == Decimal("2.5")  # the stored total, not its 4.0
    assert first.track_cost("plain-swarm", "llm", 0.5) == Decimal("2.0")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(charges=st.lists(st.tuples(st.booleans(), st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000"),
                                                             places=6)), min_size=1, max_size=30))
def test_any_interleaving_of_two_replicas_charges_sums_exactly(tmp_path: Path,
                                                               charges: list[tuple[bool, Decimal]]) -> None:
    async def scenario() -> None:
        url = f"sqlite:///{tmp_path}/replicas.db"  # one file, two clients (a fresh swarm per example)
        async with open_kv(url) as kv_a, open_kv(url) as kv_b:
            sid, first, second = await _replicas((kv_a, kv_b), 1e9)
            for on_first, amount in charges:
                (first if on_first else second).track_cost(sid, "op", amount)
            await asyncio.gather(first.flush(), second.flush())
            stored = await _stored(kv_a, BUDGET_KEY.format(sid))
            assert Decimal(stored["spent"]) == sum((a for _, a in charges), Decimal(0))
            await first.close()
            await second.close()

    asyncio.run(scenario())


async def test_a_reputation_update_keeps_a_re_registration_another_replica_stored(two_stores) -> None:  # type: ignore[no-untyped-def]
    """Only the reputation changes in the stored profile: a replica that has not seen an operator's
    re-registration yet no longer writes the swarm's old capabilities and price back."""
    sid, first, second = await _replicas(two_stores, 10.0)
    new_cap = f"code:rust-{sid[-8:]}"  # this test's own (other tests' swarms share the etcd)
    first.register_swarm(SwarmProfile(sid, ["code:python", new_cap], 3.0, 0.9, 10.0))  # the operator's change
    await first.flush()
    second.update_reputation(sid, 0.42)  # second still has the old profile
    await second.flush()
    stored = await _stored(two_stores[0], f"/swarms/{sid}/profile")
    assert stored["capabilities"] == ["code:python", new_cap] and stored["cost_per_hour"] == "3.0"
    assert stored["reputation_score"] == 0.42
    fresh = IFGovernor(kv=two_stores[1], audit=None, cost_sink=None)
    await fresh.load()
    assert fresh.reputation(sid) == 0.42 and fresh.find_qualified_swarm([new_cap], 5.0) == sid
    for governor in (first, second, fresh):
        await governor.close()


OTHER_PROFILE = json.dumps(SwarmProfile("someone-else", ["code:python"], 1.0, 0.9, 5.0).to_record()).encode()


@pytest.mark.parametrize("damaged", [b'{"swarm_id": 7}', b"null", b"[]", b"{", OTHER_PROFILE])
async def test_a_reputation_update_leaves_a_damaged_profile_as_evidence(two_stores, damaged: bytes) -> None:  # type: ignore[no-untyped-def]
    sid, first, second = await _replicas(two_stores, 10.0)
    await two_stores[0].put(f"/swarms/{sid}/profile", damaged)
    second.update_reputation(sid, 0.3)
    await second.flush()
    assert (await two_stores[0].get(f"/swarms/{sid}/profile")).value == damaged
    assert second.load_problems[-1][0] == f"/swarms/{sid}/profile" and second.reputation(sid) == 0.3
    await first.close()
    await second.close()


@pytest.mark.parametrize("charge_in_flight", [False, True])
async def test_an_operator_budget_after_a_queued_charge_is_what_the_replica_then_shows(
        two_stores, charge_in_flight: bool) -> None:  # type: ignore[no-untyped-def]
    """The charge's write and the operator's new budget wait in one queue: once both are stored, the replica
    shows the operator's budget (the charge's answer, arriving first, must not leave the old one shown)."""
    from infrafabric.coordinator.credentials import Identity

    operator = Identity("operator", "alice", "test-credential", 0, 2**31)
    sid, first, second = await _replicas(two_stores, 10.0)
    second.track_cost(sid, "llm", Decimal("4"))
    if charge_in_flight:
        await asyncio.sleep(0)  # the queue's writer has taken the charge and is reading the record
    second.set_budget(sid, 50.0, operator=operator)
    assert second.budget_remaining(sid) == Decimal("50")
    await second.flush()
    stored = await _stored(two_stores[0], BUDGET_KEY.format(sid))
    assert (Decimal(stored["budget"]), Decimal(stored["spent"])) == (Decimal("50"), Decimal("0"))
    assert second.budget_remaining(sid) == Decimal("50")
    second.track_cost(sid, "llm", Decimal("1"))
    await second.flush()
    assert second.budget_remaining(sid) == Decimal("49")
    await first.close()
    await second.close()
