"""Where the mesh records what it refused: IF.witness's ``Witness.log`` has this shape (non-blocking)."""

from __future__ import annotations

from typing import Any, Protocol

AUDIT_COMPONENT = "lucid.service_mesh"


class AuditSink(Protocol):
    def log(self, component: str, operation: str, params: dict[str, Any] | None = None,
            severity: str = "INFO", trace_id: str | None = None) -> Any: ...
