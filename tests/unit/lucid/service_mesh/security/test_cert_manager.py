"""CertificateManager: CA bootstrap, SPEC certificate fields, verification, renewal, file modes."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lucid.service_mesh.errors import InvalidServiceConfigError
from lucid.service_mesh.security.cert_manager import INTERMEDIATE_CA_NAME, ROOT_CA_NAME, CertificateManager

SID = "550e8400-e29b-41d4-a716-446655440000"


def _leaf(path: str) -> x509.Certificate:
    return x509.load_pem_x509_certificates(Path(path).read_bytes())[0]


def test_ca_created_when_none_exists(mesh_ca_template: Path) -> None:
    root = x509.load_pem_x509_certificate((mesh_ca_template / "ca.crt").read_bytes())
    inter = x509.load_pem_x509_certificate((mesh_ca_template / "ca-intermediate.crt").read_bytes())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ROOT_CA_NAME
    assert root.public_key().key_size == 4096
    assert inter.issuer == root.subject
    assert inter.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == INTERMEDIATE_CA_NAME
    assert inter.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    for key in ("ca.key", "ca-intermediate.key"):
        assert oct(os.stat(mesh_ca_template / key).st_mode)[-3:] == "600"


def test_existing_ca_is_reused(cert_manager: CertificateManager) -> None:
    again = CertificateManager(str(cert_manager.ca_cert_path), str(cert_manager.ca_key_path),
                               str(cert_manager.cert_output_dir))
    assert again.root_cert == cert_manager.root_cert
    assert again.intermediate_cert == cert_manager.intermediate_cert


def test_generate_service_certificate(cert_manager: CertificateManager) -> None:
    cert_path, key_path = cert_manager.generate_service_certificate(
        service_name="api-gateway", service_id=SID, cluster="api-gateway", plane="ops", validity_days=90
    )
    assert os.path.basename(cert_path) == "api-gateway-550e8400.crt"
    assert os.path.basename(key_path) == "api-gateway-550e8400.key"
    assert os.path.getsize(cert_path) > 0 and os.path.getsize(key_path) > 0
    assert oct(os.stat(cert_path).st_mode)[-3:] == "644"
    assert oct(os.stat(key_path).st_mode)[-3:] == "600"


def test_certificate_fields_follow_spec(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("blockchain-core", SID, "blockchain-core", "chain")
    cert = _leaf(cert_path)
    subj = cert.subject
    assert subj.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "blockchain-core"
    assert subj.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Lucid"
    assert subj.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "plane-chain"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://lucid.onion/chain/blockchain-core/blockchain-core"
    ]
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(
        ["blockchain-core.lucid.internal", "blockchain-core.blockchain-core.lucid.internal", "blockchain-core.lucid.onion"]
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.issuer == cert_manager.intermediate_cert.subject
    assert cert.public_key().key_size == 2048
    span = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=90) <= span <= dt.timedelta(days=90, minutes=10)


def test_verify_certificate_valid(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops")
    assert cert_manager.verify_certificate(cert_path, expected_service="api-gateway", expected_plane="ops") is True


def test_verify_certificate_wrong_service(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops")
    assert cert_manager.verify_certificate(cert_path, expected_service="blockchain-core", expected_plane="ops") is False


def test_verify_certificate_wrong_plane(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops")
    assert cert_manager.verify_certificate(cert_path, expected_service="api-gateway", expected_plane="chain") is False


def test_expired_certificate_is_backdated_and_refused(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops", validity_days=-1)
    cert = _leaf(cert_path)
    assert cert.not_valid_before_utc < cert.not_valid_after_utc < dt.datetime.now(dt.timezone.utc)
    assert cert_manager.verify_certificate(cert_path, "api-gateway", "ops") is False


def test_certificate_from_another_ca_is_refused(cert_manager: CertificateManager, tmp_path: Path) -> None:
    other = CertificateManager(str(tmp_path / "o" / "ca.crt"), str(tmp_path / "o" / "ca.key"), str(tmp_path / "o" / "c"),
                               root_key_size=2048, intermediate_key_size=2048)
    foreign, _ = other.generate_service_certificate("api-gateway", SID, "api-gateway", "ops")
    assert other.verify_certificate(foreign, "api-gateway", "ops") is True
    assert cert_manager.verify_certificate(foreign, "api-gateway", "ops") is False


def test_tampered_certificate_is_refused(cert_manager: CertificateManager) -> None:
    cert_path, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops")
    der = bytearray(_leaf(cert_path).public_bytes(__import__("cryptography").hazmat.primitives.serialization.Encoding.DER))
    der[-10] ^= 0xFF  # flip a signature byte
    import base64

    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bytes(der)) + b"-----END CERTIFICATE-----\n"
    Path(cert_path).write_bytes(pem)
    assert cert_manager.verify_certificate(cert_path, "api-gateway", "ops") is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"plane": "moon"},
        {"service_name": "../etc"},
        {"service_id": "a/b"},
        {"cluster": "Bad Cluster"},
    ],
)
def test_bad_input_is_refused_with_1004(cert_manager: CertificateManager, kwargs: dict) -> None:
    args = {"service_name": "api-gateway", "service_id": SID, "cluster": "api-gateway", "plane": "ops", **kwargs}
    with pytest.raises(InvalidServiceConfigError) as exc_info:
        cert_manager.generate_service_certificate(**args)
    assert exc_info.value.error_code == "LUCID_ERR_1004"
    assert list(cert_manager.cert_output_dir.iterdir()) == []


def test_renewal_window_and_renew(cert_manager: CertificateManager) -> None:
    fresh, _ = cert_manager.generate_service_certificate("api-gateway", SID, "api-gateway", "ops", validity_days=90)
    due, due_key = cert_manager.generate_service_certificate("session-management", SID, "session-management", "ops",
                                                             validity_days=10)
    assert cert_manager.needs_renewal(fresh) is False
    assert cert_manager.needs_renewal(due) is True
    old = _leaf(due)
    old_key = Path(due_key).read_bytes()
    assert cert_manager.renew_if_due(fresh) is False
    assert cert_manager.renew_if_due(due) is True
    new = _leaf(due)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=89)
    assert Path(due_key).read_bytes() != old_key
    assert oct(os.stat(due_key).st_mode)[-3:] == "600"
    assert cert_manager.verify_certificate(due, "session-management", "ops") is True
