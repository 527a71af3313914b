"""The OpenAPI document as the server behaves, not as FastAPI assumes.

FastAPI documents a 422 ``{"detail": [...]}`` for every validated route and knows nothing of our
authentication. The server answers invalid input with 400 and the error envelope, every protected route
with 401 (``WWW-Authenticate: Bearer``), 403 and 429 (``Retry-After``), and any failure with 500, all in
the envelope. This module rewrites the generated document once, so clients generated from it handle
what they will really get."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["install_openapi", "PUBLIC_PATHS"]

# Routes that answer without a token (everything else requires a bearer JWT).
PUBLIC_PATHS = frozenset({"/health"})

_ENVELOPE = {
    "title": "ErrorEnvelope", "type": "object", "required": ["error"], "additionalProperties": False,
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "details", "request_id", "timestamp"],
        "properties": {
            "code": {"type": "string", "pattern": "^LUCID_ERR_[0-9]{4}$", "examples": ["LUCID_ERR_5000"]},
            "message": {"type": "string"},
            "details": {"type": "object"},
            "request_id": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
        }}},
}
_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": _REF}}}
    if headers:
        out["headers"] = headers
    return out


def _rewrite(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["ErrorEnvelope"] = _ENVELOPE
    components["securitySchemes"] = {"bearerAuth": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "HS256 JWT minted by the operator (lucid.node.api.auth.mint_token): role, permissions"}}
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("422", None)
            if op.get("requestBody") or op.get("parameters"):
                responses["400"] = _error("Invalid input (the envelope's details.errors names each field; "
                                          "input values are never echoed)")
            if path not in PUBLIC_PATHS:
                op["security"] = [{"bearerAuth": []}]
                responses["401"] = _error("Missing or invalid bearer token (LUCID_ERR_1203)", {
                    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="lucid-node"'}})
                responses["403"] = _error("The token's role or permissions do not allow this (LUCID_ERR_1203)")
                responses["429"] = _error("Rate limit exceeded (LUCID_ERR_4291)", {
                    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}})
            if op.get("requestBody") or any(p.get("in") == "path" for p in op.get("parameters", [])):
                responses.setdefault("404", _error("A node, pool, batch or payout named in the path or the "
                                                   "body does not exist"))
            if method in ("post", "put", "patch", "delete"):
                responses.setdefault("409", _error("Conflicts with the stored state (an existing id, a batch "
                                                   "id or idempotency key used for another payload, a state "
                                                   "that does not allow the change)"))
            if op.get("requestBody"):
                responses["413"] = _error("Body larger than the server's limit")
            responses["500"] = _error("Internal error (LUCID_ERR_5999); nothing of the request was stored")
    return doc


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the rewritten document (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _rewrite(get_openapi(title=app.title, version=app.version, routes=app.routes,
                                                      description=app.description))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
