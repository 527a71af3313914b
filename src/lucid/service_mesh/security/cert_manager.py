"""Service certificates for Lucid workloads, issued by a local two-level CA.

The manager creates its CA (root + intermediate) when none exists, issues leaf certificates with the
identity fields of SPEC.md (CN, O=Lucid, OU=plane-<plane>, one SPIFFE URI SAN, three DNS SANs, EKU
server+client), verifies them against the chain, and renews them before expiry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from lucid.service_mesh.errors import CertificateError, InvalidServiceConfigError, MTLSVerificationError
from lucid.service_mesh.planes import PLANES
from lucid.service_mesh.security.files import write_atomic
from lucid.service_mesh.security.identity import ServiceIdentity, identity_from_certificate, validate_segment

log = logging.getLogger(__name__)

ROOT_CA_NAME = "Lucid Root CA"
INTERMEDIATE_CA_NAME = "Lucid Service Mesh Intermediate CA"
_SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_UTC = dt.timezone.utc


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_certs(path: str | os.PathLike[str]) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())


class CertificateManager:
    """Local CA plus service-certificate issuance, verification and renewal.

    ``ca_cert_path``/``ca_key_path`` hold the root CA (the trust anchor peers load); the issuing
    intermediate lives beside them as ``<stem>-intermediate.crt/.key``.
    """

    def __init__(
        self,
        ca_cert_path: str = "/etc/certs/ca.crt",
        ca_key_path: str = "/etc/certs/ca.key",
        cert_output_dir: str = "/etc/certs/services",
        *,
        root_key_size: int = 4096,
        intermediate_key_size: int = 3072,
        leaf_key_size: int = 2048,
        renew_before_days: int = 30,
    ) -> None:
        self.ca_cert_path = Path(ca_cert_path)
        self.ca_key_path = Path(ca_key_path)
        self.cert_output_dir = Path(cert_output_dir)
        self.intermediate_cert_path = self.ca_cert_path.with_name(f"{self.ca_cert_path.stem}-intermediate.crt")
        self.intermediate_key_path = self.ca_key_path.with_name(f"{self.ca_key_path.stem}-intermediate.key")
        self.leaf_key_size = leaf_key_size
        self.renew_before_days = renew_before_days
        self._lock = threading.Lock()
        self.cert_output_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_ca(root_key_size, intermediate_key_size)

    @classmethod
    def trust_only(cls, ca_cert_path: str | os.PathLike[str]) -> "CertificateManager":
        """A verifier that holds no CA key: the root at ``ca_cert_path`` and the intermediate beside it
        (``<stem>-intermediate.crt``). What a workload gets: it checks peers, it cannot mint identities."""
        self = cls.__new__(cls)
        self.ca_cert_path = Path(ca_cert_path)
        self.ca_key_path = self.ca_cert_path.with_suffix(".key-absent")
        self.cert_output_dir = self.ca_cert_path.parent
        self.intermediate_cert_path = self.ca_cert_path.with_name(f"{self.ca_cert_path.stem}-intermediate.crt")
        self.intermediate_key_path = self.ca_cert_path.with_suffix(".key-absent")
        self.leaf_key_size, self.renew_before_days = 2048, 30
        self._lock = threading.Lock()
        try:
            self.root_cert = _load_certs(self.ca_cert_path)[0]
            self.intermediate_cert = _load_certs(self.intermediate_cert_path)[0]
        except (OSError, ValueError, IndexError) as exc:
            raise CertificateError(f"cannot load the mesh trust bundle from {self.ca_cert_path}: {exc}") from exc
        self._issuer_key = None
        return self

    def export_trust(self, directory: str | os.PathLike[str]) -> Path:
        """Copy the public halves (root and intermediate certificates) to ``directory``; returns the root's
        path there, for ``trust_only``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "ca.crt", self.ca_cert_path.read_bytes(), 0o644)
        write_atomic(out / "ca-intermediate.crt", self.intermediate_cert_path.read_bytes(), 0o644)
        return out / "ca.crt"

    # ------------------------------------------------------------------ CA
    def _ensure_ca(self, root_bits: int, inter_bits: int) -> None:
        """Create the root and/or intermediate when missing; load them otherwise."""
        if not self.ca_cert_path.exists() or not self.ca_key_path.exists():
            log.info("creating Lucid root CA at %s", self.ca_cert_path)
            key = rsa.generate_private_key(public_exponent=65537, key_size=root_bits)
            name = x509.Name(
                [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lucid"), x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_NAME)]
            )
            cert = self._ca_cert(name, key.public_key(), name, key, years=10, path_length=1)
            write_atomic(self.ca_key_path, _key_pem(key), 0o600)
            write_atomic(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
            for stale in (self.intermediate_cert_path, self.intermediate_key_path):
                stale.unlink(missing_ok=True)
        try:
            self.root_cert = _load_certs(self.ca_cert_path)[0]
        except (ValueError, IndexError) as exc:
            raise CertificateError(f"cannot load CA from {self.ca_cert_path}: {exc}") from exc
        if not self.intermediate_cert_path.exists() or not self.intermediate_key_path.exists():
            # the root key is read only here, when it has to sign a new intermediate
            root_key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
            log.info("creating Lucid intermediate CA at %s", self.intermediate_cert_path)
            key = rsa.generate_private_key(public_exponent=65537, key_size=inter_bits)
            name = x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lucid"),
                    x509.NameAttribute(NameOID.COMMON_NAME, INTERMEDIATE_CA_NAME),
                ]
            )
            cert = self._ca_cert(name, key.public_key(), self.root_cert.subject, root_key, years=5, path_length=0)
            write_atomic(self.intermediate_key_path, _key_pem(key), 0o600)
            write_atomic(self.intermediate_cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        self.intermediate_cert = _load_certs(self.intermediate_cert_path)[0]
        self._issuer_key = serialization.load_pem_private_key(self.intermediate_key_path.read_bytes(), password=None)

    @staticmethod
    def _ca_cert(subject, public_key, issuer, signing_key, *, years: int, path_length: int) -> x509.Certificate:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365 * years))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        )
        return builder.sign(signing_key, hashes.SHA256())

    @property
    def trust_bundle_path(self) -> str:
        """The file a TLS peer loads to trust Lucid certificates (the root)."""
        return str(self.ca_cert_path)

    # ------------------------------------------------------------------ issuance
    def generate_service_certificate(
        self,
        service_name: str,
        service_id: str,
        cluster: str,
        plane: str,
        validity_days: int = 90,
    ) -> tuple[str, str]:
        """Issue a certificate + key for one service instance; returns ``(cert_path, key_path)``.

        A non-positive ``validity_days`` yields an already-expired certificate (its start is backdated),
        which tests use to check that expiry is refused.
        """
        try:
            validate_segment(service_name, "service_name")
            validate_segment(cluster, "cluster")
        except ValueError as exc:
            raise InvalidServiceConfigError(str(exc)) from exc
        if plane not in PLANES:
            raise InvalidServiceConfigError(f"unknown plane {plane!r}; expected one of {sorted(PLANES)}")
        if not isinstance(service_id, str) or not _SERVICE_ID.match(service_id):
            raise InvalidServiceConfigError(f"invalid service_id {service_id!r}")
        if not isinstance(validity_days, int) or not -3650 <= validity_days <= 3650:
            raise InvalidServiceConfigError("validity_days must be an integer within ±3650")
        stem = f"{service_name}-{service_id[:8]}"
        cert_path = self.cert_output_dir / f"{stem}.crt"
        key_path = self.cert_output_dir / f"{stem}.key"
        self._issue(ServiceIdentity(service_name, cluster, plane), cert_path, key_path, validity_days)
        return str(cert_path), str(key_path)

    def _issue(self, ident: ServiceIdentity, cert_path: Path, key_path: Path, validity_days: int) -> None:
        if self._issuer_key is None:
            raise CertificateError("this certificate manager holds no CA key (trust_only): it cannot issue")
        key = rsa.generate_private_key(public_exponent=65537, key_size=self.leaf_key_size)
        now = _now()
        not_after = now + dt.timedelta(days=validity_days)
        not_before = min(now - dt.timedelta(minutes=5), not_after - dt.timedelta(days=1))
        svc, cluster = ident.service_name, ident.cluster
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lucid"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"plane-{ident.plane}"),
                x509.NameAttribute(NameOID.COMMON_NAME, svc),
            ]
        )
        san = x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier(ident.spiffe_id),
                x509.DNSName(f"{svc}.lucid.internal"),
                x509.DNSName(f"{svc}.{cluster}.lucid.internal"),
                x509.DNSName(f"{svc}.lucid.onion"),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.intermediate_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True, data_encipherment=False,
                    key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,  # the RFC 5280 path validator of `cryptography` requires a non-critical EKU
            )
            .add_extension(san, critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_cert.public_key()), critical=False
            )
            .sign(self._issuer_key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.intermediate_cert.public_bytes(
            serialization.Encoding.PEM
        )
        with self._lock:
            write_atomic(key_path, _key_pem(key), 0o600)
            write_atomic(cert_path, chain, 0o644)

    # ------------------------------------------------------------------ verification
    def load_certificate(self, cert_path: str | os.PathLike[str]) -> x509.Certificate:
        """The leaf (first) certificate of a PEM file."""
        try:
            certs = _load_certs(cert_path)
        except (OSError, ValueError) as exc:
            raise MTLSVerificationError(f"cannot read certificate {cert_path}: {exc}") from exc
        if not certs:
            raise MTLSVerificationError(f"no certificate in {cert_path}")
        return certs[0]

    def verify_chain(self, cert: x509.Certificate, *, at: dt.datetime | None = None) -> ServiceIdentity:
        """Path-validate ``cert`` up to our root (signature, validity, EKU) and return its identity.

        Raises MTLSVerificationError (1204) for expired, untrusted or malformed certificates.
        """
        moment = at or _now()
        if not (cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc):
            raise MTLSVerificationError(
                f"certificate expired or not yet valid (valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d})"
            )
        verifier = PolicyBuilder().store(Store([self.root_cert])).time(moment).build_client_verifier()
        try:
            verifier.verify(cert, [self.intermediate_cert])
        except VerificationError as exc:
            raise MTLSVerificationError(f"certificate not trusted: {exc}") from exc
        return identity_from_certificate(cert)

    def verify_certificate(self, cert_path: str, expected_service: str, expected_plane: str) -> bool:
        """True when the certificate chains to our CA, is within validity, and names this service and plane."""
        try:
            ident = self.verify_chain(self.load_certificate(cert_path))
        except MTLSVerificationError as exc:
            log.info("certificate %s refused: %s", cert_path, exc.message)
            return False
        return ident.service_name == expected_service and ident.plane == expected_plane

    # ------------------------------------------------------------------ renewal
    def needs_renewal(self, cert_path: str, *, renew_before_days: int | None = None) -> bool:
        """True when the certificate expires within the renewal window (30 days by default)."""
        window = dt.timedelta(days=self.renew_before_days if renew_before_days is None else renew_before_days)
        return self.load_certificate(cert_path).not_valid_after_utc - _now() <= window

    def renew_certificate(self, cert_path: str, validity_days: int = 90) -> tuple[str, str]:
        """Re-issue a certificate with a fresh key, same identity and same file paths."""
        cert = self.load_certificate(cert_path)
        ident = identity_from_certificate(cert)
        path = Path(cert_path)
        key_path = path.with_suffix(".key")
        self._issue(ident, path, key_path, validity_days)
        return str(path), str(key_path)

    def renew_if_due(self, cert_path: str, validity_days: int = 90) -> bool:
        """Renew when inside the renewal window; returns whether it renewed."""
        if self.needs_renewal(cert_path):
            self.renew_certificate(cert_path, validity_days)
            return True
        return False
