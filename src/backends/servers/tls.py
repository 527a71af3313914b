"""TLS material for the launchers: a CA, a server cert for 127.0.0.1/localhost, client certs.

Generated with the ``cryptography`` library (EC P-256) so nothing needs the openssl CLI: throw-away (valid
one day) for tests, or kept in a deployment's state directory and renewed before it expires
(``ensure_tls_bundle``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsBundle", "ensure_tls_bundle", "generate_tls_bundle"]


@dataclass(frozen=True, slots=True)
class TlsBundle:
    """Paths of the PEM files written by :func:`generate_tls_bundle`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: further client identities (CN -> certificate, key): etcd maps a certificate's CN to a user
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "infrafabric-test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def generate_tls_bundle(directory: Path, *, client_cn: str = "if-client", clients: tuple[str, ...] = (),
                        days: int = 1) -> TlsBundle:
    """Write CA, server and client certificates into ``directory`` (``clients``: more client CNs).

    No client CN may be "root": etcd with --client-cert-auth maps the CN to a user name, and a CN of "root"
    would grant full access without a password.
    """
    if "root" in (client_cn, *clients):
        raise ValueError("a client certificate named root would be etcd's root user without a password")
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("infrafabric-test-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: list[x509.ObjectIdentifier], san: list[x509.GeneralName] | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    server_pem, server_key = leaf(
        "localhost", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],  # etcd's gateway dials itself
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_pem, client_key = leaf(client_cn, [ExtendedKeyUsageOID.CLIENT_AUTH], None)
    issued = {}
    for cn in clients:
        pem, key_pem = leaf(cn, [ExtendedKeyUsageOID.CLIENT_AUTH], None)
        issued[cn] = (_write(directory / f"client-{cn}.pem", pem), _write(directory / f"client-{cn}-key.pem", key_pem, 0o600))
    return TlsBundle(
        ca_cert=_write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM)),
        server_cert=_write(directory / "server.pem", server_pem),
        server_key=_write(directory / "server-key.pem", server_key, 0o600),
        client_cert=_write(directory / "client.pem", client_pem),
        client_key=_write(directory / "client-key.pem", client_key, 0o600),
        clients=issued,
    )


def ensure_tls_bundle(directory: Path, *, client_cn: str, clients: tuple[str, ...] = (), days: int = 365,
                      renew_within: dt.timedelta = dt.timedelta(days=30)) -> TlsBundle:
    """The bundle kept in ``directory``: reused while every file is there and the server certificate has
    more than ``renew_within`` left, otherwise made anew (a deployment's engines: resumed by each start)."""
    bundle = TlsBundle(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem",
                       directory / "client.pem", directory / "client-key.pem",
                       {cn: (directory / f"client-{cn}.pem", directory / f"client-{cn}-key.pem") for cn in clients})
    paths = [bundle.ca_cert, bundle.server_cert, bundle.server_key, bundle.client_cert, bundle.client_key,
             *(p for pair in bundle.clients.values() for p in pair)]
    if all(p.exists() for p in paths):
        try:
            expires = x509.load_pem_x509_certificate(bundle.server_cert.read_bytes()).not_valid_after_utc
        except ValueError:
            expires = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        if expires - dt.datetime.now(dt.timezone.utc) > renew_within:
            return bundle
    return generate_tls_bundle(directory, client_cn=client_cn, clients=clients, days=days)
