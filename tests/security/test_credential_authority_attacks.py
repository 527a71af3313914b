"""The credential authority and verifier attacked directly: unsafe key files, tokens signed by the real key
but with forged or missing claims, a cached token past its expiry, a credential used for another role,
revocation records damaged in the store, and bad arguments to issue and revoke."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.kv import open_kv
from infrafabric.coordinator.credentials import (
    AUDIENCE, ISSUER, PRIVATE_FILE, REVOKED_PREFIX, CredentialAuthority, CredentialVerifier, load_public_key,
    read_credential, revoke)
from infrafabric.errors import CredentialError, PermissionDeniedError, ValidationError


@pytest.fixture
def authority(tmp_path: Path) -> CredentialAuthority:
    return CredentialAuthority.load_or_create(tmp_path / "authority")


def _signed(authority: CredentialAuthority, **overrides: object) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "swarm-a", "role": "swarm", "iat": now, "nbf": now - 5,
              "exp": now + 600, "jti": uuid.uuid4().hex, "issued_ms": now * 1000, **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, authority._key, algorithm="EdDSA")


def test_a_private_key_others_can_read_or_of_another_kind_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "authority"
    CredentialAuthority.load_or_create(directory)
    key_file = directory / PRIVATE_FILE
    os.chmod(key_file, 0o644)
    with pytest.raises(CredentialError) as unsafe:
        CredentialAuthority.load_or_create(directory)
    assert unsafe.value.error_code == "IF_ERR_AUTH_KEY_UNSAFE"
    other = generate_private_key(SECP256R1())  # a valid PEM key, but not Ed25519
    key_file.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    with pytest.raises(CredentialError, match="not an Ed25519 key"):
        CredentialAuthority.load_or_create(directory)
    public = tmp_path / "public.pem"
    public.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(CredentialError, match="not an Ed25519 public key"):
        load_public_key(public)


def test_a_credential_file_others_can_read_is_refused(tmp_path: Path, authority: CredentialAuthority) -> None:
    path = tmp_path / "swarm.cred"
    path.write_text(authority.issue("swarm", "swarm-a", 60))
    os.chmod(path, 0o640)
    with pytest.raises(CredentialError) as refused:
        read_credential(path)
    assert refused.value.error_code == "IF_ERR_AUTH_KEY_UNSAFE"


@pytest.mark.parametrize("role,name,ttl", [("admin", "x", 60), ("swarm", "a b", 60), ("operator", " ", 60),
                                           ("operator", "o" * 129, 60), ("swarm", "s", 0), ("swarm", "s", 1.5),
                                           ("swarm", "s", 31 * 24 * 3600)])
def test_issue_refuses_bad_arguments(authority: CredentialAuthority, role: str, name: str, ttl: object) -> None:
    with pytest.raises(ValidationError):
        authority.issue(role, name, ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize("overrides,why", [
    ({"role": "root"}, "role, subject or id"), ({"sub": None}, "invalid credential"),
    ({"sub": "../etc/passwd"}, "not a swarm id"), ({"issued_ms": None}, "issued_ms"),
    ({"issued_ms": "1"}, "issued_ms"), ({"aud": "someone-else"}, "invalid credential"),
    ({"exp": int(time.time()) - 10}, "expired")])
async def test_tokens_signed_by_the_real_key_with_forged_claims_are_refused(
        authority: CredentialAuthority, overrides: dict[str, object], why: str) -> None:
    verifier = CredentialVerifier(authority.public_key)
    with pytest.raises(CredentialError, match=why):
        await verifier.verify(_signed(authority, **overrides))


@settings(max_examples=50, deadline=None)
@given(token=st.one_of(st.text(max_size=300), st.binary(max_size=50), st.integers(), st.none(),
                       st.just("x" * 5000)))
def test_any_other_value_is_refused_as_a_credential(token: object) -> None:
    verifier = CredentialVerifier(CredentialAuthority(Ed25519PrivateKey.generate()).public_key)
    with pytest.raises(CredentialError):
        verifier.decode(token)


async def test_a_cached_token_past_its_expiry_and_a_credential_for_another_role(
        authority: CredentialAuthority, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = CredentialVerifier(authority.public_key)
    token = authority.issue("swarm", "swarm-a", 2)
    assert (await verifier.verify(token, role="swarm")).name == "swarm-a"  # now in the verified cache
    with pytest.raises(PermissionDeniedError):
        await verifier.verify(token, role="operator")  # a swarm credential cannot act as an operator
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 10)  # the cached entry is past its expiry
    with pytest.raises(CredentialError) as expired:
        verifier.decode(token)
    assert expired.value.error_code == "IF_ERR_AUTH_EXPIRED"


async def test_revocations_hold_and_a_damaged_record_revokes_nothing_more(authority: CredentialAuthority) -> None:
    async with open_kv("memory://") as kv:
        verifier = CredentialVerifier(authority.public_key, kv, refresh=0)
        kept, dropped = authority.issue("swarm", "swarm-k", 600), authority.issue("swarm", "swarm-d", 600)
        await kv.put(f"{REVOKED_PREFIX}before/swarm:swarm-k", b"not-a-number")  # damaged: ignored
        await kv.put(f"{REVOKED_PREFIX}unknown/kind", b"1")  # unknown kind: ignored
        await revoke(kv, role="swarm", name="swarm-d")
        assert (await verifier.verify(kept)).name == "swarm-k"
        with pytest.raises(CredentialError) as revoked:
            await verifier.verify(dropped)
        assert revoked.value.error_code == "IF_ERR_AUTH_REVOKED"
        identity = verifier.decode(kept)
        await revoke(kv, jti=identity.jti)
        with pytest.raises(CredentialError, match="revoked"):
            await verifier.verify(kept)
        with pytest.raises(ValidationError):
            await revoke(kv, role="admin", name="x")  # type: ignore[arg-type]
