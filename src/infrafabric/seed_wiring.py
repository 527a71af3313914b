"""Where the seeds' zero-argument constructors get their collaborators, and nowhere else.

Seed 002's tests build ``IFChassis()`` beside a separately built ``IFGovernor(...)`` and expect the
chassis's reputation verdicts to reach that governor, and they read every component's audit entries with
the module-level ``infrafabric.witness.get_logs``. So a component built without collaborators audits into
the process's default witness (``default_audit``), and a chassis built without a reputation sink feeds
every live governor (``update_reputation``, over the registry governors join when built). That is the
whole of the implicit wiring: the services, the stack and the CLI pass their witness, governor and sinks
in explicitly, and a component given ``audit=None`` or ``reputation_sink=None`` uses neither default.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from infrafabric.reputation import check_reputation

__all__ = ["DEFAULT", "audit_sink", "cost_sink", "default_audit", "join_live_governors", "leave_live_governors",
           "track_cost_with_optimise", "update_reputation"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: in a signature: "the seeds' default for this link" (resolved by ``audit_sink`` / ``cost_sink`` here)
DEFAULT: Any = _Default()


class _Governor(Protocol):
    swarm_registry: Any

    def update_reputation(self, swarm_id: str, reputation: float) -> None: ...


_live_governors: "weakref.WeakSet[Any]" = weakref.WeakSet()


def join_live_governors(governor: _Governor) -> None:
    """A governor joins when built (held weakly: the registry keeps none alive)."""
    _live_governors.add(governor)


def leave_live_governors(governor: _Governor) -> None:
    _live_governors.discard(governor)


def update_reputation(swarm_id: str, reputation: float) -> int:
    """Apply a reputation to every live governor that knows the swarm; returns how many did."""
    value = check_reputation(reputation)
    updated = 0
    for governor in list(_live_governors):
        if swarm_id in governor.swarm_registry:
            governor.update_reputation(swarm_id, value)
            updated += 1
    return updated


def default_audit() -> Any:
    """The default witness's ``log_operation`` (``infrafabric.audit``)."""
    from infrafabric.audit import log_operation

    return log_operation


def track_cost_with_optimise(provider: str, operation: str, cost: Any, **metadata: Any) -> None:
    """The default cost sink: IF.optimise's accounting (one audited record per charge)."""
    from infrafabric.optimise import track_operation_cost

    track_operation_cost(provider, operation, cost, **metadata)


def audit_sink(audit: Any) -> Any:
    """``audit`` as given, or the default witness's ``log_operation`` for ``DEFAULT``."""
    return default_audit() if audit is DEFAULT else audit


def cost_sink(sink: Any) -> Any:
    """``sink`` as given, or IF.optimise's accounting for ``DEFAULT``."""
    return track_cost_with_optimise if sink is DEFAULT else sink
