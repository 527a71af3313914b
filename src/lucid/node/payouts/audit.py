"""Payout audit through IF.witness (``infrafabric.witness.log_operation``, sync and non-blocking).

The import is resolved at call time so the audit starts flowing to the witness as soon as that component
is installed; until then entries go to the ``lucid.node.audit`` logger (never silently dropped).
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

__all__ = ["WitnessAuditLogger", "AUDIT_COMPONENT"]

AUDIT_COMPONENT = "lucid.node.payouts"
_log = logging.getLogger("lucid.node.audit")


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in params.items()}


class WitnessAuditLogger:
    def __init__(self, component: str = AUDIT_COMPONENT) -> None:
        self.component = component

    async def log_payout_operation(self, operation: str, payout: dict[str, Any], severity: str = "INFO",
                                   trace_id: str | None = None) -> None:
        params = _jsonable({k: payout.get(k) for k in ("payout_id", "idempotency_key", "node_id", "amount",
                                                        "currency", "wallet_address", "status",
                                                        "transaction_hash", "error_message", "batch_id")})
        try:
            from infrafabric.witness import log_operation  # type: ignore[attr-defined]
        except ImportError:
            _log.info("audit %s %s", operation, json.dumps(params, sort_keys=True))
            return
        log_operation(self.component, operation, params, severity=severity, trace_id=trace_id)
