"""NodeService: node lifecycle with the state machine of SPEC.md.

start: inactive -> starting -> active (already active: no-op); stop: active -> stopping -> inactive
(already inactive: no-op); anything else raises InvalidNodeStatusError; a failure mid-transition leaves
``error``. Each transition is a compare-and-set on the stored status, so two concurrent starts cannot both
run the start sequence.

Every write names the columns it changes (a transition its status, a heartbeat ``last_heartbeat``), so it
cannot undo a change committed since its read (an operator's key rotation, the PoOT writer's score). An
update (PUT) is validated as the node it produces and written only if the row is still the one it read
(compare-and-set on ``updated_at``), else it is re-applied to a fresh read. A node is not deleted while a
payout to it is pending or processing (409).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..errors import InvalidNodeStatusError, NodeNotFoundError
from ..models.node_models import Node, NodeCreateRequest, NodeStatus, NodeUpdateRequest, utcnow
from .updates import apply_update

__all__ = ["NodeService"]

_log = logging.getLogger("lucid.node.service")


class NodeService:
    def __init__(self, node_repository: Any, resource_monitor: Any, validator: Any) -> None:
        self.repository = node_repository
        self.resource_monitor = resource_monitor
        self.validator = validator
        self.update_attempts = 5  # a PUT that keeps meeting concurrent edits gives up with 409

    async def create_node(self, request: NodeCreateRequest) -> Node:
        await self.validator.validate_create_request(request)
        node = Node(name=request.name, node_type=request.node_type, hardware_info=request.hardware_info,
                    location=request.location, configuration=request.configuration,
                    pool_id=request.initial_pool_id, public_key=request.public_key, status=NodeStatus.INACTIVE)
        await self.repository.create(node)
        await self.resource_monitor.initialize_node(node)
        _log.info("node created node_id=%s pool=%s", node.node_id, node.pool_id)
        return node

    async def get_node(self, node_id: str) -> Node:
        await self.validator.validate_node_id(node_id)
        node = await self.repository.get_by_id(node_id)
        if node is None:
            raise NodeNotFoundError(f"Node {node_id} not found")
        return node

    async def _load(self, node_id: str) -> Node:
        node = await self.repository.get_by_id(node_id)
        if node is None:
            raise NodeNotFoundError(f"Node {node_id} not found")
        return node

    async def _transition(self, node: Node, to: NodeStatus, expected: NodeStatus,
                          fields: tuple[str, ...] = ("status",)) -> None:
        node.status = to
        if await self.repository.update(node, expected_status=expected.value, fields=fields) is False:
            raise InvalidNodeStatusError(f"Node {node.node_id} changed state concurrently")

    async def _fail(self, node: Node, during: str) -> None:
        node.status = NodeStatus.ERROR
        await self.repository.update(node, fields=("status",))
        _log.error("node %s failed during %s; status error", node.node_id, during)

    async def start_node(self, node_id: str) -> dict[str, Any]:
        node = await self._load(node_id)
        if node.status == NodeStatus.ACTIVE:
            return {"node_id": node_id, "status": "active", "message": "Node is already active"}
        if node.status != NodeStatus.INACTIVE:
            raise InvalidNodeStatusError(f"Cannot start node in status {node.status.value}")
        await self._transition(node, NodeStatus.STARTING, NodeStatus.INACTIVE)
        try:
            await self.resource_monitor.start_monitoring(node_id)
            node.last_heartbeat = utcnow()
            await self._transition(node, NodeStatus.ACTIVE, NodeStatus.STARTING, ("status", "last_heartbeat"))
        except Exception:
            await self._fail(node, "start")
            raise
        return {"node_id": node_id, "status": "active", "started_at": node.last_heartbeat.isoformat()}

    async def stop_node(self, node_id: str) -> dict[str, Any]:
        node = await self._load(node_id)
        if node.status == NodeStatus.INACTIVE:
            return {"node_id": node_id, "status": "inactive", "message": "Node is already inactive"}
        if node.status != NodeStatus.ACTIVE:
            raise InvalidNodeStatusError(f"Cannot stop node in status {node.status.value}")
        await self._transition(node, NodeStatus.STOPPING, NodeStatus.ACTIVE)
        try:
            await self.resource_monitor.stop_monitoring(node_id)
            await self._transition(node, NodeStatus.INACTIVE, NodeStatus.STOPPING)
        except Exception:
            await self._fail(node, "stop")
            raise
        return {"node_id": node_id, "status": "inactive", "stopped_at": utcnow().isoformat()}

    async def restart_node(self, node_id: str) -> dict[str, Any]:
        node = await self._load(node_id)
        if node.status == NodeStatus.ACTIVE:
            await self.stop_node(node_id)
        elif node.status != NodeStatus.INACTIVE:
            raise InvalidNodeStatusError(f"Cannot restart node in status {node.status.value}")
        started = await self.start_node(node_id)
        return {"node_id": node_id, "status": started["status"], "restarted_at": started.get("started_at")}

    async def heartbeat(self, node_id: str) -> dict[str, Any]:
        node = await self._load(node_id)
        if node.status != NodeStatus.ACTIVE:
            raise InvalidNodeStatusError(f"Node {node_id} is {node.status.value}, not active")
        node.last_heartbeat = utcnow()
        if await self.repository.update(node, expected_status=NodeStatus.ACTIVE.value,
                                        fields=("last_heartbeat",)) is False:
            raise InvalidNodeStatusError(f"Node {node_id} changed state concurrently")
        return {"node_id": node_id, "status": "active", "last_heartbeat": node.last_heartbeat.isoformat()}

    async def update_node(self, node_id: str, request: NodeUpdateRequest) -> Node:
        """Apply a PUT. The rules hold for the node it produces, not only for the body: limits sent alone
        must still fit the hardware already stored. A write that raced another edit is re-applied to the
        fresh row (a few times, then 409), so it is never validated against a node that no longer is."""
        await self.validator.validate_update_request(request)
        changed = tuple(sorted(request.model_fields_set))
        for _ in range(self.update_attempts):
            node = await self._load(node_id)
            if node.status in (NodeStatus.STARTING, NodeStatus.STOPPING):
                raise InvalidNodeStatusError(f"Node {node_id} is {node.status.value}; retry later")
            expected, read_at = node.status, node.updated_at
            node = apply_update(node, request)
            await self.validator.validate_node(node)
            if not changed:
                return node
            if await self.repository.update(node, expected_status=expected.value, fields=changed,
                                            expected_updated_at=read_at) is not False:
                return node
        raise InvalidNodeStatusError(f"Node {node_id} changed concurrently; retry")

    async def delete_node(self, node_id: str) -> dict[str, Any]:
        node = await self._load(node_id)
        if node.status in (NodeStatus.ACTIVE, NodeStatus.STARTING, NodeStatus.STOPPING):
            raise InvalidNodeStatusError(f"Stop node {node_id} before deleting it")
        if not await self.repository.delete(node_id):
            raise NodeNotFoundError(f"Node {node_id} not found")
        await self.resource_monitor.stop_monitoring(node_id)
        return {"node_id": node_id, "deleted": True}

    async def list_nodes(self, page: int = 1, limit: int = 20, status: str | None = None,
                         pool_id: str | None = None, name: str | None = None) -> dict[str, Any]:
        offset = (page - 1) * limit
        extra = {"name": name} if name is not None else {}
        nodes = await self.repository.list(offset=offset, limit=limit, status=status, pool_id=pool_id, **extra)
        total = await self.repository.count(status=status, pool_id=pool_id, **extra)
        return {"nodes": nodes,
                "pagination": {"page": page, "limit": limit, "total": total, "pages": math.ceil(total / limit)}}
