"""Workload identity: service certificates, mutual TLS and service JWTs."""

from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager
from lucid.service_mesh.security.identity import ServiceIdentity
from lucid.service_mesh.security.mtls_manager import MTLSManager

__all__ = ["CertificateManager", "MTLSManager", "ServiceAuthProvider", "ServiceIdentity"]
