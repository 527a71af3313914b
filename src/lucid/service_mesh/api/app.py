"""HTTP API of the registry for services not written in Python: ``/service-discovery/services``.

Every endpoint needs a service JWT (Bearer). A service may register, update and deregister only
itself (the token's service_name/cluster/plane must match); a token with the ``mesh:admin``
permission may act for any service. The claims can be trusted for this because the verifier binds each
key of the JWK set to its owner (a token naming another service than the key's owner is 401, 1203) and
keeps ``mesh:admin`` only in tokens under an admin key, such as the operator's (``auth_provider``): a
member's own key can neither speak for another member nor make it an administrator. Errors use the
SPEC envelope.

Rate limits (429, LUCID_ERR_4291, Retry-After): each service identity (name and cluster) has
``per_service`` requests a minute; each client address has ``auth_failures_per_ip`` failed
authentications a minute, and once they are spent a token this API has not verified before is refused
without being verified (first verifications are the expensive part: an asymmetric signature check).
Tokens already verified keep working, so one misbehaving neighbour on a shared address does not cut
off the services that already authenticated.
"""


import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from pydantic import BaseModel, ConfigDict, Field

from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from backends.ratelimit import KeyedLimiter
from lucid.service_mesh.errors import (
    AuthenticationError,
    InvalidServiceConfigError,
    LucidMeshError,
    RateLimitedError,
    SecurityPolicyViolation,
    ServiceNotFoundError,
)
from lucid.service_mesh.security.auth_provider import ADMIN_PERMISSION, ServiceAuthProvider

log = logging.getLogger(__name__)


def envelope(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": str(uuid.uuid4()),
            "timestamp": datetime.now(timezone.utc).isoformat(),
        }
    }


@dataclass(frozen=True)
class MeshRateLimits:
    per_service: int = 6000  # requests a minute per service identity (100/s)
    auth_failures_per_ip: int = 60  # failed authentications a minute per client address

    def __post_init__(self) -> None:
        for name in ("per_service", "auth_failures_per_ip"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidServiceConfigError(f"{name} must be a whole number of requests a minute >= 1, "
                                                f"got {value!r}")


class RegisterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    serviceName: str = Field(pattern=r"^[a-z0-9-]+$", min_length=3, max_length=50)
    cluster: str = Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=63)
    plane: Literal["ops", "chain", "wallet"]
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(ge=1, le=65535)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$")
    protocol: Literal["http", "https", "grpc", "grpcs"] = "https"
    healthCheckPath: str | None = Field(default="/health", pattern=r"^/[^\s]{0,255}$")
    healthCheckInterval: int = Field(default=30, ge=5, le=300)
    healthCheckTimeout: int = Field(default=10, ge=1, le=60)
    ttl: int = Field(default=300, ge=30, le=3600)
    metadata: dict[str, Any] = Field(default_factory=dict)


class HealthBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["passing", "warning", "critical"]
    output: str = Field(default="", max_length=4096)


def create_app(
    registry: AsyncServiceRegistry,
    discovery: AsyncServiceDiscoveryClient,
    verifier: ServiceAuthProvider,
    rate_limits: MeshRateLimits | None = None,
) -> FastAPI:
    app = FastAPI(title="Lucid service discovery", version="1.0.0")
    limits = rate_limits or MeshRateLimits()
    buckets = KeyedLimiter()

    @app.exception_handler(LucidMeshError)
    async def _mesh_error(_: Request, exc: LucidMeshError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimitedError) else None
        return JSONResponse(envelope(exc.error_code, exc.message, exc.details), status_code=exc.http_status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse(envelope("LUCID_ERR_1004", "invalid request", {"errors": details}), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404 (no route), 405 (method), 400 (a body the parser could not read): the envelope, never
        # Starlette's {"detail": ...}
        code = "LUCID_ERR_1002" if exc.status_code == 404 else "LUCID_ERR_1004"
        return JSONResponse(envelope(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("discovery API: unhandled %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(envelope("LUCID_ERR_1105", "internal error"), status_code=500)

    async def caller(request: Request) -> dict[str, Any]:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.startswith("Bearer ") else ""
        address = request.client.host if request.client else "unknown"
        if not (token and verifier.knows(token)):
            wait = buckets.wait("auth-failures", address, limits.auth_failures_per_ip)
            if wait is not None:
                raise RateLimitedError(f"too many failed authentications from {address}", wait)
        try:
            if not token:
                raise AuthenticationError("missing bearer token")
            claims = verifier.verify_service_token(token)
        except AuthenticationError:
            buckets.take("auth-failures", address, limits.auth_failures_per_ip)
            raise
        wait = buckets.take("service", f"{claims['service_name']}/{claims['cluster']}", limits.per_service)
        if wait is not None:
            raise RateLimitedError(f"service {claims['service_name']} is over {limits.per_service} requests a minute",
                                   wait)
        return claims

    Caller = Annotated[dict[str, Any], Depends(caller)]

    def is_admin(claims: dict[str, Any]) -> bool:
        """Only claims the verifier returned: it has already removed mesh:admin granted by a non-admin key."""
        permissions = claims.get("permissions")
        return isinstance(permissions, list) and ADMIN_PERMISSION in permissions

    def require_owner(claims: dict[str, Any], name: str, cluster: str, plane: str) -> None:
        if is_admin(claims):
            return
        if (claims["service_name"], claims["cluster"], claims["plane"]) != (name, cluster, plane):
            raise SecurityPolicyViolation(f"{claims['service_name']} may not act for service {name}")

    @app.post("/service-discovery/services", status_code=201)
    async def register(body: RegisterBody, claims: Caller) -> dict[str, Any]:
        require_owner(claims, body.serviceName, body.cluster, body.plane)
        sid = await registry.register_service(
            body.serviceName, body.cluster, body.plane, body.host, body.port, body.version,
            body.healthCheckPath, body.healthCheckInterval, body.healthCheckTimeout, body.metadata,
            protocol=body.protocol, ttl=body.ttl,
        )
        return {"serviceId": sid, "serviceName": body.serviceName, "status": "healthy"}

    async def owned(service_id: str, claims: dict[str, Any]):
        reg = await registry.get_registration(service_id)
        require_owner(claims, reg.service_name, reg.cluster, reg.plane)
        return reg

    @app.delete("/service-discovery/services/{service_id}", status_code=204)
    async def deregister(service_id: str, claims: Caller) -> Response:
        await owned(service_id, claims)
        if not await registry.deregister_service(service_id):
            raise ServiceNotFoundError(f"service id {service_id} is not registered")
        return Response(status_code=204)

    @app.put("/service-discovery/services/{service_id}/health")
    async def health(service_id: str, body: HealthBody, claims: Caller) -> dict[str, Any]:
        await owned(service_id, claims)
        if not await registry.update_health_status(service_id, body.status, body.output):
            raise LucidMeshError("health update not recorded (registry unavailable)", error_code="LUCID_ERR_1005")
        mapping = {"passing": "healthy", "warning": "degraded", "critical": "unhealthy"}
        return {
            "serviceId": service_id,
            "status": mapping[body.status],
            "checkStatus": body.status,
            "output": body.output,
            "lastHealthCheck": datetime.now(timezone.utc).isoformat(),
        }

    @app.get("/service-discovery/services")
    async def list_services(
        claims: Caller,
        cluster: str | None = Query(default=None, pattern=r"^[a-z0-9-]+$", max_length=63),
        plane: Literal["ops", "chain", "wallet"] | None = None,
        status: Literal["healthy", "degraded", "unhealthy", "passing", "warning", "critical", "any"] = "any",
        limit: int = Query(default=100, ge=1, le=1000),
        offset: int = Query(default=0, ge=0),
    ) -> dict[str, Any]:
        found = await discovery.discover_services(cluster=cluster, plane=plane, status=status)
        return {"services": found[offset: offset + limit], "total": len(found), "limit": limit, "offset": offset}

    @app.get("/service-discovery/services/{service_name}/resolve")
    async def resolve(
        service_name: str,
        claims: Caller,
        version: str | None = Query(default=None, pattern=r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?$"),
        loadBalance: Literal["round-robin", "least-connections", "random"] = "round-robin",
    ) -> dict[str, Any]:
        return await discovery.resolve_service(service_name, version, loadBalance)

    return app
