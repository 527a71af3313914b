"""Node lifecycle, pools and resource monitoring."""

from .node_service import NodeService  # noqa: F401
from .pool_service import PoolService  # noqa: F401
from .resource_monitor import ResourceMonitor  # noqa: F401
