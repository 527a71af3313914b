"""The gateway's metrics, counted from the events it audits (every reservation, settlement and refusal is
already a witness entry; counting the same events keeps the two in step by construction)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from prometheus_client import CollectorRegistry, Counter

__all__ = ["GatewayMetrics"]

AuditFn = Callable[[str, str, dict[str, Any], str], Any]


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter("if_gateway_events_total", "Model-call events by operation (reserved, settled, "
                              "released, refused, ...)", ["operation"], registry=r)
        self.refusals = Counter("if_gateway_refusals_total", "Model calls refused, by error code", ["code"],
                                registry=r)
        self.charged = Counter("if_gateway_charged_dollars_total", "Dollars charged to swarms' budgets for model "
                               "calls", registry=r)
        for operation in ("model_call_reserved", "model_call_settled", "model_call_released", "model_call_refused"):
            self.events.labels(operation)

    def observe(self, operation: str, params: dict[str, Any]) -> None:
        self.events.labels(operation).inc()
        if operation == "model_call_refused":
            self.refusals.labels(str(params.get("error_code", "unknown"))).inc()
        # a call's charge is counted once, from its own entry; an allowance's write ("allowance_settled")
        # carries the sum of the calls it settled, already counted
        # a call's charge is counted once, from its own entry; an allowance's write ("allowance_settled")
        # carries the sum of the calls it settled, already counted
        charged = params.get("charged") if operation.startswith("model_call_") else None
        if charged is not None:
            try:
                amount = Decimal(str(charged))
            except InvalidOperation:
                return
            if amount > 0:
                self.charged.inc(float(amount))

    def wrap(self, audit: AuditFn | None) -> AuditFn:
        """An audit function that counts each event, then hands it on."""
        def counted(component: str, operation: str, params: dict[str, Any], severity: str = "INFO") -> Any:
            self.observe(operation, params)
            return audit(component, operation, params, severity) if audit is not None else None
        return counted
