"""/api/v1/nodes/pools: pools and membership."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from ..models.pool_models import AddNodeToPoolRequest, NodePoolCreateRequest, NodePoolUpdateRequest
from .auth import Principal
from .deps import authorize, container_of

router = APIRouter(prefix="/api/v1/nodes/pools", tags=["pools"])
PoolIdPath = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^pool_[a-zA-Z0-9_-]+$")]
NodeIdPath = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]


@router.get("")
async def list_pools(request: Request, _: Annotated[Principal, Depends(authorize("pool:read"))],
                     page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    res = await container_of(request).pools.list_pools(page=page, limit=limit)
    return {"pools": [p.model_dump(mode="json") for p in res["pools"]], "pagination": res["pagination"]}


@router.post("", status_code=201)
async def create_pool(request: Request, body: NodePoolCreateRequest,
                      _: Annotated[Principal, Depends(authorize("pool:write"))]) -> JSONResponse:
    pool = await container_of(request).pools.create_pool(body)
    return JSONResponse(pool.model_dump(mode="json"), status_code=201)


@router.get("/{pool_id}")
async def get_pool(request: Request, pool_id: PoolIdPath,
                   _: Annotated[Principal, Depends(authorize("pool:read"))]) -> dict[str, Any]:
    return (await container_of(request).pools.get_pool(pool_id)).model_dump(mode="json")


@router.put("/{pool_id}")
async def update_pool(request: Request, pool_id: PoolIdPath, body: NodePoolUpdateRequest,
                      _: Annotated[Principal, Depends(authorize("pool:write"))]) -> dict[str, Any]:
    return (await container_of(request).pools.update_pool(pool_id, body)).model_dump(mode="json")


@router.delete("/{pool_id}")
async def delete_pool(request: Request, pool_id: PoolIdPath,
                      _: Annotated[Principal, Depends(authorize("pool:write"))]) -> dict[str, Any]:
    return await container_of(request).pools.delete_pool(pool_id)


@router.post("/{pool_id}/nodes")
async def add_node(request: Request, pool_id: PoolIdPath, body: AddNodeToPoolRequest,
                   _: Annotated[Principal, Depends(authorize("pool:assign"))]) -> dict[str, Any]:
    return (await container_of(request).pools.add_node(pool_id, body)).model_dump(mode="json")


@router.delete("/{pool_id}/nodes/{node_id}")
async def remove_node(request: Request, pool_id: PoolIdPath, node_id: NodeIdPath,
                      _: Annotated[Principal, Depends(authorize("pool:assign"))]) -> dict[str, Any]:
    return (await container_of(request).pools.remove_node(pool_id, node_id)).model_dump(mode="json")
