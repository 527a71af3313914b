"""Workload identity: the SPIFFE id carried in a service certificate's URI SAN."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509

from lucid.service_mesh.errors import MTLSVerificationError

TRUST_DOMAIN = "lucid.onion"
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """Who a peer is: service, cluster and plane, as proven by its certificate or token."""

    service_name: str
    cluster: str
    plane: str

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://{TRUST_DOMAIN}/{self.plane}/{self.cluster}/{self.service_name}"

    @classmethod
    def from_spiffe_id(cls, uri: str) -> "ServiceIdentity":
        """Parse ``spiffe://lucid.onion/<plane>/<cluster>/<service>``; anything else is refused (1204)."""
        prefix = f"spiffe://{TRUST_DOMAIN}/"
        if not uri.startswith(prefix):
            raise MTLSVerificationError(f"not a Lucid SPIFFE id: {uri!r}")
        parts = uri[len(prefix):].split("/")
        if len(parts) != 3 or not all(_SEGMENT.match(p) for p in parts):
            raise MTLSVerificationError(f"malformed SPIFFE id: {uri!r}")
        plane, cluster, service = parts
        return cls(service_name=service, cluster=cluster, plane=plane)


def validate_segment(value: str, what: str) -> str:
    """Names that end up in certificates, file names and SPIFFE ids must be plain DNS labels."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise ValueError(f"invalid {what}: {value!r} (lowercase letters, digits and '-', 1-63 chars)")
    return value


def spiffe_ids_of(cert: x509.Certificate) -> list[str]:
    """All spiffe:// URI SANs of a certificate (a valid service certificate has exactly one)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]


def identity_from_certificate(cert: x509.Certificate) -> ServiceIdentity:
    """The identity a certificate proves: exactly one SPIFFE URI, consistent with its CN and OU."""
    uris = spiffe_ids_of(cert)
    if len(uris) != 1:
        raise MTLSVerificationError(f"certificate must carry exactly one SPIFFE id, found {len(uris)}")
    ident = ServiceIdentity.from_spiffe_id(uris[0])
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ous = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cns or cns[0].value != ident.service_name:
        raise MTLSVerificationError("certificate CN does not match its SPIFFE id")
    if not ous or ous[0].value != f"plane-{ident.plane}":
        raise MTLSVerificationError("certificate OU does not match its SPIFFE plane")
    return ident
