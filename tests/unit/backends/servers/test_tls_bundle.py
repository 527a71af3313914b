"""A deployment's engine certificates: kept across starts, renewed before they expire, never a root CN."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from backends.servers.tls import ensure_tls_bundle, generate_tls_bundle


def _expiry(path: Path) -> dt.datetime:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def test_a_bundle_is_kept_while_valid_and_made_anew_when_it_nears_its_end(tmp_path: Path) -> None:
    first = ensure_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh"))
    assert _expiry(first.server_cert) - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=360)
    assert {cn: _cn(cert) for cn, (cert, _) in first.clients.items()} == {"control-plane": "control-plane",
                                                                           "mesh": "mesh"}
    assert all(key.stat().st_mode & 0o077 == 0 for _, key in first.clients.values())  # keys: owner only
    ca = first.ca_cert.read_bytes()
    again = ensure_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh"))
    assert again == first and again.ca_cert.read_bytes() == ca  # resumed: the same CA, nothing reissued
    # a week left (inside the 30-day window): an up renews everything
    generate_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh"), days=7)
    renewed = ensure_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh"))
    assert _expiry(renewed.server_cert) - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=360)
    # a client certificate gone (or a new account): made anew as well
    renewed.clients["mesh"][0].unlink()
    ca_before = renewed.ca_cert.read_bytes()
    assert ensure_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh")).clients["mesh"][0].exists()
    assert renewed.ca_cert.read_bytes() != ca_before
    # a corrupted server certificate is not trusted to say when it expires
    renewed.server_cert.write_text("not a certificate")
    fixed = ensure_tls_bundle(tmp_path, client_cn="admin", clients=("control-plane", "mesh"))
    assert _cn(fixed.server_cert) == "localhost"


@pytest.mark.parametrize("client_cn, clients", [("root", ()), ("admin", ("mesh", "root"))])
def test_no_client_certificate_may_be_etcds_root(tmp_path: Path, client_cn: str, clients: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        ensure_tls_bundle(tmp_path, client_cn=client_cn, clients=clients)
