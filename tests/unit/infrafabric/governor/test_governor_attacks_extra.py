"""Extra attacks on IF.governor: hostile amounts, replicas sharing one embedded store (memory://), corrupted
ledger records field by field, operator identities that are not what they claim, and the help team's limits
when helpers fail."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import CircuitOpenError, InfraFabricError, PermissionDeniedError
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile
from infrafabric.governor.aio import AsyncGovernor

OPERATOR = Identity("operator", "alice", "cred-alice", 0, 2**31)


def _profile(swarm_id: str, caps: list[str] | None = None, cost: float = 1.0, budget: float = 10.0) -> SwarmProfile:
    return SwarmProfile(swarm_id, caps or ["code:python"], cost, 1.0, budget)


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str]] = []

    def __call__(self, component: str, operation: str, params: dict[str, Any], severity: str = "INFO") -> None:
        self.events.append((operation, params, severity))

    def ops(self) -> list[str]:
        return [op for op, _, _ in self.events]


# ------------------------------------------------------------------------------------------ hostile amounts
HOSTILE = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -0.01, "-0.01", "abc", "", "NaN", "sNaN",
                     "Infinity", "-Infinity", "1e", "0x10", None, True, False, [1], {"a": 1}, b"5",
                     Decimal("NaN"), Decimal("-1"), Decimal("sNaN"), Decimal("-Infinity")]),
    st.floats(max_value=-1e-9) | st.floats(allow_nan=True).filter(lambda f: f != f),
    st.text(alphabet="abcxyz!@ ", min_size=1, max_size=6),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=HOSTILE)
async def test_hostile_amounts_are_refused_by_every_money_entry_point_and_change_nothing(bad: object) -> None:
    async with open_kv("memory://") as kv:
        governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
        governor.register_swarm(_profile("money"))
        before = (await kv.get("/governor/budgets/money")).value  # type: ignore[union-attr]
        calls = {
            "track_cost": lambda: governor.track_cost("money", "op", bad),  # type: ignore[arg-type]
            "set_budget": lambda: governor.set_budget("money", bad, operator=OPERATOR),  # type: ignore[arg-type]
            "reset": lambda: governor.reset_circuit_breaker("money", operator=OPERATOR, new_budget=bad),  # type: ignore[arg-type]
            "find": lambda: governor.find_qualified_swarm(["code:python"], bad),  # type: ignore[arg-type]
        }
        for name, call in calls.items():
            if name == "reset" and bad is None:
                continue  # new_budget=None means "keep the budget"
            with pytest.raises(ValueError):
                call()
        with pytest.raises(ValueError):
            await governor.acharge("money", "op", bad)  # type: ignore[arg-type]
        assert (await kv.get("/governor/budgets/money")).value == before  # type: ignore[union-attr]
        assert governor.budget_remaining("money") == Decimal("10.0") and governor.budget_spent("money") == 0
        assert governor.circuit_breaker_status("money")["state"] == "closed"
        await governor.close()


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1, "0.5", True, None, float("inf")])
def test_hostile_reputations_are_refused(bad: object) -> None:
    governor = IFGovernor(audit=None, cost_sink=None)
    governor.register_swarm(_profile("rep"))
    with pytest.raises(ValueError):
        governor.update_reputation("rep", bad)  # type: ignore[arg-type]
    assert governor.reputation("rep") == 1.0


def test_an_absurdly_large_budget_is_refused_or_harmless() -> None:
    governor = IFGovernor(audit=None, cost_sink=None)
    governor.register_swarm(_profile("huge", cost=0.5))  # cheaper: ranked first
    governor.register_swarm(_profile("normal", cost=1.0))
    try:
        governor.set_budget("huge", "1E+1000000", operator=OPERATOR)  # type: ignore[arg-type]
    except ValueError:
        pass  # refused: fine
    assert governor.find_qualified_swarm(["code:python"], 5) in ("huge", "normal")
    assert governor.budget_remaining("normal") == Decimal("10.0")


def test_a_charge_is_recorded_exactly_or_refused() -> None:
    governor = IFGovernor(audit=None, cost_sink=None)
    governor.register_swarm(_profile("exact"))
    cost = "0.99999999999999999999999999999"  # 29 significant digits
    try:
        governor.track_cost("exact", "op", cost)  # type: ignore[arg-type]
    except ValueError:
        return
    assert governor.budget_spent("exact") == Decimal(cost)


# ------------------------------------------------------------------------------------------ replicas
async def test_two_async_replicas_charging_concurrently_never_overspend() -> None:
    async with open_kv("memory://") as kv:
        a = AsyncGovernor(kv=kv, audit=None, cost_sink=None)
        b = AsyncGovernor(kv=kv, audit=None, cost_sink=None)
        await a.register_swarm(_profile("shared", budget=10.0))
        assert await b.load() == 1

        async def charge(replica: AsyncGovernor) -> bool:
            try:
                await replica.track_cost("shared", "op", "1")
                return True
            except CircuitOpenError:
                return False

        outcomes = await asyncio.gather(*(charge(a if i % 2 else b) for i in range(40)))
        stored = json.loads((await kv.get("/governor/budgets/shared")).value)  # type: ignore[union-attr]
        assert sum(outcomes) == 10, "more charges passed than the budget holds"
        assert Decimal(stored["spent"]) == Decimal(10) and Decimal(stored["budget"]) == Decimal(10)
        breaker = json.loads((await kv.get("/governor/breakers/shared")).value)  # type: ignore[union-attr]
        assert breaker["state"] == "open" and breaker["reason"] == "budget_exhausted"
        await a.close()
        await b.close()


async def test_a_stale_replica_cannot_close_a_breaker_another_replica_tripped() -> None:
    async with open_kv("memory://") as kv:
        a = IFGovernor(kv=kv, audit=None, cost_sink=None)
        a.register_swarm(_profile("tripped", budget=10.0))
        b = IFGovernor(kv=kv, audit=None, cost_sink=None)
        await b.load()
        await a.acharge("tripped", "op", "10")  # budget spent: breaker open in the store
        b.record_task_result("tripped", True)  # a successful task reported to the other replica
        with pytest.raises(CircuitOpenError):
            await a.acharge("tripped", "op", "5")
        assert a.budget_remaining("tripped") >= 0
        await a.close()
        await b.close()


async def test_re_registering_a_swarm_does_not_refill_its_budget() -> None:
    async with open_kv("memory://") as kv:
        audit = Audit()
        a = IFGovernor(kv=kv, audit=None, cost_sink=None)
        a.register_swarm(_profile("refill", budget=10.0))
        b = IFGovernor(kv=kv, audit=audit, cost_sink=None)
        await b.load()
        await a.acharge("refill", "op", "9")
        b.register_swarm(_profile("refill", budget=10.0))  # e.g. a second `governor register`
        spent = Decimal(json.loads((await kv.get("/governor/budgets/refill")).value)["spent"])  # type: ignore[union-attr]
        assert spent == Decimal(9), "the charges already made were erased from the shared ledger"
        await a.close()
        await b.close()


async def test_a_corrupted_budget_record_arriving_by_watch_fails_closed_and_is_reported() -> None:
    async with open_kv("memory://") as kv:
        writer = IFGovernor(kv=kv, audit=None, cost_sink=None)
        writer.register_swarm(_profile("watched"))
        audit = Audit()
        follower = IFGovernor(kv=kv, audit=audit, cost_sink=None)
        await follower.follow()
        assert follower.circuit_breaker_status("watched")["state"] == "closed"
        await kv.put("/governor/budgets/watched", b'{"budget":"NaN","spent":"0"}')
        for _ in range(200):  # wait for the watch event to be applied (bounded)
            if follower.load_problems:
                break
            await asyncio.sleep(0.01)
        assert [k for k, _ in follower.load_problems] == ["/governor/budgets/watched"]
        assert follower.circuit_breaker_status("watched")["state"] == "open"
        assert "governor_record_unreadable" in audit.ops()
        await follower.close()
        await writer.close()


# ------------------------------------------------------------------------------------------ corrupted records
async def _seeded(kv: Any) -> None:
    governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
    governor.register_swarm(_profile("victim"))
    governor.track_cost("victim", "op", 1)
    await governor.close()


@pytest.mark.parametrize("budget_record", [
    {"budget": "10", "spent": "-5"}, {"budget": "-10", "spent": "0"}, {"budget": "Infinity", "spent": "0"},
    {"budget": "10"}, {"spent": "0"}, {"budget": 10.5, "spent": [1]}, {"budget": "10", "spent": None},
    ["10", "0"], "10",
])
async def test_a_corrupted_budget_record_field_by_field_loads_closed_and_reported(budget_record: Any) -> None:
    async with open_kv("memory://") as kv:
        await _seeded(kv)
        await kv.put("/governor/budgets/victim", json.dumps(budget_record))
        governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
        await governor.load()
        assert [k for k, _ in governor.load_problems] == ["/governor/budgets/victim"]
        assert governor.circuit_breaker_status("victim")["state"] == "open"
        with pytest.raises(CircuitOpenError):
            await governor.acharge("victim", "op", "0.01")
        await governor.close()


@pytest.mark.parametrize("key", ["/governor/budgets/victim", "/governor/breakers/victim"])
async def test_a_null_ledger_record_fails_closed_on_load(key: str) -> None:
    async with open_kv("memory://") as kv:
        await _seeded(kv)
        a = IFGovernor(kv=kv, audit=None, cost_sink=None)
        await a.load()
        await a.acharge("victim", "op", "9")  # spent 10 of 10: breaker open
        await a.close()
        await kv.put(key, b"null")
        governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
        await governor.load()
        assert [k for k, _ in governor.load_problems] == [key]
        assert governor.circuit_breaker_status("victim")["state"] == "open"
        assert governor.budget_remaining("victim") <= 0
        await governor.close()


@pytest.mark.parametrize("field, value", [("consecutive_failures", "x"), ("consecutive_failures", -1000),
                                          ("consecutive_failures", None), ("tripped_at", "yesterday")])
async def test_a_corrupted_breaker_field_is_reported(field: str, value: Any) -> None:
    async with open_kv("memory://") as kv:
        await _seeded(kv)
        record = {"state": "closed", "reason": None, "consecutive_failures": 0, "tripped_at": None, field: value}
        await kv.put("/governor/breakers/victim", json.dumps(record))
        governor = IFGovernor(kv=kv, audit=None, cost_sink=None, policy=ResourcePolicy(
            circuit_breaker_failure_threshold=3))
        await governor.load()
        assert [k for k, _ in governor.load_problems] == ["/governor/breakers/victim"]
        assert governor.circuit_breaker_status("victim")["state"] == "open"
        await governor.close()


async def test_a_damaged_breaker_record_is_reported_under_its_own_key() -> None:
    async with open_kv("memory://") as kv:
        await _seeded(kv)
        await kv.put("/governor/breakers/victim", b"\xff not json")
        governor = IFGovernor(kv=kv, audit=None, cost_sink=None)
        await governor.load()
        assert governor.circuit_breaker_status("victim")["state"] == "open"  # fails closed (holds)
        assert [k for k, _ in governor.load_problems] == ["/governor/breakers/victim"]
        await governor.close()


# ------------------------------------------------------------------------------------------ operator identity
class LooksLikeAnOperator:
    role = "operator"
    name = "mallory"
    jti = "forged"
    issued_ms = 0
    expires_at = 2**31


@pytest.mark.parametrize("who", ["alice", "operator", b"operator", {"role": "operator", "name": "x"},
                                 LooksLikeAnOperator(), Identity("swarm", "victim", "j", 0, 2**31),
                                 Identity("Operator", "x", "j", 0, 2**31), Identity("operator ", "x", "j", 0, 2**31),
                                 None])
async def test_operator_actions_refuse_anything_but_an_operator_identity(who: Any) -> None:
    async with open_kv("memory://") as kv:
        audit = Audit()
        governor = AsyncGovernor(kv=kv, audit=audit, cost_sink=None)
        await governor.register_swarm(_profile("victim", budget=1.0))
        await governor.track_cost("victim", "op", "1")  # breaker open
        before = {k.key: k.value for k in await kv.get_prefix("/governor/")}
        with pytest.raises(PermissionDeniedError):
            await governor.set_budget("victim", 1000.0, operator=who)
        with pytest.raises(PermissionDeniedError):
            await governor.reset_circuit_breaker("victim", operator=who, new_budget=1000.0)
        assert {k.key: k.value for k in await kv.get_prefix("/governor/")} == before
        assert governor.circuit_breaker_status("victim")["state"] == "open"
        assert not {"budget_set", "circuit_breaker_reset"} & set(audit.ops())
        await governor.close()


async def test_every_operator_change_is_audited_with_who_made_it() -> None:
    audit = Audit()
    governor = AsyncGovernor(audit=audit, cost_sink=None)
    await governor.register_swarm(_profile("audited", budget=1.0))
    await governor.set_budget("audited", 5.0, operator=OPERATOR)
    await governor.reset_circuit_breaker("audited", operator=OPERATOR, new_budget=7.0, reason="ticket-1")
    changes = [(op, p) for op, p, _ in audit.events if op in ("budget_set", "circuit_breaker_reset")]
    assert [op for op, _ in changes] == ["budget_set", "circuit_breaker_reset"]
    assert all(p["operator"] == "alice" and p["credential"] == "cred-alice" for _, p in changes)
    assert governor.budget_remaining("audited") == Decimal("7.0")
    await governor.close()


def test_an_expired_operator_identity_is_refused() -> None:
    governor = IFGovernor(audit=None, cost_sink=None)
    governor.register_swarm(_profile("victim"))
    stale = Identity("operator", "mallory", "", 0, 1)  # expired in 1970
    with pytest.raises(PermissionDeniedError):
        governor.set_budget("victim", 1_000_000.0, operator=stale)


# ------------------------------------------------------------------------------------------ blocker help team
class _Bus:
    async def publish(self, subject: str, data: bytes) -> None:
        return None


class _Coordinator:
    """Just what the governor uses of a coordinator: pushes (one helper is hung) and the escalation bus."""

    kv = None
    bus = _Bus()

    def __init__(self, hung: set[str]) -> None:
        self.hung, self.pushed = hung, []

    async def push_task_to_swarm(self, helper: str, task: dict[str, Any]) -> None:
        if helper in self.hung:
            raise InfraFabricError("push timed out")
        self.pushed.append(helper)


async def test_replacing_a_failed_helper_never_exceeds_max_swarms_per_task() -> None:
    coordinator = _Coordinator(hung={"all-rounder"})
    governor = IFGovernor(coordinator, ResourcePolicy(max_swarms_per_task=1, max_cost_per_task=10.0,  # type: ignore[arg-type]
                                                      min_capability_match=0.5), audit=None, cost_sink=None)
    governor.register_swarm(_profile("all-rounder", ["cap-a", "cap-b"], cost=1.0))
    governor.register_swarm(_profile("only-a", ["cap-a"], cost=2.0))
    governor.register_swarm(_profile("only-b", ["cap-b"], cost=2.0))
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": ["cap-a", "cap-b"]})
    assert 1 <= len(team) <= 1, team
    assert len(coordinator.pushed) <= 1, coordinator.pushed
    (shares,) = governor.task_budgets.values()
    assert set(shares) == set(team)


async def test_a_help_team_never_contains_the_blocked_swarm_or_a_tripped_helper() -> None:
    governor = IFGovernor(policy=ResourcePolicy(min_capability_match=0.5), audit=None, cost_sink=None)
    for name in ("blocked", "tripped", "broke", "good"):
        governor.register_swarm(_profile(name, ["cap-x"], cost=0.5 if name != "good" else 1.0))
    for _ in range(3):
        governor.record_task_result("tripped", False)
    governor.track_cost("broke", "op", 10)
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": ["cap-x"]})
    assert team == ["good"]


class _RecordingBus:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, subject: str, data: bytes) -> None:
        self.events.append((subject, json.loads(data)))


async def test_a_team_left_below_the_coverage_policy_by_unreachable_helpers_is_escalated() -> None:
    """The team was checked against min_capability_match before the pushes, never after: with the only
    cap-b helper hung and no one to replace it, the blocked swarm got half the help it needs, silently."""
    coordinator = _Coordinator(hung={"only-b"})
    coordinator.bus = _RecordingBus()  # type: ignore[assignment]
    audit: list[tuple[str, dict[str, Any]]] = []
    governor = IFGovernor(coordinator, ResourcePolicy(min_capability_match=1.0),  # type: ignore[arg-type]
                          audit=lambda component, op, params, severity="INFO": audit.append((op, params)),
                          cost_sink=None)
    governor.register_swarm(_profile("only-a", ["cap-a"], cost=1.0))
    governor.register_swarm(_profile("only-b", ["cap-b"], cost=1.0))
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": ["cap-a", "cap-b"]})
    assert team == ["only-a"] and coordinator.pushed == ["only-a"]  # it has its task: it helps with what it can
    escalations = [event for subject, event in coordinator.bus.events if subject == "if.events.escalation"]
    assert len(escalations) == 1 and "coverage 50%" in escalations[0]["reason"], coordinator.bus.events
    assert any(op == "blocker_escalated" for op, _ in audit)


async def test_a_team_still_within_the_coverage_policy_after_a_failed_push_is_not_escalated() -> None:
    coordinator = _Coordinator(hung={"only-b"})
    coordinator.bus = _RecordingBus()  # type: ignore[assignment]
    governor = IFGovernor(coordinator, ResourcePolicy(min_capability_match=0.5),  # type: ignore[arg-type]
                          audit=None, cost_sink=None)
    governor.register_swarm(_profile("only-a", ["cap-a"], cost=1.0))
    governor.register_swarm(_profile("only-b", ["cap-b"], cost=1.0))
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": ["cap-a", "cap-b"]})
    assert team == ["only-a"] and not coordinator.bus.events
