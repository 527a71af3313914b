"""The chassis's two outward links: an audit sink (IF.witness) and a reputation sink (IF.governor).

Both are passed in (``IFChassis(audit=..., reputation_sink=...)``; the zero-argument form takes the
seeds' defaults from ``infrafabric.seed_wiring``). Failures in either are logged, never raised into task
execution.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

log = logging.getLogger("infrafabric.chassis")
log.addHandler(logging.NullHandler())  # a library: the application configures logging

COMPONENT = "IF.chassis"


class AuditSink(Protocol):
    def __call__(self, *, component: str, operation: str, params: dict[str, Any], severity: str = "INFO",
                 trace_id: str | None = None) -> Any: ...


ReputationSink = Callable[[str, float], None]


class Audit:
    """Sends chassis events to the witness (or a given sink) and to Python logging."""

    def __init__(self, sink: AuditSink | None) -> None:
        self._sink = sink

    def __call__(self, operation: str, params: dict[str, Any], severity: str = "INFO",
                 trace_id: str | None = None) -> None:
        level = {"INFO": logging.INFO, "WARN": logging.WARNING, "HIGH": logging.ERROR}.get(severity, logging.INFO)
        log.log(level, "%s %s", operation, params)
        if self._sink is None:
            return
        try:
            self._sink(component=COMPONENT, operation=operation, params=params, severity=severity,
                       trace_id=trace_id)
        except Exception:  # the audit trail must not take the sandbox down
            log.exception("witness log_operation failed for %s", operation)
