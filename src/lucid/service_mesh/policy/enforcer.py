"""The policy enforcement point of a service: TLS identity + service JWT + plane policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lucid.service_mesh.errors import AuthenticationError, SecurityPolicyViolation
from lucid.service_mesh.policy.plane_policy import PlanePolicy, canonical_method
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.identity import ServiceIdentity


@dataclass(frozen=True, slots=True)
class CallerContext:
    """A caller that passed every check: its proven identity, its token claims, and the rule that let it in."""

    identity: ServiceIdentity
    claims: dict[str, Any]
    rule: str
    method: str  # the canonical method the policy approved: the only one a handler is given


class MeshAuthorizer:
    """Decides one inbound call. Services must authenticate with BOTH mTLS and a JWT (SPEC)."""

    def __init__(self, local: ServiceIdentity, verifier: ServiceAuthProvider, policy: PlanePolicy | None = None):
        self.local = local
        self.verifier = verifier
        self.policy = policy or PlanePolicy()

    def authorize(self, peer: ServiceIdentity, authorization: str | None, method: str) -> CallerContext:
        """Raise AuthenticationError/SecurityPolicyViolation (1203) unless the call is allowed."""
        method = canonical_method(method)  # before anything else: one method decided once
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthenticationError("missing bearer token")
        claims = self.verifier.verify_service_token(authorization[7:].strip())
        if (claims["service_name"], claims["cluster"], claims["plane"]) != (
            peer.service_name,
            peer.cluster,
            peer.plane,
        ):
            raise SecurityPolicyViolation(
                "token identity does not match the TLS peer",
                details={"peer": peer.spiffe_id, "token_service": claims["service_name"]},
            )
        decision = self.policy.enforce(peer, self.local, method)
        return CallerContext(identity=peer, claims=claims, rule=decision.reason, method=method)
