"""The plane isolation rules of SPEC.md, decided on verified identities (default deny).

- same plane: allowed, any method;
- ops -> chain: read-only (GET, HEAD);
- api-gateway (ops) -> tron-payment (wallet): GET and POST; no other caller reaches the wallet plane;
- everything else (chain->ops, chain->wallet, wallet->chain, wallet->ops, ...): denied with 1203.
An identity whose cluster is unknown or does not belong to the plane it claims is denied as well.
"""

from __future__ import annotations

from dataclasses import dataclass

from lucid.service_mesh.errors import MethodNotAllowedError, SecurityPolicyViolation
from lucid.service_mesh.planes import CLUSTER_PLANE
from lucid.service_mesh.security.identity import ServiceIdentity

# HTTP methods are case-sensitive (RFC 9110 9.1): "GeT" is not GET. The policy decides on exactly these
# tokens and the server hands the handler the same string, so no handler can see a method the policy
# classified differently.
CANONICAL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
READ_ONLY = frozenset({"GET", "HEAD"})
WALLET_METHODS = frozenset({"GET", "POST"})
WALLET_GATEKEEPER = "api-gateway"


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """Outcome of one check, with the rule that decided it (logged and returned to the caller)."""

    allowed: bool
    reason: str


def canonical_method(method: str) -> str:
    """The method itself if canonical; MethodNotAllowedError (405, LUCID_ERR_1203) otherwise."""
    if method not in CANONICAL_METHODS:
        raise MethodNotAllowedError(f"method {method[:16]!r} is not a canonical HTTP method",
                                    details={"allowed": sorted(CANONICAL_METHODS)})
    return method


class PlanePolicy:
    """Stateless decision function; ``enforce`` raises SecurityPolicyViolation (LUCID_ERR_1203)."""

    def decide(self, source: ServiceIdentity, destination: ServiceIdentity, method: str) -> PolicyDecision:
        if method not in CANONICAL_METHODS:
            return PolicyDecision(False, f"method {method[:16]!r} is not canonical")
        for ident, role in ((source, "source"), (destination, "destination")):
            home = CLUSTER_PLANE.get(ident.cluster)
            if home is None:
                return PolicyDecision(False, f"{role} cluster {ident.cluster!r} is not a Lucid cluster")
            if home != ident.plane:
                return PolicyDecision(False, f"{role} cluster {ident.cluster!r} is not in plane {ident.plane!r}")
        sp, dp = source.plane, destination.plane
        if sp == dp:
            return PolicyDecision(True, f"same plane ({sp})")
        if sp == "ops" and dp == "chain":
            if method in READ_ONLY:
                return PolicyDecision(True, "ops->chain read-only")
            return PolicyDecision(False, f"ops->chain is read-only; {method} denied")
        if dp == "wallet":
            if source.cluster != WALLET_GATEKEEPER:
                return PolicyDecision(False, f"only {WALLET_GATEKEEPER} may call the wallet plane")
            if method in WALLET_METHODS:
                return PolicyDecision(True, "api-gateway->tron-payment")
            return PolicyDecision(False, f"{method} not allowed on the wallet plane")
        return PolicyDecision(False, f"{sp}->{dp} denied (default deny)")

    def enforce(self, source: ServiceIdentity, destination: ServiceIdentity, method: str) -> PolicyDecision:
        canonical_method(method)
        decision = self.decide(source, destination, method)
        if not decision.allowed:
            raise SecurityPolicyViolation(
                f"{source.spiffe_id} -> {destination.spiffe_id} {method}: {decision.reason}",
                details={"source": source.spiffe_id, "destination": destination.spiffe_id, "method": method},
            )
        return decision


def decide_message(source: str, destination: str, account: str | None = None) -> PolicyDecision:
    """Whether ``source`` may queue a message for ``destination``, by the same plane rules as a call.

    A message may cross a boundary that some call may cross: same plane; ops -> chain (seed 000 sends
    api-gateway -> blockchain-core ``create_session``); api-gateway -> tron-payment and no other way into
    the wallet plane; every other crossing (chain -> ops, wallet -> anything, ...) is refused. Services
    outside the Lucid plane map (applications of their own) may message each other and ops services, but
    never a chain or wallet service, and no chain or wallet service messages them. ``account``: the broker account the message goes out under; an account that is a Lucid service
    may send only as itself (its ``source`` is otherwise a claim the broker cannot back).
    """
    if account is not None and account in CLUSTER_PLANE and source != account:
        return PolicyDecision(False, f"account {account!r} may not send as {source!r}")
    sp, dp = CLUSTER_PLANE.get(source), CLUSTER_PLANE.get(destination)
    if sp is None or dp is None:
        protected = [p for p in (sp, dp) if p in ("chain", "wallet")]
        if protected:
            return PolicyDecision(False, f"{source} -> {destination}: the {protected[0]} plane exchanges messages "
                                         "only with services on the plane map")
        return PolicyDecision(True, "outside the plane map")
    src, dst = ServiceIdentity(source, source, sp), ServiceIdentity(destination, destination, dp)
    decision = _POLICY.decide(src, dst, "POST")
    return decision if decision.allowed else (_POLICY.decide(src, dst, "GET") if sp != dp else decision)


_POLICY = PlanePolicy()
