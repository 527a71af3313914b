"""PoOT endpoints: validate, batch-validate, score, history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from ..errors import InvalidPoOTError
from ..models.poot_models import PoOTBatchRequest, PoOTValidationRequest
from .auth import Principal
from .container import NodeContainer
from .deps import authorize, container_of

batch_router = APIRouter(prefix="/api/v1/nodes/poot", tags=["poot"])
router = APIRouter(prefix="/api/v1/nodes", tags=["poot"])
NodeIdPath = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]
VALIDATE_PERMISSION = "poot:validate"


@batch_router.post("/batch-validate")
async def batch_validate(request: Request, body: PoOTBatchRequest,
                         _: Annotated[Principal, Depends(authorize("poot:batch"))]) -> dict[str, Any]:
    c = container_of(request)
    res = await c.poot.batch_validate_poot([v.model_dump() for v in body.validations])
    c.metrics.poot.labels("batch").inc(len(body.validations))
    return res


async def answer_validate(c: NodeContainer, principal: Principal, node_id: str,
                          body: PoOTValidationRequest) -> Response:
    """The route's work, shared with the hot path (hot_routes.py): the result's JSON as pydantic writes
    it, sparing FastAPI's response validation and jsonable_encoder pass."""
    principal.require_node(node_id)
    try:
        result = await c.poot.validate_poot(node_id, body.output_data, body.timestamp, body.nonce,
                                            signature=body.signature)
    except InvalidPoOTError:
        c.metrics.poot.labels("rejected").inc()
        raise
    c.metrics.poot.labels("valid" if result.is_valid else "invalid").inc()
    return Response(result.public_json(), media_type="application/json")


@router.post("/{node_id}/poot/validate")
async def validate(request: Request, node_id: NodeIdPath, body: PoOTValidationRequest,
                   principal: Annotated[Principal, Depends(authorize(VALIDATE_PERMISSION))]) -> Response:
    return await answer_validate(container_of(request), principal, node_id, body)


@router.get("/{node_id}/poot/score")
async def score(request: Request, node_id: NodeIdPath,
                _: Annotated[Principal, Depends(authorize("poot:read"))]) -> dict[str, Any]:
    c = container_of(request)
    await c.nodes.get_node(node_id)
    s = await c.poot.get_score(node_id)
    s["calculated_at"] = s["calculated_at"].isoformat()
    return s


@router.get("/{node_id}/poot/history")
async def history(request: Request, node_id: NodeIdPath,
                  _: Annotated[Principal, Depends(authorize("poot:read"))],
                  page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                  limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    c = container_of(request)
    await c.nodes.get_node(node_id)
    items = await c.poot_repo.list_history(node_id, offset=(page - 1) * limit, limit=limit)
    total = await c.poot_repo.count_history(node_id)
    return {"validations": [v.public_dict() for v in items],
            "pagination": {"page": page, "limit": limit, "total": total, "pages": -(-total // limit)}}
