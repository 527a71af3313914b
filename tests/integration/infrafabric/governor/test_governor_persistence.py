"""A restarted governor comes back with the same budgets, breakers and reputations (SQLite and etcd)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backends.kv import open_kv
from backends.kv.memory import drop_shared_core
from infrafabric.governor import IFGovernor, ResourcePolicy, SwarmProfile


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def durable_kv_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/governor.db"
    return str(request.getfixturevalue("etcd_server").url)


async def test_restarted_governor_has_the_same_state(durable_kv_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import uuid

    sid = f"persist-{uuid.uuid4().hex[:8]}"
    kv = open_kv(durable_kv_url)
    first = IFGovernor(kv=kv, policy=ResourcePolicy(circuit_breaker_failure_threshold=2))
    first.register_swarm(SwarmProfile(sid, ["code:rust"], 2.5, 0.9, 10.0))
    first.register_swarm(SwarmProfile(sid + "-b", ["code:rust"], 2.5, 0.9, 1.0))
    first.track_cost(sid, "op", 0.1)
    first.track_cost(sid, "op", 0.2)
    first.update_reputation(sid, 0.42)
    first.record_task_result(sid + "-b", False)
    first.record_task_result(sid + "-b", False)  # trips
    await first.close()
    await kv.close()
    if durable_kv_url.startswith("sqlite"):
        drop_shared_core(f"sqlite:{tmp_path}/governor.db")  # the process restarts: memory is gone

    kv2 = open_kv(durable_kv_url)
    second = IFGovernor(kv=kv2)
    assert await second.load() >= 2
    assert second.budget_remaining(sid) == Decimal("9.7")
    assert second.budget_spent(sid) == Decimal("0.3")
    assert second.reputation(sid) == 0.42
    assert second.circuit_breaker_status(sid + "-b")["state"] == "open"
    assert second.find_qualified_swarm(["code:rust"], 5) == sid
    p = second.swarm_registry[sid]
    assert p.current_budget_remaining == 9.7
    await second.close()
    await kv2.close()
