"""Identities made once per stack: the mesh CA and each service's certificate and token key, the JWK set
the discovery API and the workloads verify with, the swarm credential authority, and the secrets of the
node API. Everything is written under ``state/pki`` and ``state/secrets`` with owner-only modes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.files import write_atomic
from stack.state import StackState

__all__ = ["MESH_SERVICES", "StackIdentity", "ensure_identity"]

#: Mesh members with a token key: (service, cluster, plane).
MESH_SERVICES = (("api-gateway", "api-gateway", "ops"), ("tron-payment", "tron-payment", "wallet"),
                 ("node-management", "node-management", "ops"), ("operator", "admin-interface", "ops"))
#: Members whose tokens may carry mesh:admin (the operator acts for any service; the services may not).
MESH_ADMINS = frozenset({"operator"})
SWARM_CREDENTIAL_TTL = 24 * 3600


@dataclass(frozen=True)
class StackIdentity:
    certs: CertificateManager
    trust_root: Path
    scrape_cert: Path
    scrape_key: Path
    node_jwt_secret: str
    node_metrics_token: Path


def mesh_certificates(state: StackState) -> CertificateManager:
    ca = state.mesh_ca
    ca.mkdir(parents=True, exist_ok=True, mode=0o700)
    return CertificateManager(str(ca / "ca.crt"), str(ca / "ca.key"), str(ca / "certs"))


def write_jwks(state: StackState) -> Path:
    """The JWK set of every mesh member's token key (public halves only), each bound to its owner: the
    verifiers trust all of them, so without the owner one member's key would sign for any other."""
    keys: list[dict[str, object]] = []
    for service, _, _ in MESH_SERVICES:
        keys += ServiceAuthProvider(private_key_path=str(state.jwt_key(service)), owner=service,
                                    admin=service in MESH_ADMINS).jwks()["keys"]
    write_atomic(state.jwks, json.dumps({"keys": keys}, indent=1).encode(), 0o644)
    return state.jwks


def ensure_identity(state: StackState) -> StackIdentity:
    from infrafabric.coordinator.credentials import CredentialAuthority
    from lucid.node.api.auth import mint_token

    certs = mesh_certificates(state)
    trust_root = certs.export_trust(trust_dir(state))
    (state.root / "pki" / "jwt").mkdir(parents=True, exist_ok=True, mode=0o700)
    write_jwks(state)
    CredentialAuthority.load_or_create(state.authority)
    scrape_cert, scrape_key = certs.generate_service_certificate("prometheus", "prometheus", "admin-interface", "ops")
    node_secret = state.secret("node-jwt-secret")
    token = mint_token(node_secret, role="admin", subject="prometheus", ttl_seconds=30 * 24 * 3600)
    return StackIdentity(certs, trust_root, Path(scrape_cert), Path(scrape_key), node_secret,
                         state.write_secret("prometheus-node-token", token))


def issue_service_certificate(state: StackState, service: str, cluster: str, plane: str) -> tuple[Path, Path]:
    """A fresh certificate for one service (made at each of its starts: 90 days, so never stale), under
    ``pki/services``; the service gets these two files and the public trust bundle, never the CA key."""
    certs = mesh_certificates(state)
    cert, key = certs.generate_service_certificate(service, service, cluster, plane)
    out = state.root / "pki" / "services"
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(cert, out / f"{service}.crt")
    os.replace(key, out / f"{service}.key")
    return out / f"{service}.crt", out / f"{service}.key"


def trust_dir(state: StackState) -> Path:
    return state.root / "pki" / "trust"


def issue_swarm_credential(state: StackState, name: str, role: str = "swarm") -> Path:
    """A fresh credential (each start of a swarm worker gets one: they are short-lived on purpose)."""
    from infrafabric.coordinator.credentials import CredentialAuthority, write_credential

    token = CredentialAuthority.load_or_create(state.authority).issue(role, name, SWARM_CREDENTIAL_TTL)  # type: ignore[arg-type]
    path = state.credential(name)
    write_credential(path, token)
    return path
