"""IF.governor (seed 002 unit tests plus the issue's controls)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from infrafabric.coordinator.credentials import Identity
from infrafabric.errors import PermissionDeniedError
from hypothesis import given, settings
from hypothesis import strategies as st

from infrafabric.errors import (
    BudgetManipulationError,
    InvalidCapabilityError,
    InvalidCostError,
    InvalidPolicyError,
    UnknownSwarmError,
)
from infrafabric.governor import Capability, IFGovernor, ResourcePolicy, SwarmProfile, update_reputation


OPERATOR = Identity("operator", "alice", "test-credential", 0, 2**31)


def profile(swarm_id: str, caps: list, cost: float = 2.0, rep: float = 1.0, budget: float = 10.0) -> SwarmProfile:
    return SwarmProfile(swarm_id=swarm_id, capabilities=caps, cost_per_hour=cost, reputation_score=rep,
                        current_budget_remaining=budget)


@pytest.mark.critical
def test_capability_matching_70_percent() -> None:
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy(min_capability_match=0.7))
    governor.register_swarm(SwarmProfile(
        swarm_id="session-1-ndi",
        capabilities=[Capability.INTEGRATION_NDI, Capability.CODE_ANALYSIS_PYTHON],
        cost_per_hour=2.0, reputation_score=0.9, current_budget_remaining=10.0,
    ))
    swarm = governor.find_qualified_swarm(
        required_capabilities=[Capability.INTEGRATION_NDI, Capability.INTEGRATION_WEBRTC], max_cost=5.0)
    assert swarm is None, "Should reject 50% capability match"
    swarm = governor.find_qualified_swarm(
        required_capabilities=[Capability.INTEGRATION_NDI, Capability.CODE_ANALYSIS_PYTHON], max_cost=5.0)
    assert swarm == "session-1-ndi", "Should accept 100% capability match"


def test_match_threshold_is_inclusive_and_counts_coverage() -> None:
    governor = IFGovernor(policy=ResourcePolicy(min_capability_match=0.75))
    governor.register_swarm(profile("three-of-four", ["a", "b", "c"]))
    assert governor.find_qualified_swarm(["a", "b", "c", "d"], 5) == "three-of-four"
    assert governor.find_qualified_swarm(["a", "b", "x", "y"], 5) is None


@pytest.mark.critical
def test_circuit_breaker_on_budget_exhausted() -> None:
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy(max_cost_per_task=10.0))
    p = SwarmProfile(swarm_id="swarm-expensive", capabilities=[Capability.CODE_ANALYSIS_RUST],
                     cost_per_hour=20.0, reputation_score=1.0, current_budget_remaining=5.0)
    governor.register_swarm(p)
    governor.track_cost("swarm-expensive", "operation-1", 5.0)
    assert p.current_budget_remaining == 0.0
    assert p.budget_remaining_exact == Decimal("0")
    assert governor.circuit_breaker_status("swarm-expensive")["state"] == "open"
    swarm = governor.find_qualified_swarm(required_capabilities=[Capability.CODE_ANALYSIS_RUST], max_cost=100.0)
    assert swarm is None, "Circuit breaker did not trip!"


def test_max_swarms_per_task_enforcement() -> None:
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy(max_swarms_per_task=3))
    for i in range(10):
        governor.register_swarm(profile(f"swarm-{i}", [Capability.CODE_ANALYSIS_PYTHON]))
    assigned = asyncio.run(governor.request_help_for_blocker(
        blocked_swarm_id="session-4-sip",
        blocker_description={"required_capabilities": ["code-analysis:python"]}))
    assert 1 <= len(assigned) <= 3, f"Too many swarms assigned: {len(assigned)}"


async def test_team_never_exceeds_max_swarms_with_many_capabilities() -> None:
    governor = IFGovernor(policy=ResourcePolicy(max_swarms_per_task=2, max_cost_per_task=100,
                                                min_capability_match=0.5))
    for i, cap in enumerate("abcd"):
        governor.register_swarm(profile(f"s-{cap}", [cap]))
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": list("abcd")})
    assert team == ["s-a", "s-b"]


def test_reputation_based_selection() -> None:
    governor = IFGovernor(coordinator=None, policy=ResourcePolicy())
    governor.register_swarm(profile("swarm-low-rep", [Capability.CODE_ANALYSIS_RUST], rep=0.5))
    governor.register_swarm(profile("swarm-high-rep", [Capability.CODE_ANALYSIS_RUST], rep=0.95))
    selected = governor.find_qualified_swarm(required_capabilities=[Capability.CODE_ANALYSIS_RUST], max_cost=5.0)
    assert selected == "swarm-high-rep", "Failed to prioritize high-reputation swarm"
    governor.update_reputation("swarm-high-rep", 0.1)
    assert governor.find_qualified_swarm([Capability.CODE_ANALYSIS_RUST], 5.0) == "swarm-low-rep"


def test_cheaper_swarm_wins_at_equal_reputation_and_max_cost_filters() -> None:
    governor = IFGovernor()
    governor.register_swarm(profile("sonnet", ["code:rust"], cost=15.0))
    governor.register_swarm(profile("haiku", ["code:rust"], cost=1.5))
    assert governor.find_qualified_swarm(["code:rust"], 20) == "haiku"
    governor.track_cost("haiku", "run", 10)
    assert governor.find_qualified_swarm(["code:rust"], 20) == "sonnet"
    assert governor.find_qualified_swarm(["code:rust"], 10) is None


def test_capability_is_an_open_vocabulary() -> None:
    assert Capability("cap-1") == "cap-1"
    assert Capability.INTEGRATION_NDI == "integration:ndi" == Capability("integration:ndi")
    assert Capability.CONTRACT_REVIEW_NDA.value == "contract-review:nda"
    assert hash(Capability("x:y")) == hash("x:y")
    for bad in ["", "has space", "semi;colon", "a:", ":a", "x" * 200, None, 5, "a\nb"]:
        with pytest.raises(InvalidCapabilityError):
            Capability(bad)


def test_budget_is_exact_over_a_million_charges() -> None:
    governor = IFGovernor(audit=None, cost_sink=None)  # the ledger alone: a million audited records would take minutes
    p = profile("s", ["c"], budget=1.0)
    governor.register_swarm(p)
    for _ in range(1_000_000 - 1):
        governor.track_cost("s", "tick", 0.000001)
    assert p.budget_remaining_exact == Decimal("0.000001")
    assert governor.circuit_breaker_status("s")["state"] == "closed"
    governor.track_cost("s", "tick", 0.000001)
    assert p.budget_remaining_exact == 0 and p.current_budget_remaining == 0.0
    assert governor.circuit_breaker_status("s")["state"] == "open"
    float_total = 1.0
    for _ in range(1000):
        float_total -= 0.001
    assert float_total != 0.0  # what the ledger avoids


def test_budget_cannot_be_set_through_the_profile() -> None:
    governor = IFGovernor()
    p = profile("swarm-test", [], budget=10.0)
    governor.register_swarm(p)
    with pytest.raises(BudgetManipulationError):
        p.current_budget_remaining = 1_000_000.0
    with pytest.raises(AttributeError):
        p.reputation_score = 1.0
    with pytest.raises(AttributeError):
        p._budget_override = 5  # no __dict__: no side door either
    assert p.current_budget_remaining == 10.0


@pytest.mark.parametrize("bad", [-1, -0.01, float("nan"), float("inf"), "abc", None, True, [1]])
def test_bad_costs_are_refused_and_change_nothing(bad: object) -> None:
    governor = IFGovernor()
    p = profile("s", ["c"], budget=10.0)
    governor.register_swarm(p)
    with pytest.raises(ValueError):
        governor.track_cost("s", "op", bad)  # type: ignore[arg-type]
    assert p.budget_remaining_exact == Decimal("10.0")
    assert governor.budget_spent("s") == 0


def test_unknown_swarm_is_a_clear_error() -> None:
    governor = IFGovernor()
    with pytest.raises(UnknownSwarmError) as info:
        governor.track_cost("ghost", "op", 1.0)
    assert info.value.error_code == "IF_ERR_UNKNOWN_SWARM"
    with pytest.raises(UnknownSwarmError):
        governor.update_reputation("ghost", 0.5)
    with pytest.raises(UnknownSwarmError):
        governor.reset_circuit_breaker("ghost", operator=OPERATOR)


def test_bad_profiles_and_queries_are_refused() -> None:
    with pytest.raises(ValueError):
        profile("bad id!", [])
    with pytest.raises(InvalidCostError):
        profile("s", [], cost=-2)
    with pytest.raises(ValueError):
        profile("s", [], rep=1.5)
    with pytest.raises(InvalidCapabilityError):
        profile("s", ["no spaces allowed"])
    governor = IFGovernor()
    with pytest.raises(InvalidCapabilityError):
        governor.find_qualified_swarm(["bad cap"], 5)
    with pytest.raises(ValueError):
        governor.find_qualified_swarm([], 5)
    with pytest.raises(InvalidCostError):
        governor.find_qualified_swarm(["a"], -1)


def test_consecutive_failures_trip_and_success_resets_the_count() -> None:
    governor = IFGovernor(policy=ResourcePolicy(circuit_breaker_failure_threshold=3))
    governor.register_swarm(profile("flaky", ["c"]))
    governor.record_task_result("flaky", False)
    governor.record_task_result("flaky", False)
    governor.record_task_result("flaky", True)
    governor.record_task_result("flaky", False)
    governor.record_task_result("flaky", False)
    assert governor.circuit_breaker_status("flaky")["state"] == "closed"
    governor.record_task_result("flaky", False)
    status = governor.circuit_breaker_status("flaky")
    assert status["state"] == "open" and status["reason"] == "consecutive_failures"
    assert governor.find_qualified_swarm(["c"], 5) is None


def test_reset_is_an_explicit_operator_action() -> None:
    governor = IFGovernor()
    p = profile("s", ["c"], budget=1.0)
    governor.register_swarm(p)
    governor.track_cost("s", "op", 1.5)
    assert p.budget_remaining_exact == Decimal("-0.5")  # the overrun is recorded, not hidden
    for forged in ("", "alice", Identity("swarm", "s", "j", 0, 2**31)):
        with pytest.raises(PermissionDeniedError):  # a name is not an identity, nor is a swarm's credential
            governor.reset_circuit_breaker("s", operator=forged)
    assert governor.find_qualified_swarm(["c"], 5) is None
    governor.reset_circuit_breaker("s", operator=OPERATOR, new_budget=3.0, reason="approved")
    assert governor.circuit_breaker_status("s")["state"] == "closed"
    assert p.budget_remaining_exact == Decimal("3.0")
    assert governor.find_qualified_swarm(["c"], 5) == "s"


async def test_help_never_includes_the_blocked_swarm() -> None:
    governor = IFGovernor()
    governor.register_swarm(profile("blocked", ["sip", "ndi"], cost=0.5))
    governor.register_swarm(profile("helper", ["ndi"], cost=2.0))
    team = await governor.request_help_for_blocker("blocked", {"required_capabilities": ["sip", "ndi"]})
    assert team == ["helper"]


async def test_help_escalates_when_coverage_is_too_low() -> None:
    calls: list[tuple[str, str]] = []
    governor = IFGovernor(audit=lambda c, op, params, sev: calls.append((op, sev)))
    governor.register_swarm(profile("legal", [Capability.CONTRACT_REVIEW_NDA]))
    team = await governor.request_help_for_blocker("rusty", {"required_capabilities": ["code-analysis:rust"]})
    assert team == []
    assert ("blocker_escalated", "HIGH") in calls


async def test_helpers_stay_inside_the_task_budget() -> None:
    governor = IFGovernor(policy=ResourcePolicy(max_cost_per_task=10.0, min_capability_match=0.5))
    governor.register_swarm(profile("pricey-ndi", ["ndi"], cost=6.0, rep=1.0))
    governor.register_swarm(profile("cheap-ndi", ["ndi"], cost=4.0, rep=0.2))
    governor.register_swarm(profile("webrtc", ["webrtc"], cost=5.0))
    team = await governor.request_help_for_blocker("b", {"required_capabilities": ["ndi", "webrtc"]})
    assert team == ["cheap-ndi", "webrtc"]  # share per capability is 5.0: pricey-ndi does not fit
    (request_id, shares), = governor.task_budgets.items()
    assert sum(shares.values()) <= Decimal("10.0")


def test_module_update_reputation_reaches_live_governors() -> None:
    g1, g2 = IFGovernor(), IFGovernor()
    g1.register_swarm(profile("shared", ["c"], rep=1.0))
    assert update_reputation("shared", 0.4) == 1
    assert g1.swarm_registry["shared"].reputation_score == 0.4
    assert update_reputation("unknown-to-all", 0.4) == 0
    with pytest.raises(ValueError):
        update_reputation("shared", 7)
    del g2


def test_policy_defaults_yaml_and_validation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    default = ResourcePolicy()
    assert (default.max_swarms_per_task, default.max_cost_per_task, default.min_capability_match,
            default.circuit_breaker_failure_threshold) == (3, 10.0, 0.7, 3)
    path = tmp_path / "policy.yaml"
    path.write_text("resource_policy:\n  max_swarms_per_task: 5\n  max_cost_per_task: 25.5\n"
                    "  min_capability_match: 0.8\n  circuit_breaker_failure_threshold: 2\n")
    loaded = ResourcePolicy.from_yaml(path)
    assert (loaded.max_swarms_per_task, loaded.max_cost_per_task, loaded.min_capability_match,
            loaded.circuit_breaker_failure_threshold) == (5, 25.5, 0.8, 2)
    for bad in ({"max_swarms_per_task": 0}, {"min_capability_match": 1.5}, {"max_cost_per_task": -1},
                {"circuit_breaker_failure_threshold": 0}, {"surprise": 1}):
        with pytest.raises(InvalidPolicyError):
            ResourcePolicy.from_dict(bad)
    with pytest.raises(InvalidPolicyError):
        ResourcePolicy.from_yaml("resource_policy: [1, 2\n")


def _reference_best(profiles: list[SwarmProfile], required: list[str], max_cost: float, min_match: float,
                    spent: dict[str, float]) -> str | None:
    """Brute force over every swarm: the definition find_qualified_swarm must agree with."""
    best: tuple[float, str] | None = None
    for p in profiles:
        match = len(set(p.capabilities) & set(required)) / len(set(required))
        if match < min_match or p.cost_per_hour > max_cost or p.initial_budget - Decimal(str(spent[p.swarm_id])) <= 0:
            continue
        score = match * p.reputation_score / max(p.cost_per_hour, 1e-9)
        if best is None or (-score, p.swarm_id) < (-best[0], best[1]):
            best = (score, p.swarm_id)
    return best[1] if best else None


@settings(max_examples=150, deadline=None)
@given(
    swarms=st.lists(
        st.tuples(
            st.sets(st.sampled_from("abcdef"), max_size=4),
            st.sampled_from([0.5, 1.0, 2.0, 4.0]),
            st.sampled_from([0.3, 0.6, 0.9, 1.0]),
            st.sampled_from([0.0, 1.0, 5.0]),
        ),
        min_size=1, max_size=12,
    ),
    required=st.lists(st.sampled_from("abcdef"), min_size=1, max_size=4, unique=True),
    max_cost=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    min_match=st.sampled_from([0.3, 0.5, 0.7, 1.0]),
)
def test_index_agrees_with_brute_force(swarms, required, max_cost, min_match) -> None:  # type: ignore[no-untyped-def]
    governor = IFGovernor(policy=ResourcePolicy(min_capability_match=min_match), audit=None, cost_sink=None)
    profiles, spent = [], {}
    for i, (caps, cost, rep, charge) in enumerate(swarms):
        p = profile(f"s{i:02d}", sorted(caps), cost=cost, rep=rep, budget=5.0)
        governor.register_swarm(p)
        profiles.append(p)
        spent[p.swarm_id] = charge
        if charge:
            governor.track_cost(p.swarm_id, "op", charge)
    expected = _reference_best(profiles, required, max_cost, min_match, spent)
    assert governor.find_qualified_swarm(required, max_cost) == expected
