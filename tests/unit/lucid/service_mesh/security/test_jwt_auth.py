"""ServiceAuthProvider: claims of SPEC.md, key ids, rotation, JWKS verifiers, key files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest

from lucid.service_mesh.errors import AuthenticationError
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
def test_token_claims(algorithm: str) -> None:
    provider = ServiceAuthProvider(algorithm=algorithm)
    token = provider.generate_service_token("api-gateway", "gw-1", "api-gateway", "ops", validity_hours=2)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm and header["kid"] == provider.active_kid
    claims = provider.verify_service_token(token)
    assert claims["iss"] == "lucid.onion" and claims["aud"] == "lucid-services"
    assert claims["sub"] == "gw-1"
    assert (claims["service_name"], claims["cluster"], claims["plane"]) == ("api-gateway", "api-gateway", "ops")
    assert claims["exp"] - claims["iat"] == 7200 and claims["nbf"] <= time.time()
    assert claims["jti"] and claims["permissions"] == ["service:read:api-gateway", "service:read:chain",
                                                       "service:write:ops"]


def test_jti_is_unique() -> None:
    provider = ServiceAuthProvider()
    jtis = {provider.verify_service_token(provider.generate_service_token("a-b", "1", "api-gateway", "ops"))["jti"]
            for _ in range(20)}
    assert len(jtis) == 20


def test_required_plane_and_cluster() -> None:
    provider = ServiceAuthProvider()
    token = provider.generate_service_token("blockchain-core", "bc", "blockchain-core", "chain")
    assert provider.verify_service_token(token, required_plane="chain", required_cluster="blockchain-core")
    for kwargs in ({"required_plane": "ops"}, {"required_cluster": "api-gateway"}):
        with pytest.raises(AuthenticationError) as exc_info:
            provider.verify_service_token(token, **kwargs)
        assert exc_info.value.error_code == "LUCID_ERR_1203"


def test_rotation_keeps_old_tokens_valid_during_grace_then_refuses() -> None:
    provider = ServiceAuthProvider(rotation_grace_seconds=3600)
    old_kid = provider.active_kid
    old = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    new_kid = provider.rotate_keys()
    assert new_kid != old_kid
    new = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    assert provider.verify_service_token(old)["sub"] == "gw"
    provider.retire_key(old_kid)
    with pytest.raises(AuthenticationError):
        provider.verify_service_token(old)
    assert provider.verify_service_token(new)["sub"] == "gw"
    with pytest.raises(AuthenticationError):
        provider.retire_key(new_kid)


def test_rotation_grace_expires() -> None:
    provider = ServiceAuthProvider(rotation_grace_seconds=0.2)
    old = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    provider.verify_service_token(old)  # cached now: the grace check must still apply
    provider.rotate_keys()
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            provider.verify_service_token(old)
        except AuthenticationError as exc:
            assert "retired" in exc.message
            break
        time.sleep(0.05)
    else:
        pytest.fail("retired key still accepted after its grace period")


def test_jwks_verifier_accepts_issuer_tokens_and_cannot_sign() -> None:
    issuer = ServiceAuthProvider()
    issuer.rotate_keys(algorithm="RS256")
    verifier = ServiceAuthProvider.verifier_from_jwks(issuer.jwks())
    token = issuer.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    assert verifier.verify_service_token(token)["service_name"] == "api-gateway"
    assert all("d" not in k for k in issuer.jwks()["keys"])  # no private parts published
    with pytest.raises(AuthenticationError):
        verifier.generate_service_token("api-gateway", "gw", "api-gateway", "ops")


def test_key_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "jwt.key"
    first = ServiceAuthProvider(private_key_path=str(path))
    assert oct(os.stat(path).st_mode)[-3:] == "600"
    token = first.generate_service_token("api-gateway", "gw", "api-gateway", "ops")
    second = ServiceAuthProvider(private_key_path=str(path))
    assert second.active_kid == first.active_kid
    assert second.verify_service_token(token)["sub"] == "gw"


def test_unsupported_algorithm_refused() -> None:
    with pytest.raises(AuthenticationError):
        ServiceAuthProvider(algorithm="HS256")
