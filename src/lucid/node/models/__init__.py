"""Pydantic v2 models of node management (nodes, pools, PoOT, payouts)."""

from .node_models import (  # noqa: F401
    CPUInfo, GPUInfo, HardwareInfo, Location, MaintenanceWindow, MemoryInfo, NetworkInterface, Node,
    NodeConfiguration, NodeCreateRequest, NodeStatus, NodeType, NodeUpdateRequest, ResourceLimits,
    StorageInfo, utcnow,
)
from .payout_models import BatchPayoutRequest, Payout, PayoutRequest, PayoutStatus  # noqa: F401
from .pool_models import AddNodeToPoolRequest, NodePool, NodePoolCreateRequest, NodePoolUpdateRequest  # noqa: F401
from .poot_models import PoOTBatchRequest, PoOTScore, PoOTValidationRequest, PoOTValidationResult  # noqa: F401
