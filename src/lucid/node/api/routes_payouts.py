"""Payout endpoints. A batch is recorded (all payouts ``pending``) before the 202, then paid in the
background; the same batch id with the same payload is idempotent, with another payload it is a 409."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from ..errors import PayoutNotFoundError, ValidationError
from ..models.node_models import utcnow
from ..models.payout_models import BatchPayoutRequest, PayoutStatus
from .auth import Principal
from .deps import authorize, container_of

router = APIRouter(prefix="/api/v1/nodes/payouts", tags=["payouts"])
node_router = APIRouter(prefix="/api/v1/nodes", tags=["payouts"])
BatchIdPath = Annotated[str, Path(min_length=7, max_length=64, pattern=r"^batch_[A-Za-z0-9_-]+$")]
NodeIdPath = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]


async def _submit(request: Request, body: BatchPayoutRequest) -> JSONResponse:
    c = container_of(request)
    batch_id = body.batch_id or f"batch_{uuid.uuid4().hex[:24]}"  # no id given: a new batch every time
    rec = await c.payouts.enqueue_batch(body.payout_requests, batch_id, body.scheduled_at)
    if rec.status in ("queued", "processing"):
        c.run_batch_soon(batch_id)
    eta = (body.scheduled_at or utcnow()) + timedelta(seconds=1 + len(body.payout_requests) / 500)
    return JSONResponse({"batch_id": batch_id, "status": rec.status, "total": rec.total,
                         "estimated_completion": eta.isoformat()}, status_code=202)


@router.post("/batch", status_code=202)
async def submit_batch(request: Request, body: BatchPayoutRequest,
                       _: Annotated[Principal, Depends(authorize("payout:process"))]) -> JSONResponse:
    if body.scheduled_at is not None and body.scheduled_at > utcnow():
        raise ValidationError("Use /api/v1/nodes/payouts/schedule for a future payout")
    return await _submit(request, body)


@router.get("/batch/{batch_id}")
async def batch_status(request: Request, batch_id: BatchIdPath,
                       _: Annotated[Principal, Depends(authorize("payout:read"))]) -> dict[str, Any]:
    c = container_of(request)
    rec = await c.payout_repo.get_batch(batch_id)
    if rec is None:
        raise PayoutNotFoundError(f"Batch {batch_id} not found")
    return {"batch_id": rec.batch_id, "status": rec.status, "total": rec.total, "successful": rec.successful,
            "failed": rec.failed, "counts": await c.payout_repo.status_counts(batch_id),
            "created_at": rec.created_at.isoformat(),
            "completed_at": rec.completed_at.isoformat() if rec.completed_at else None}


@router.get("/schedule")
async def list_scheduled(request: Request,
                         _: Annotated[Principal, Depends(authorize("payout:read"))]) -> dict[str, Any]:
    recs = await container_of(request).payout_repo.list_batches(status="scheduled")
    return {"scheduled": [{"batch_id": r.batch_id, "total": r.total, "scheduled_at": r.scheduled_at.isoformat()}
                          for r in recs]}


@router.post("/schedule", status_code=202)
async def schedule(request: Request, body: BatchPayoutRequest,
                   _: Annotated[Principal, Depends(authorize("payout:batch"))]) -> JSONResponse:
    if body.scheduled_at is None or body.scheduled_at <= utcnow():
        raise ValidationError("scheduled_at must be in the future")
    return await _submit(request, body)


@router.get("/history")
async def payout_history(request: Request, _: Annotated[Principal, Depends(authorize("payout:read"))],
                         page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                         limit: Annotated[int, Query(ge=1, le=100)] = 20,
                         status: PayoutStatus | None = None,
                         batch_id: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
    c = container_of(request)
    st = status.value if status else None
    items = await c.payout_repo.list_payouts(status=st, batch_id=batch_id, offset=(page - 1) * limit, limit=limit)
    total = await c.payout_repo.count_payouts(status=st, batch_id=batch_id)
    return {"payouts": [p.public_dict() for p in items],
            "pagination": {"page": page, "limit": limit, "total": total, "pages": -(-total // limit)}}


@node_router.get("/{node_id}/payouts")
async def node_payouts(request: Request, node_id: NodeIdPath,
                       _: Annotated[Principal, Depends(authorize("payout:read"))],
                       page: Annotated[int, Query(ge=1, le=100_000)] = 1,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20,
                       status: PayoutStatus | None = None) -> dict[str, Any]:
    c = container_of(request)
    await c.nodes.get_node(node_id)
    st = status.value if status else None
    items = await c.payout_repo.list_payouts(node_id=node_id, status=st, offset=(page - 1) * limit, limit=limit)
    total = await c.payout_repo.count_payouts(node_id=node_id, status=st)
    return {"payouts": [p.public_dict() for p in items],
            "pagination": {"page": page, "limit": limit, "total": total, "pages": -(-total // limit)}}
