"""/api/v1/nodes: node CRUD, lifecycle, resources."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ..models.node_models import NodeCreateRequest, NodeStatus, NodeUpdateRequest
from .auth import Principal
from .container import NodeContainer
from .deps import authorize, container_of

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])
# /api/v1/nodes itself (list, create): no other route shares its path, so the app can match it first
collection_router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])
NODE_ID_PATTERN = r"^node_[a-zA-Z0-9_-]+$"
NodeIdPath = Annotated[str, Path(min_length=8, max_length=64, pattern=NODE_ID_PATTERN)]
CREATE_NODE_PERMISSION = "node:write"


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    memory_percent: float | None = Field(default=None, ge=0, le=100)
    disk_percent: float | None = Field(default=None, ge=0, le=100)


_BYTES = Field(ge=0, le=2**62)


class ResourceSample(BaseModel):
    """A node's own figures, sent with its heartbeat (what the monitor charts)."""

    model_config = ConfigDict(extra="forbid")
    cpu_percent: float = Field(ge=0, le=100, allow_inf_nan=False)
    memory_percent: float = Field(ge=0, le=100, allow_inf_nan=False)
    memory_used_bytes: int = _BYTES
    memory_total_bytes: int = _BYTES
    disk_percent: float = Field(ge=0, le=100, allow_inf_nan=False)
    disk_used_bytes: int = _BYTES
    disk_total_bytes: int = _BYTES
    network_bytes_sent: int = _BYTES
    network_bytes_recv: int = _BYTES


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resources: ResourceSample | None = None


class Allocation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    memory_bytes: int | None = Field(default=None, ge=0)
    disk_bytes: int | None = Field(default=None, ge=0)


@collection_router.get("")
async def list_nodes(request: Request, _: Annotated[Principal, Depends(authorize("node:read"))],
                     page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20,
                     status: NodeStatus | None = None,
                     pool_id: Annotated[str | None, Query(max_length=64)] = None,
                     name: Annotated[str | None, Query(max_length=100)] = None) -> dict[str, Any]:
    res = await container_of(request).nodes.list_nodes(page=page, limit=limit,
                                                       status=status.value if status else None,
                                                       pool_id=pool_id, name=name)
    return {"nodes": [n.public_dict() for n in res["nodes"]], "pagination": res["pagination"]}


async def answer_create_node(c: NodeContainer, _principal: Principal, body: NodeCreateRequest) -> Response:
    """The route's work, shared with the hot path (hot_routes.py)."""
    node = await c.nodes.create_node(body)
    return Response(node.public_json(), status_code=201, media_type="application/json")


@collection_router.post("", status_code=201)
async def create_node(request: Request, body: NodeCreateRequest,
                      principal: Annotated[Principal, Depends(authorize(CREATE_NODE_PERMISSION))]) -> Response:
    return await answer_create_node(container_of(request), principal, body)


@router.get("/{node_id}")
async def get_node(request: Request, node_id: NodeIdPath,
                   _: Annotated[Principal, Depends(authorize("node:read"))]) -> dict[str, Any]:
    return (await container_of(request).nodes.get_node(node_id)).public_dict()


@router.put("/{node_id}")
async def update_node(request: Request, node_id: NodeIdPath, body: NodeUpdateRequest,
                      _: Annotated[Principal, Depends(authorize("node:write"))]) -> dict[str, Any]:
    return (await container_of(request).nodes.update_node(node_id, body)).public_dict()


@router.delete("/{node_id}")
async def delete_node(request: Request, node_id: NodeIdPath,
                      _: Annotated[Principal, Depends(authorize("node:write"))]) -> dict[str, Any]:
    c = container_of(request)
    res = await c.nodes.delete_node(node_id)
    c.monitor.forget(node_id)
    return res


@router.post("/{node_id}/start")
async def start_node(request: Request, node_id: NodeIdPath,
                     _: Annotated[Principal, Depends(authorize("node:start"))]) -> dict[str, Any]:
    return await container_of(request).nodes.start_node(node_id)


@router.post("/{node_id}/stop")
async def stop_node(request: Request, node_id: NodeIdPath,
                    _: Annotated[Principal, Depends(authorize("node:stop"))]) -> dict[str, Any]:
    return await container_of(request).nodes.stop_node(node_id)


@router.post("/{node_id}/restart")
async def restart_node(request: Request, node_id: NodeIdPath,
                       _: Annotated[Principal, Depends(authorize("node:restart"))]) -> dict[str, Any]:
    return await container_of(request).nodes.restart_node(node_id)


@router.get("/{node_id}/resources")
async def get_resources(request: Request, node_id: NodeIdPath,
                        principal: Annotated[Principal, Depends(authorize("resource:read"))],
                        time_range: Literal["1h", "6h", "24h", "7d"] = "1h") -> dict[str, Any]:
    principal.require_node(node_id)
    c = container_of(request)
    await c.nodes.get_node(node_id)
    return await c.monitor.get_node_resources(node_id, time_range)


@router.put("/{node_id}/resources/thresholds")
async def set_thresholds(request: Request, node_id: NodeIdPath, body: Thresholds,
                         _: Annotated[Principal, Depends(authorize("node:write"))]) -> dict[str, Any]:
    c = container_of(request)
    await c.nodes.get_node(node_id)
    return {"node_id": node_id,
            "thresholds": await c.monitor.set_thresholds(node_id, body.model_dump(exclude_none=True))}


@router.post("/{node_id}/resources/allocate")
async def allocate(request: Request, node_id: NodeIdPath, body: Annotated[Allocation, Body()],
                   _: Annotated[Principal, Depends(authorize("node:write"))]) -> dict[str, Any]:
    c = container_of(request)
    node = await c.nodes.get_node(node_id)
    if not c.monitor.knows(node_id):
        await c.monitor.initialize_node(node)
    return {"node_id": node_id,
            "allocations": await c.monitor.allocate(node_id, body.model_dump(exclude_none=True))}


@router.post("/{node_id}/heartbeat")
async def heartbeat(request: Request, node_id: NodeIdPath,
                    principal: Annotated[Principal, Depends(authorize("poot:validate"))],
                    body: Annotated[Heartbeat | None, Body()] = None) -> dict[str, Any]:
    """A node says it is alive, optionally with its own resource figures (kept as its history)."""
    principal.require_node(node_id)
    c = container_of(request)
    answer = await c.nodes.heartbeat(node_id)
    if body is not None and body.resources is not None:
        await c.monitor.record(node_id, body.resources.model_dump())
        answer["resources_recorded"] = True
    return answer
