"""Error envelope ``{"error": {code, message, details, request_id, timestamp}}`` for every failure."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import AuthenticationError, NodeManagementError, RateLimitExceededError
from ..models.node_models import utcnow
from .request_context import request_id_var

__all__ = ["envelope_response", "domain_error_response", "install_error_handlers"]

_log = logging.getLogger("lucid.node.api")


def envelope_response(status: int, code: str, message: str, request_id: str | None = None,
                      details: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {},
                      "request_id": request_id or request_id_var.get(), "timestamp": utcnow().isoformat()}}
    return JSONResponse(body, status_code=status, headers=headers)


def domain_error_response(exc: NodeManagementError) -> JSONResponse:
    """The envelope of a domain error (its own status and code; Retry-After on a 429)."""
    headers = None
    if isinstance(exc, RateLimitExceededError):
        headers = {"Retry-After": str(exc.retry_after)}
    elif isinstance(exc, AuthenticationError):  # RFC 6750: a 401 names the scheme it wants
        headers = {"WWW-Authenticate": 'Bearer realm="lucid-node"'}
    if exc.http_status >= 500:
        _log.error("internal error %s: %s", exc.error_code, exc.message)
    return envelope_response(exc.http_status, exc.error_code, exc.message, details=exc.details, headers=headers)


def _clean_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors without the rejected input: user payloads are never echoed back."""
    return [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type", "")}
            for e in errors]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NodeManagementError)
    async def _domain(_req: Request, exc: NodeManagementError) -> JSONResponse:
        return domain_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope_response(400, "LUCID_ERR_5000", "Invalid request", details={"errors": _clean_errors(
            list(exc.errors()))})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "LUCID_ERR_5999" if exc.status_code >= 500 else "LUCID_ERR_5000"
        return envelope_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        _log.exception("unhandled %s", type(exc).__name__)
        return envelope_response(500, "LUCID_ERR_5999", "Internal error")
