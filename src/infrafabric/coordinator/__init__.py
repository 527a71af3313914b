"""IF.coordinator: real-time coordination on etcd/NATS or the embedded default (S2 bug #1)."""

from infrafabric.coordinator.coordinator import IFCoordinator
from infrafabric.coordinator.core import Claim, CoordinationCore
from infrafabric.errors import AuthenticationError

__all__ = ["AuthenticationError", "Claim", "CoordinationCore", "IFCoordinator"]
