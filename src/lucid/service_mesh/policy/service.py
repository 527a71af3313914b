"""One mesh workload: its certificate, inbound listener (mTLS + JWT + policy) and outbound client."""

from __future__ import annotations

import uuid

from lucid.service_mesh.policy.enforcer import MeshAuthorizer
from lucid.service_mesh.policy.mesh_client import MeshClient, MeshReply, TokenSource
from lucid.service_mesh.audit import AuditSink
from lucid.service_mesh.policy.mesh_server import Handler, MeshResponse, MeshServer
from lucid.service_mesh.policy.plane_policy import PlanePolicy
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.identity import ServiceIdentity
from lucid.service_mesh.security.mtls_manager import MTLSManager


async def _echo(request) -> MeshResponse:  # type: ignore[no-untyped-def]
    return MeshResponse(200, {"caller": request.caller.identity.spiffe_id, "path": request.path})


class MeshService:
    """Issue a certificate for the workload, then serve and call other workloads through the mesh."""

    def __init__(
        self,
        service_name: str,
        cluster: str,
        plane: str,
        cert_manager: CertificateManager,
        auth: ServiceAuthProvider,
        handler: Handler | None = None,
        *,
        service_id: str | None = None,
        breakers: BreakerRegistry | None = None,
        policy: PlanePolicy | None = None,
        call_timeout: float = 5.0,
        audit: AuditSink | None = None,
        verifier: ServiceAuthProvider | None = None,
        certificate: tuple[str, str] | None = None,
    ) -> None:
        """``auth`` signs this workload's tokens; ``verifier`` (default: ``auth``) checks callers' tokens,
        e.g. one built from the mesh's JWK set when each service has a key of its own. ``certificate``:
        (cert, key) files the CA issued this workload (with a ``trust_only`` manager); without it the
        manager issues one (it must hold the CA key)."""
        self.identity = ServiceIdentity(service_name, cluster, plane)
        self.service_id = service_id or str(uuid.uuid4())
        self.mtls = MTLSManager(cert_manager)
        self.cert_path, self.key_path = certificate or cert_manager.generate_service_certificate(
            service_name, self.service_id, cluster, plane
        )
        self.server = MeshServer(
            self.mtls.server_context(self.cert_path, self.key_path),
            MeshAuthorizer(self.identity, verifier or auth, policy),
            handler or _echo,
            audit=audit,
        )
        self.client = MeshClient(
            self.mtls.client_context(self.cert_path, self.key_path),
            TokenSource(auth, service_name, self.service_id, cluster, plane),
            breakers=breakers,
            timeout=call_timeout,
            own_certificate=self.cert_path,
        )

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> int:
        return await self.server.start(host=host, port=port)

    @property
    def port(self) -> int:
        return self.server.port

    async def call(self, target: "MeshService | tuple[str, str, int]", method: str, path: str,
                   json: object = None) -> MeshReply:
        """Call another workload (a MeshService, or (service_name, host, port))."""
        if isinstance(target, MeshService):
            name, host, port = target.identity.service_name, "127.0.0.1", target.port
        else:
            name, host, port = target
        return await self.client.call(name, host, port, method, path, json=json)

    async def close(self) -> None:
        await self.client.aclose()
        await self.server.close()

    async def __aenter__(self) -> "MeshService":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
