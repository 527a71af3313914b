"""The chassis pool as a service: swarms in other processes run their work in its WASM sandboxes.

``POST /v1/executions`` with the swarm's own credential (``Authorization: Bearer``) and ``{"task": {...}}``
runs the task in that swarm's sandbox (the reference module unless the operator loaded another) and
answers ``{"result": ..., "latency_ms": ..., "fuel_consumed": ...}``. The swarm id comes from the verified
credential, never from the body, so one swarm cannot spend another's rate limit or sandbox. Refusals
answer the chassis error code in the envelope ``{"error": {"code", "message"}}``.

With a ``charge`` (a governor ``acharge`` callable and a price per execution), each execution is charged
to the swarm's budget in the shared ledger *before* it runs: a swarm whose breaker is open (its budget
spent) is refused with ``IF_ERR_CIRCUIT_OPEN`` and runs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infrafabric.chassis.chassis import IFChassis
from infrafabric.chassis.errors import ChassisError
from infrafabric.chassis.modules import reference_module
from infrafabric.coordinator.credentials import CredentialVerifier, bearer_token
from infrafabric.errors import CredentialError, InfraFabricError
from infrafabric.httpjson import json_object

__all__ = ["ChassisMetrics", "ChassisPool", "create_app"]

MAX_BODY_BYTES = 1 << 20
_SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class ChassisMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.executions = Counter("if_chassis_executions_total", "Tasks run in the sandbox, by outcome "
                                  "(success, failure, refused)", ["outcome"], registry=r)
        self.refusals = Counter("if_chassis_refusals_total", "Tasks refused or stopped, by chassis error code",
                                ["reason"], registry=r)
        self.seconds = Histogram("if_chassis_execution_seconds", "Wall time of one sandboxed task",
                                 buckets=_SECONDS, registry=r)
        for outcome in ("success", "failure", "refused"):  # known series exist (at 0) from the start
            self.executions.labels(outcome)
        for reason in ("IF_ERR_AUTH_INVALID", "IF_ERR_AUTH_EXPIRED", "IF_ERR_AUTH_REVOKED", "IF_ERR_CIRCUIT_OPEN"):
            self.refusals.labels(reason)


class ChassisPool:
    def __init__(self, chassis: IFChassis, verifier: CredentialVerifier, metrics: ChassisMetrics | None = None,
                 module: bytes | None = None,
                 charge: Callable[[str, str, Decimal], Awaitable[Decimal]] | None = None,
                 price: Decimal = Decimal("0")) -> None:
        self.chassis, self.verifier = chassis, verifier
        self.charge, self.price = charge, price
        self.metrics = metrics if metrics is not None else ChassisMetrics()
        self.module = module if module is not None else reference_module()

    async def execute(self, authorization: str | None, body: dict[str, Any]) -> dict[str, Any]:
        token = bearer_token(authorization)
        if token is None:
            raise CredentialError("a swarm credential is required (Authorization: Bearer ...)")
        swarm_id = (await self.verifier.verify(token, role="swarm")).name
        task = body.get("task")
        if not isinstance(task, dict):
            raise ChassisError("task must be an object", swarm_id=swarm_id)
        if swarm_id not in self.chassis.swarm_runtimes:
            self.chassis.load_swarm(swarm_id, self.module)
        if self.charge is not None and self.price > 0:
            try:
                await self.charge(swarm_id, "chassis-execution", self.price)
            except InfraFabricError as exc:
                self.metrics.executions.labels("refused").inc()
                self.metrics.refusals.labels(exc.error_code).inc()
                raise
        try:
            outcome = await self.chassis.execute_task_detailed(swarm_id, task)
        except ChassisError as exc:
            self.metrics.executions.labels("refused").inc()
            self.metrics.refusals.labels(exc.error_code).inc()
            raise
        self.metrics.seconds.observe(outcome.latency_ms / 1000.0)
        self.metrics.executions.labels("success" if outcome.result.get("status") == "success" else "failure").inc()
        return {"result": outcome.result, "latency_ms": round(outcome.latency_ms, 3),
                "fuel_consumed": outcome.fuel_consumed}


def create_app(pool: ChassisPool) -> Starlette:
    async def executions(request: Request) -> Response:
        try:
            body = await json_object(request, MAX_BODY_BYTES)
            return JSONResponse(await pool.execute(request.headers.get("authorization"), body))
        except InfraFabricError as exc:
            status = exc.http_status
            if status == 401:
                pool.metrics.refusals.labels(exc.error_code).inc()
            return JSONResponse({"error": {"code": exc.error_code, "message": exc.message}}, status_code=status)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"code": "IF_ERR_NOT_FOUND", "message": "no such route"}}, status_code=404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": {"code": "IF_ERR_METHOD_NOT_ALLOWED", "message": "method not allowed"}},
                            status_code=405)

    return Starlette(routes=[Route("/v1/executions", executions, methods=["POST"])],
                     exception_handlers={404: not_found, 405: not_allowed})
