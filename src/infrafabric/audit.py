"""The one place the control plane reports auditable operations to IF.witness."""

from __future__ import annotations

from typing import Any


def log_operation(
    component: str, operation: str, params: dict[str, Any], severity: str = "INFO", trace_id: str | None = None
) -> Any:
    try:
        from infrafabric.witness import log_operation as witness_log
    except ImportError:  # TODO(witness): remove once IF.witness lands
        return None
    return witness_log(component, operation, params, severity=severity, trace_id=trace_id)
