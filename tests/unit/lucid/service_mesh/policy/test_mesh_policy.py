"""PlanePolicy: the SPEC.md matrix, decided on identities (default deny, 1203)."""

from __future__ import annotations

import pytest

from lucid.service_mesh.errors import SecurityPolicyViolation
from lucid.service_mesh.policy import CLUSTER_PLANE, PlanePolicy
from lucid.service_mesh.security.identity import ServiceIdentity


def ident(cluster: str, plane: str | None = None) -> ServiceIdentity:
    return ServiceIdentity(cluster, cluster, plane or CLUSTER_PLANE[cluster])


ALLOWED = [
    ("api-gateway", "session-management", "POST"),
    ("node-management", "admin-interface", "DELETE"),
    ("blockchain-core", "storage-database", "PUT"),
    ("api-gateway", "blockchain-core", "GET"),
    ("node-management", "storage-database", "GET"),
    ("api-gateway", "tron-payment", "POST"),
    ("api-gateway", "tron-payment", "GET"),
    ("tron-payment", "tron-payment", "POST"),
]
DENIED = [
    ("api-gateway", "blockchain-core", "POST"),
    ("node-management", "blockchain-core", "DELETE"),
    ("node-management", "tron-payment", "POST"),
    ("admin-interface", "tron-payment", "GET"),
    ("blockchain-core", "api-gateway", "GET"),
    ("blockchain-core", "tron-payment", "POST"),
    ("tron-payment", "blockchain-core", "GET"),
    ("tron-payment", "api-gateway", "GET"),
    ("storage-database", "node-management", "GET"),
    ("api-gateway", "tron-payment", "DELETE"),
]


@pytest.mark.parametrize("src, dst, method", ALLOWED)
def test_allowed(src: str, dst: str, method: str) -> None:
    decision = PlanePolicy().enforce(ident(src), ident(dst), method)
    assert decision.allowed


@pytest.mark.parametrize("method", ["get", "GeT", "Get", "head", "POST ", "", "G\x00ET", "TRACE", "CONNECT"])
@pytest.mark.parametrize("src, dst", [("node-management", "storage-database"), ("node-management", "blockchain-core")])
def test_non_canonical_methods_are_refused_everywhere(src: str, dst: str, method: str) -> None:
    """The policy no longer upper-cases: a method it would classify one way must reach no handler as
    another (GeT from ops to chain was allowed as a read and handled as a write)."""
    from lucid.service_mesh.errors import MethodNotAllowedError

    assert not PlanePolicy().decide(ident(src), ident(dst), method).allowed
    with pytest.raises(MethodNotAllowedError) as info:
        PlanePolicy().enforce(ident(src), ident(dst), method)
    assert info.value.error_code == "LUCID_ERR_1203" and info.value.http_status == 405


@pytest.mark.parametrize("src, dst, method", DENIED)
def test_denied_with_1203(src: str, dst: str, method: str) -> None:
    policy = PlanePolicy()
    assert not policy.decide(ident(src), ident(dst), method).allowed
    with pytest.raises(SecurityPolicyViolation) as exc_info:
        policy.enforce(ident(src), ident(dst), method)
    assert exc_info.value.error_code == "LUCID_ERR_1203"


def test_identity_claiming_the_wrong_plane_is_denied() -> None:
    spoof = ServiceIdentity("blockchain-core", "blockchain-core", "ops")  # chain cluster claiming ops
    assert not PlanePolicy().decide(spoof, ident("api-gateway"), "GET").allowed


def test_unknown_cluster_is_denied() -> None:
    stranger = ServiceIdentity("x-svc", "x-cluster", "ops")
    assert not PlanePolicy().decide(stranger, ident("api-gateway"), "GET").allowed
    assert not PlanePolicy().decide(ident("api-gateway"), stranger, "GET").allowed


def test_every_cross_plane_pair_outside_the_rules_is_denied() -> None:
    policy = PlanePolicy()
    allowed_cross = {("ops", "chain"), ("ops", "wallet")}
    for src in CLUSTER_PLANE:
        for dst in CLUSTER_PLANE:
            s, d = ident(src), ident(dst)
            if s.plane != d.plane and (s.plane, d.plane) not in allowed_cross:
                for method in ("GET", "POST"):
                    assert not policy.decide(s, d, method).allowed, (src, dst, method)
