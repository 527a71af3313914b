"""IF.governor: capability-aware, budget-bounded allocation of swarms (S2 bug #2)."""

from infrafabric.capability import NAMED_CAPABILITIES, Capability
from infrafabric.governor.governor import IFGovernor
from infrafabric.seed_wiring import update_reputation
from infrafabric.governor.policy import ResourcePolicy
from infrafabric.governor.profile import SwarmProfile

__all__ = ["NAMED_CAPABILITIES", "Capability", "IFGovernor", "ResourcePolicy", "SwarmProfile", "update_reputation"]
