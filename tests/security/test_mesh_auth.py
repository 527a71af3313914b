"""Service JWT attacks: every one is refused with LUCID_ERR_1203 (seed 000 + SPEC.md)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from lucid.service_mesh.errors import AuthenticationError
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider

pytestmark = pytest.mark.security


def _claims(**over):
    now = int(time.time())
    base = {"iss": "lucid.onion", "aud": "lucid-services", "sub": "gw", "iat": now, "nbf": now, "exp": now + 600,
            "jti": "j", "service_name": "api-gateway", "cluster": "api-gateway", "plane": "ops", "permissions": []}
    base.update(over)
    return base


def _refused(provider: ServiceAuthProvider, token: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as exc_info:
        provider.verify_service_token(token)
    assert exc_info.value.error_code == "LUCID_ERR_1203"
    return exc_info.value


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_invalid_jwt_rejected() -> None:
    _refused(ServiceAuthProvider(), "invalid.jwt.token")


@pytest.mark.parametrize("garbage", ["", "a", "a.b", "....", "x" * 9000, "eyJhbGciOiJub25lIn0.e30."])
def test_garbage_rejected(garbage: str) -> None:
    _refused(ServiceAuthProvider(), garbage)


def test_expired_jwt_rejected() -> None:
    provider = ServiceAuthProvider()
    token = provider.generate_service_token("api-gateway", "test-id", "api-gateway", "ops", validity_hours=-1)
    err = _refused(provider, token)
    assert "expired" in err.message.lower()


def test_not_yet_valid_rejected() -> None:
    provider = ServiceAuthProvider()
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=10)
    token = provider.generate_service_token("api-gateway", "gw", "api-gateway", "ops", not_before=later)
    assert "not yet valid" in _refused(provider, token).message


def test_alg_none_rejected() -> None:
    provider = ServiceAuthProvider()
    token = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': provider.active_kid})}.{_b64(_claims())}."
    _refused(provider, token)


def test_algorithm_confusion_hs256_with_public_key_rejected() -> None:
    provider = ServiceAuthProvider(algorithm="RS256")
    public_pem = provider._keys[provider.active_kid].public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64({"alg": "HS256", "typ": "JWT", "kid": provider.active_kid})
    body = _b64(_claims())
    import hashlib
    import hmac

    sig = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    _refused(provider, token)


def test_alg_swapped_between_asymmetric_algorithms_rejected() -> None:
    provider = ServiceAuthProvider(algorithm="EdDSA")
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), attacker, algorithm="RS256", headers={"kid": provider.active_kid})
    _refused(provider, token)


def test_foreign_key_rejected() -> None:
    provider = ServiceAuthProvider()
    foreign = ed25519.Ed25519PrivateKey.generate()
    same_kid = jwt.encode(_claims(), foreign, algorithm="EdDSA", headers={"kid": provider.active_kid})
    unknown_kid = jwt.encode(_claims(), foreign, algorithm="EdDSA", headers={"kid": "attacker"})
    no_kid = jwt.encode(_claims(), foreign, algorithm="EdDSA")
    for token in (same_kid, unknown_kid, no_kid):
        _refused(provider, token)
    other_issuer = ServiceAuthProvider()
    _refused(provider, other_issuer.generate_service_token("api-gateway", "gw", "api-gateway", "ops"))


def test_tampered_claims_rejected() -> None:
    provider = ServiceAuthProvider()
    token = provider.generate_service_token("session-management", "s", "session-management", "ops")
    header, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["service_name"], claims["cluster"] = "api-gateway", "api-gateway"
    _refused(provider, f"{header}.{_b64(claims)}.{sig}")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    _refused(provider, f"{header}.{body}.{flipped}")


@pytest.mark.parametrize(
    "override, expect",
    [({"aud": "someone-else"}, "audience"), ({"iss": "evil.onion"}, "issuer"), ({"plane": "moon"}, "plane")],
)
def test_wrong_audience_issuer_or_plane_rejected(override: dict, expect: str) -> None:
    provider = ServiceAuthProvider()
    key = provider._keys[provider.active_kid].private_key
    token = jwt.encode(_claims(**override), key, algorithm="EdDSA", headers={"kid": provider.active_kid})
    assert expect in _refused(provider, token).message


def test_missing_required_claim_rejected() -> None:
    provider = ServiceAuthProvider()
    key = provider._keys[provider.active_kid].private_key
    claims = _claims()
    del claims["nbf"]
    _refused(provider, jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": provider.active_kid}))


def test_cached_token_still_expires() -> None:
    provider = ServiceAuthProvider()
    key = provider._keys[provider.active_kid].private_key
    token = jwt.encode(_claims(exp=int(time.time()) + 1), key, algorithm="EdDSA", headers={"kid": provider.active_kid})
    provider.verify_service_token(token)
    time.sleep(2.1)  # let the real clock pass the token's one-second expiry
    _refused(provider, token)
