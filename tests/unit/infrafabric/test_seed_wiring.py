"""The seeds' implicit wiring (``infrafabric.seed_wiring``): governors join the live registry when built and
leave it when closed or collected; a reputation reaches exactly the live governors that know the swarm."""

from __future__ import annotations

import gc

import pytest

from infrafabric import seed_wiring
from infrafabric.governor import IFGovernor, SwarmProfile


def _knows(governor: IFGovernor, swarm: str) -> IFGovernor:
    governor.register_swarm(SwarmProfile(swarm, ["c"], 1.0, 1.0, 10.0))
    return governor


async def test_closed_and_collected_governors_hear_nothing() -> None:
    kept, closed, dropped = _knows(IFGovernor(), "s"), _knows(IFGovernor(), "s"), _knows(IFGovernor(), "s")
    await closed.close()
    del dropped
    gc.collect()
    assert seed_wiring.update_reputation("s", 0.25) == 1
    assert kept.swarm_registry["s"].reputation_score == 0.25
    assert closed.swarm_registry["s"].reputation_score == 1.0


def test_a_bad_reputation_changes_no_governor() -> None:
    governor = _knows(IFGovernor(), "s2")
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError):
            seed_wiring.update_reputation("s2", bad)  # type: ignore[arg-type]
    assert governor.swarm_registry["s2"].reputation_score == 1.0


def test_the_default_audit_is_the_default_witness() -> None:
    from infrafabric.audit import log_operation

    assert seed_wiring.default_audit() is log_operation


def test_every_seed_constructor_names_its_implicit_links_the_same_way() -> None:
    import inspect

    from infrafabric.chassis import IFChassis
    from infrafabric.coordinator import IFCoordinator
    from infrafabric.coordinator.client import SwarmClient

    for cls, links in ((IFCoordinator, ["audit"]), (IFGovernor, ["audit", "cost_sink"]),
                       (IFChassis, ["audit", "reputation_sink"]), (SwarmClient, ["audit"])):
        parameters = inspect.signature(cls).parameters
        assert [p for p in links if parameters[p].default is not seed_wiring.DEFAULT] == [], cls


async def test_default_resolves_to_the_seeds_links_and_none_turns_them_off() -> None:
    from infrafabric.audit import log_operation
    from infrafabric.coordinator import IFCoordinator

    assert IFGovernor()._audit is log_operation and IFGovernor()._cost_sink is seed_wiring.track_cost_with_optimise
    assert IFGovernor(audit=None, cost_sink=None)._audit is None
    assert IFGovernor(audit=None, cost_sink=None)._cost_sink is None
    assert IFCoordinator().core._audit is log_operation and IFCoordinator(audit=None).core._audit is None
