"""PoolService: pools and membership (capacity enforced by the repository in the same transaction)."""

from __future__ import annotations

import math
from typing import Any

from ..errors import PoolNotFoundError
from ..models.pool_models import AddNodeToPoolRequest, NodePool, NodePoolCreateRequest, NodePoolUpdateRequest
from .updates import apply_update

__all__ = ["PoolService"]


class PoolService:
    def __init__(self, pool_repository: Any, node_repository: Any) -> None:
        self.repository = pool_repository
        self.nodes = node_repository

    async def create_pool(self, request: NodePoolCreateRequest) -> NodePool:
        data = request.model_dump(exclude_none=True)
        pool = NodePool(**data)
        await self.repository.create(pool)
        return pool

    async def get_pool(self, pool_id: str) -> NodePool:
        pool = await self.repository.get_by_id(pool_id)
        if pool is None:
            raise PoolNotFoundError(f"Pool {pool_id} not found")
        return pool

    async def list_pools(self, page: int = 1, limit: int = 20) -> dict[str, Any]:
        pools = await self.repository.list(offset=(page - 1) * limit, limit=limit)
        total = await self.repository.count()
        return {"pools": pools,
                "pagination": {"page": page, "limit": limit, "total": total, "pages": math.ceil(total / limit)}}

    async def update_pool(self, pool_id: str, request: NodePoolUpdateRequest) -> NodePool:
        pool = apply_update(await self.get_pool(pool_id), request)
        await self.repository.update(pool)
        return pool

    async def delete_pool(self, pool_id: str) -> dict[str, Any]:
        if not await self.repository.delete(pool_id):
            raise PoolNotFoundError(f"Pool {pool_id} not found")
        return {"pool_id": pool_id, "deleted": True}

    async def add_node(self, pool_id: str, request: AddNodeToPoolRequest) -> NodePool:
        await self.nodes.assign_pool(request.node_id, pool_id, request.priority)
        return await self.get_pool(pool_id)

    async def remove_node(self, pool_id: str, node_id: str) -> NodePool:
        await self.get_pool(pool_id)
        await self.nodes.unassign_pool(node_id, pool_id)
        return await self.get_pool(pool_id)
