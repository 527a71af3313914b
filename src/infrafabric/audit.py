"""The one place the control plane reports auditable operations: IF.witness's default log."""

from __future__ import annotations

from typing import Any

from infrafabric.witness import log_operation as _witness_log


def log_operation(
    component: str, operation: str, params: dict[str, Any], severity: str = "INFO", trace_id: str | None = None
) -> Any:
    return _witness_log(component, operation, params, severity=severity, trace_id=trace_id)
