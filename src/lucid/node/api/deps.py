"""Request dependencies: the container, and ``authorize(permission)`` which rate-limits then authenticates.

Order matters: an unauthenticated client is limited per IP at the public tier *before* the 401, so token
guessing is throttled too; an authenticated one per subject at its role's tier and the path's tier.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request

from ..errors import AuthenticationError, RateLimitExceededError
from .auth import ADMIN_ROLES, Principal
from .container import NodeContainer

__all__ = ["container_of", "authorize", "bearer_token", "charge_rate_limits"]


def container_of(request: Request) -> NodeContainer:
    return request.app.state.container  # type: ignore[no-any-return]


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _limit(c: NodeContainer, tier: str, identity: str, per_minute: int) -> None:
    try:
        c.limiter.check(tier, identity, per_minute)
    except RateLimitExceededError:
        c.metrics.rate_limited.labels(tier).inc()
        raise


def authorize(permission: str) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    async def dependency(request: Request) -> Principal:
        c = container_of(request)
        limits = c.settings.rate_limits
        token = bearer_token(request.headers.get("authorization", ""))
        principal: Principal | None = None
        error: AuthenticationError | None = None
        if token is None:
            error = AuthenticationError("Authentication required")
        else:
            try:
                principal = c.verifier.verify(token)
            except AuthenticationError as exc:
                error = exc
        if principal is None:
            client = request.client.host if request.client else "unknown"
            _limit(c, "public", client, limits.public)
            assert error is not None
            raise error
        charge_rate_limits(c, principal, request.url.path)
        principal.require(permission)
        return principal

    return dependency


def charge_rate_limits(c: NodeContainer, principal: Principal, path: str) -> None:
    """Take one token from the principal's role tier and from the path's tier (PoOT, payouts), or raise
    RateLimitExceededError. Shared by ``authorize`` and the hot routes, so both count alike."""
    limits = c.settings.rate_limits
    tier, per_minute = ("admin", limits.admin) if principal.role in ADMIN_ROLES else ("node", limits.node)
    _limit(c, tier, principal.subject, per_minute)
    if "/poot/" in path:
        _limit(c, "poot", principal.subject, limits.poot)
    elif "/payouts" in path:
        _limit(c, "payout", principal.subject, limits.payout)
