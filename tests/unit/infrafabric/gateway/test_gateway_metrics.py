"""The gateway's counters, fed by the same audit events the ledger writes: each dollar counted once."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from backends.kv import open_kv
from infrafabric.gateway.allowance import AllowanceLedger
from infrafabric.gateway.metrics import GatewayMetrics
from infrafabric.gateway.reservations import ReservationLedger


async def test_charged_dollars_count_each_call_once_and_not_the_allowance_writes_that_carry_them() -> None:
    metrics = GatewayMetrics()

    def audit(operation: str, params: dict, severity: str = "INFO") -> None:  # type: ignore[type-arg]
        metrics.observe(operation, params)

    async with open_kv("memory://") as kv:
        await kv.put("/governor/budgets/s", json.dumps({"budget": "10", "spent": "0"}))
        ledger = AllowanceLedger(ReservationLedger(kv, audit=audit), audit=audit, flush_window=0.0)
        lease = await kv.grant_lease(60)
        costs = [Decimal("0.013"), Decimal("0.02"), Decimal("0.0071")]
        for i, cost in enumerate(costs):
            await ledger.settle(await ledger.reserve("s", f"c{i}", Decimal("0.05"), lease), cost)
        await ledger.close()
    assert metrics.registry.get_sample_value("if_gateway_charged_dollars_total") == pytest.approx(float(sum(costs)))
    assert metrics.registry.get_sample_value("if_gateway_events_total", {"operation": "model_call_settled"}) == 3
    assert metrics.registry.get_sample_value("if_gateway_events_total", {"operation": "allowance_settled"}) >= 1
