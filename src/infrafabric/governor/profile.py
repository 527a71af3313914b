"""SwarmProfile: what a swarm can do and costs. Its budget and reputation are owned by the governor.

Before registration the profile only carries the starting values. Once a governor registers it, reading
`current_budget_remaining` or `reputation_score` reads the governor's ledger, and assigning either
raises BudgetManipulationError: a swarm holding its own profile cannot raise its budget.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from infrafabric.errors import BudgetManipulationError
from infrafabric.capability import Capability, parse_capabilities
from infrafabric.governor.money import to_money
from infrafabric.ids import validate_swarm_id
from infrafabric.reputation import check_reputation


class Ledger(Protocol):
    """Where a registered profile reads its live budget and reputation (the governor, in practice)."""

    def budget_remaining(self, swarm_id: str) -> Decimal: ...

    def reputation(self, swarm_id: str) -> float: ...


class SwarmProfile:
    __slots__ = ("swarm_id", "capabilities", "_cost", "_reputation", "_budget", "model", "_ledger")

    def __init__(
        self,
        swarm_id: str,
        capabilities: list[Any],
        cost_per_hour: float,
        reputation_score: float = 1.0,
        current_budget_remaining: float = 0.0,
        model: str | None = None,
    ) -> None:
        self.swarm_id = validate_swarm_id(swarm_id)
        self.capabilities: list[Capability] = parse_capabilities(capabilities)
        self._cost = to_money(cost_per_hour, "cost_per_hour")
        self._reputation = check_reputation(reputation_score)
        self._budget = to_money(current_budget_remaining, "current_budget_remaining")
        self.model = model
        self._ledger: Ledger | None = None

    def attach(self, ledger: Ledger | None) -> None:
        """Read budget and reputation from ``ledger`` from now on (None: back to the starting values).
        Called by the governor that registers the profile and by nothing else."""
        self._ledger = ledger

    @property
    def cost_per_hour(self) -> float:
        return float(self._cost)

    @property
    def cost_per_hour_exact(self) -> Decimal:
        return self._cost

    @property
    def current_budget_remaining(self) -> float:
        return float(self.budget_remaining_exact)

    @current_budget_remaining.setter
    def current_budget_remaining(self, _value: object) -> None:
        raise BudgetManipulationError(
            f"budget of {self.swarm_id} is kept by IF.governor; use an operator action to change it"
        )

    @property
    def budget_remaining_exact(self) -> Decimal:
        if self._ledger is not None:
            return self._ledger.budget_remaining(self.swarm_id)
        return self._budget

    @property
    def initial_budget(self) -> Decimal:
        return self._budget

    @property
    def reputation_score(self) -> float:
        if self._ledger is not None:
            return self._ledger.reputation(self.swarm_id)
        return self._reputation

    @reputation_score.setter
    def reputation_score(self, _value: object) -> None:
        raise BudgetManipulationError(
            f"reputation of {self.swarm_id} is computed by IF.chassis and kept by IF.governor"
        )

    def to_record(self) -> dict[str, Any]:
        return {
            "swarm_id": self.swarm_id,
            "capabilities": [str(c) for c in self.capabilities],
            "cost_per_hour": str(self._cost),
            "reputation_score": self.reputation_score,
            "initial_budget": str(self._budget),
            "model": self.model,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "SwarmProfile":
        return cls(
            record["swarm_id"],
            record["capabilities"],
            Decimal(record["cost_per_hour"]),  # type: ignore[arg-type]
            record.get("reputation_score", 1.0),
            Decimal(record.get("initial_budget", "0")),  # type: ignore[arg-type]
            record.get("model"),
        )

    def __repr__(self) -> str:
        return (
            f"SwarmProfile({self.swarm_id!r}, capabilities={[str(c) for c in self.capabilities]}, "
            f"cost_per_hour={self._cost}, reputation={self.reputation_score}, "
            f"budget_remaining={self.budget_remaining_exact})"
        )

