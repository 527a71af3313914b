"""JWT bearer auth (PyJWT) with the role/permission matrix of the reference notes.

A token must carry ``sub``, ``role``, ``exp`` and ``iat`` and the configured issuer; a ``permissions``
claim can only narrow the role's permissions, never widen them. Worker tokens may carry ``node_id`` and
then act only for that node.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from ..errors import AuthenticationError, PermissionDeniedError
from .settings import NodeAPISettings

__all__ = ["Principal", "ROLE_PERMISSIONS", "JWTVerifier", "mint_token", "ALL_PERMISSIONS"]

ALL_PERMISSIONS = frozenset({
    "node:read", "node:write", "node:start", "node:stop", "node:restart", "pool:read", "pool:write",
    "pool:assign", "resource:read", "resource:metrics", "poot:read", "poot:validate", "poot:batch",
    "payout:read", "payout:process", "payout:batch", "metrics:read",
})
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "worker": frozenset({"node:read", "resource:read", "poot:validate"}),
    "validator": frozenset({"node:read", "poot:read", "poot:validate", "poot:batch"}),
    "admin": frozenset({"node:read", "node:write", "node:start", "node:stop", "node:restart", "pool:read",
                        "pool:write", "pool:assign", "resource:read", "resource:metrics", "poot:read",
                        "payout:read", "payout:process", "payout:batch", "metrics:read"}),
    "super_admin": ALL_PERMISSIONS,
}
ADMIN_ROLES = frozenset({"admin", "super_admin"})


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    permissions: frozenset[str]
    node_id: str | None = None

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            raise PermissionDeniedError(f"Permission {permission} required")

    def require_node(self, node_id: str) -> None:
        """A token bound to a node acts only for that node."""
        if self.node_id is not None and self.node_id != node_id:
            raise PermissionDeniedError("Token is bound to another node")


class JWTVerifier:
    def __init__(self, settings: NodeAPISettings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        if settings.jwt_public_key:
            self.key: Any = settings.jwt_public_key
            self.algorithms = ["EdDSA", "RS256", "ES256"]
        else:
            if settings.jwt_secret is not None and len(settings.jwt_secret) < 32:
                raise ValueError("LUCID_NODE_JWT_SECRET must be at least 32 characters (RFC 7518 3.2)")
            self.key = settings.effective_secret()
            self.algorithms = ["HS256"]

        # Verified tokens, by their exact text: a bearer token is sent on every request and checking its
        # HMAC (PyJWT re-prepares the key each time) was a fifth of a PoOT request's CPU. The same bytes
        # with the same key always verify the same way; expiry is still checked on every use.
        self._verified: OrderedDict[str, tuple[float, float, Principal]] = OrderedDict()
        self._max_cached = 10_000

    def verify(self, token: str) -> Principal:
        hit = self._verified.get(token)
        if hit is not None:
            not_before, expires, principal = hit
            now = time.time()
            if not_before <= now < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, claims = self._decode(token)
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            nbf = claims.get("nbf", claims.get("iat", 0))
            self._verified[token] = (float(nbf) if isinstance(nbf, int | float) else 0.0, float(exp), principal)
            while len(self._verified) > self._max_cached:
                self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, dict[str, Any]]:
        try:
            claims = jwt.decode(token, self.key, algorithms=self.algorithms, issuer=self.issuer,
                                audience=self.audience, options={"require": ["exp", "iat", "sub", "iss"],
                                                                 "verify_aud": self.audience is not None})
        except jwt.PyJWTError as exc:
            raise AuthenticationError(f"Invalid token: {type(exc).__name__}") from None
        role = claims.get("role")
        # Type first: a JSON object/array is unhashable and would crash the look-up into a 500.
        if not isinstance(role, str) or role not in ROLE_PERMISSIONS:
            raise AuthenticationError("Invalid token: unknown role")
        perms = ROLE_PERMISSIONS[role]
        # Narrowing claims fail closed: one of the wrong type is refused, never ignored (ignoring it
        # would give the token the whole role, or unbind a worker token from its node).
        if "permissions" in claims:
            requested = claims["permissions"]
            if not isinstance(requested, list) or not all(isinstance(p, str) for p in requested):
                raise AuthenticationError("Invalid token: permissions must be a list of strings")
            perms = perms & frozenset(requested)
        node_id = claims.get("node_id")
        if node_id is not None and not isinstance(node_id, str):
            raise AuthenticationError("Invalid token: node_id must be a string")
        return Principal(str(claims["sub"]), role, perms, node_id), claims


def mint_token(secret: str, *, role: str, subject: str | None = None, node_id: str | None = None,
               ttl_seconds: int = 3600, issuer: str = "lucid-node-management", audience: str | None = None,
               permissions: list[str] | None = None, algorithm: str = "HS256") -> str:
    """Issue a token (operators via ``lucid token``; tests with their own key)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject or f"{role}-{uuid.uuid4().hex[:8]}", "role": role, "iat": now,
                              "nbf": now, "exp": now + ttl_seconds, "iss": issuer, "jti": uuid.uuid4().hex,
                              "token_type": "node_access"}
    if node_id:
        claims["node_id"] = node_id
    if audience:
        claims["aud"] = audience
    if permissions is not None:
        claims["permissions"] = permissions
    return jwt.encode(claims, secret, algorithm=algorithm)
