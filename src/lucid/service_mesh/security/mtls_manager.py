"""Mutual TLS for Lucid services: certificate checks, TLS contexts, and the peer's SPIFFE identity."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable

from cryptography import x509

from lucid.service_mesh.errors import MTLSVerificationError
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.identity import ServiceIdentity, identity_from_certificate

log = logging.getLogger(__name__)


class MTLSManager:
    """Checks service certificates against the mesh CA and builds the TLS contexts services use."""

    def __init__(self, cert_manager: CertificateManager) -> None:
        self.cert_manager = cert_manager

    # ------------------------------------------------------------------ certificate checks
    def verify_client_certificate(
        self,
        cert_path: str,
        allowed_planes: Iterable[str],
        allowed_clusters: Iterable[str] | None = None,
    ) -> dict[str, object]:
        """Verify a certificate file and authorise its plane/cluster.

        The chain, validity and identity fields are checked first (an untrusted certificate's claims
        mean nothing): failure is LUCID_ERR_1204. A trusted identity outside ``allowed_planes`` or a
        non-empty ``allowed_clusters`` is LUCID_ERR_1203.
        """
        cert = self.cert_manager.load_certificate(cert_path)
        return self._authorise(cert, allowed_planes, allowed_clusters)

    def verify_peer_certificate(
        self,
        der: bytes,
        allowed_planes: Iterable[str] | None = None,
        allowed_clusters: Iterable[str] | None = None,
    ) -> dict[str, object]:
        """Same as ``verify_client_certificate`` for a DER certificate taken from a live connection."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise MTLSVerificationError(f"unreadable peer certificate: {exc}") from exc
        return self._authorise(cert, allowed_planes, allowed_clusters)

    def _authorise(
        self, cert: x509.Certificate, allowed_planes: Iterable[str] | None, allowed_clusters: Iterable[str] | None
    ) -> dict[str, object]:
        try:
            ident = self.cert_manager.verify_chain(cert)
        except MTLSVerificationError:
            raise
        except Exception as exc:  # any parser surprise is still a refused certificate
            raise MTLSVerificationError(f"certificate verification failed: {exc}") from exc
        planes = set(allowed_planes) if allowed_planes is not None else None
        if planes is not None and ident.plane not in planes:
            raise MTLSVerificationError(
                f"plane {ident.plane!r} not allowed (allowed: {sorted(planes)})", error_code="LUCID_ERR_1203"
            )
        clusters = set(allowed_clusters or ())
        if clusters and ident.cluster not in clusters:
            raise MTLSVerificationError(
                f"cluster {ident.cluster!r} not allowed (allowed: {sorted(clusters)})", error_code="LUCID_ERR_1203"
            )
        return {
            "serviceName": ident.service_name,
            "plane": ident.plane,
            "cluster": ident.cluster,
            "spiffeId": ident.spiffe_id,
            "verified": True,
        }

    # ------------------------------------------------------------------ TLS contexts
    def server_context(self, cert_path: str, key_path: str) -> ssl.SSLContext:
        """TLS server context that demands a client certificate chaining to the mesh root."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=self.cert_manager.trust_bundle_path)
        ctx.load_cert_chain(cert_path, key_path)
        return ctx

    def client_context(self, cert_path: str, key_path: str) -> ssl.SSLContext:
        """TLS client context presenting our certificate and checking the server's name and chain."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=self.cert_manager.trust_bundle_path)
        ctx.load_cert_chain(cert_path, key_path)
        # MeshClient checks its own certificate's validity before calling (1204 is ours, not the peer's)
        ctx.lucid_certificate_path = cert_path  # type: ignore[attr-defined]
        return ctx

    @staticmethod
    def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> ServiceIdentity:
        """The SPIFFE identity of the peer of an established (already chain-verified) TLS connection."""
        if ssl_object is None:
            raise MTLSVerificationError("connection is not TLS")
        der = ssl_object.getpeercert(binary_form=True)
        if not der:
            raise MTLSVerificationError("peer presented no certificate")
        return identity_from_certificate(x509.load_der_x509_certificate(der))

    @staticmethod
    def server_hostname(service_name: str) -> str:
        """The DNS SAN a client checks when it connects to ``service_name``."""
        return f"{service_name}.lucid.internal"
