"""/health (public: probes carry no token; it reveals only component states) and /metrics (admin)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..models.node_models import utcnow
from .auth import Principal
from .deps import authorize, container_of

router = APIRouter(tags=["system"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    c = container_of(request)
    checks: dict[str, Any] = {}
    try:
        await c.db.ping()
        checks["database"] = "healthy"
    except Exception:  # noqa: BLE001 - a health probe reports, never raises
        checks["database"] = "unhealthy"
    try:
        checks["resource_monitor"] = c.monitor.health()["status"]
    except Exception:  # noqa: BLE001
        checks["resource_monitor"] = "unhealthy"
    try:
        active = await c.node_repo.list(offset=0, limit=1000, status="active")
        cutoff = utcnow() - timedelta(minutes=5)
        fresh = sum(1 for n in active if n.last_heartbeat and n.last_heartbeat >= cutoff)
        ratio = fresh / len(active) if active else 1.0
        checks["node_heartbeats"] = {"active": len(active), "fresh": fresh,
                                     "status": "healthy" if ratio >= 0.8 else "degraded"}
    except Exception:  # noqa: BLE001
        checks["node_heartbeats"] = {"status": "unhealthy"}
    bad = [k for k, v in checks.items() if (v if isinstance(v, str) else v["status"]) != "healthy"]
    status = "healthy" if not bad else ("unhealthy" if "database" in bad else "degraded")
    return JSONResponse({"status": status, "service": "node-management", "checks": checks,
                         "timestamp": utcnow().isoformat()}, status_code=200 if status != "unhealthy" else 503)


@router.get("/metrics")
async def metrics(request: Request, _: Annotated[Principal, Depends(authorize("metrics:read"))]) -> Response:
    from ..models.node_models import NodeStatus

    c = container_of(request)
    counts = await c.node_repo.count_by_status()
    for state in NodeStatus:
        c.metrics.nodes.labels(state.value).set(counts.get(state.value, 0))
    return Response(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)
