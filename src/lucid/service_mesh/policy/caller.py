"""A client-only member of the mesh (see ``MeshCaller``)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

__all__ = ["MeshCaller"]


class MeshCaller:
    """A client-only mesh member: mTLS with a certificate the mesh CA issues it, its own JWT, each target
    resolved in discovery on every call (a restarted service on a new port is found), through a circuit
    breaker per target. The node API's way to api-gateway, and the operator's (``lucid mesh call``)."""

    def __init__(self, kv_url: str, *, trust_dir: str | Path, cert: str | Path, key: str | Path,
                 jwt_key: str | Path, service_name: str, cluster: str, plane: str, timeout: float = 10.0,
                 breaker_threshold: int = 3, recovery_timeout: float = 5.0) -> None:
        """``cert``/``key``: the certificate the mesh CA issued this member; ``trust_dir``: the CA's public
        certificates (``ca.crt`` and ``ca-intermediate.crt``). The CA key never reaches a caller."""
        self.kv_url, self.trust_dir, self.jwt_key = kv_url, Path(trust_dir), str(jwt_key)
        self.cert, self.key = str(cert), str(key)
        self.service_name, self.cluster, self.plane = service_name, cluster, plane
        self.breaker_threshold, self.recovery_timeout = breaker_threshold, recovery_timeout
        self.timeout = timeout
        self._client: Any = None
        self._discovery: Any = None
        self._kv: Any = None
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        from backends.kv import open_kv
        from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
        from lucid.service_mesh.errors import UpstreamCallError
        from lucid.service_mesh.policy.mesh_client import MeshClient, TokenSource
        from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry
        from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
        from lucid.service_mesh.security.cert_manager import CertificateManager
        from lucid.service_mesh.security.mtls_manager import MTLSManager

        certs = CertificateManager.trust_only(self.trust_dir / "ca.crt")
        service_id = f"{self.service_name}-{uuid.uuid4().hex[:12]}"
        cert, key = self.cert, self.key
        auth = ServiceAuthProvider(private_key_path=self.jwt_key)
        self._kv = open_kv(self.kv_url)
        await self._kv.connect()
        self._discovery = AsyncServiceDiscoveryClient(self._kv)
        await self._discovery.start()
        self._client = MeshClient(MTLSManager(certs).client_context(cert, key),
                                  TokenSource(auth, self.service_name, service_id, self.cluster, self.plane),
                                  breakers=BreakerRegistry(failure_threshold=self.breaker_threshold,
                                                           recovery_timeout=self.recovery_timeout,
                                                           failure_exceptions=(UpstreamCallError,)),
                                  timeout=self.timeout, own_certificate=cert)

    async def discovery(self) -> Any:
        async with self._lock:
            if self._client is None:
                await self._start()
        return self._discovery

    async def call(self, target: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """(status, JSON) of one call; a mesh refusal (policy, breaker, no instance) is its error envelope."""
        from lucid.service_mesh.errors import LucidMeshError

        discovery = await self.discovery()
        try:
            endpoint = (await discovery.resolve_service(target))["endpoint"]
            reply = await self._client.call(target, endpoint["host"], endpoint["port"], method, path, json=body)
        except LucidMeshError as exc:
            return exc.http_status, {"error": {"code": exc.error_code, "message": exc.message}}
        return reply.status_code, reply.json()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            await self._discovery.close()
            await self._kv.close()
            self._client = None
