"""Service JWTs (SPEC.md): issuer lucid.onion, audience lucid-services, asymmetric keys with key ids.

Every verification failure is AuthenticationError (LUCID_ERR_1203). The verifier picks the key by
``kid`` and accepts only that key's own algorithm, so ``alg: none``, HS256-with-the-public-key
(algorithm confusion) and tokens signed by foreign keys are refused.

Keys are bound to who may use them, because a verifier that trusts several services' keys (the stack's
JWK set holds every mesh member's) must not let one member sign as another:

- A key with an owner (JWK member ``lucid_service``) signs only tokens whose ``service_name`` is that
  owner; any other token under it is refused (1203), and a provider with an owner will not mint one.
- ``mesh:admin`` in a token's permissions is honoured only under an admin key (JWK member
  ``lucid_admin: true``, e.g. the operator's key); under any other key it is removed from the claims
  the verifier returns, so nothing downstream can act on it.
- A key without an owner is an *issuer key*: a single token issuer that signs for every service (one
  provider shared by a test mesh, or a central authentication service). It may sign any identity and
  carries ``mesh:admin``, since a key that can already speak as every service gains nothing from being
  refused admin. Never publish a service's own key without its owner: ``stack/identity.write_jwks``
  and ``lucid mesh jwks --key SERVICE=FILE`` record one for every key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from backends.jsonsafe import loads_bounded
from lucid.service_mesh.errors import AuthenticationError
from lucid.service_mesh.planes import PLANES
from lucid.service_mesh.security.files import write_atomic

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = ("EdDSA", "RS256")
ADMIN_PERMISSION = "mesh:admin"
OWNER_MEMBER = "lucid_service"  # JWK member: the service that owns the key
ADMIN_MEMBER = "lucid_admin"  # JWK member: true for a key whose tokens may carry mesh:admin
_OWNER_RE = re.compile(r"^[a-z0-9-]{1,63}\Z")
REQUIRED_CLAIMS = ["iss", "aud", "sub", "iat", "exp", "nbf", "jti", "service_name", "cluster", "plane"]


def _unverified_header(token: str) -> dict[str, Any]:
    """Read the JOSE header to pick the key. Own parser because PyJWT's segment check is slow per call
    (benchmarks/RESULTS.md, "Figures behind the code"); the full token is still decoded and verified by
    PyJWT afterwards."""
    head, dot, _ = token.partition(".")
    if not dot or token.count(".") != 2:
        raise AuthenticationError("invalid token: not a JWS compact serialisation")
    try:
        header = loads_bounded(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise AuthenticationError("invalid token: unreadable header") from exc
    if not isinstance(header, dict):
        raise AuthenticationError("invalid token: header is not an object")
    return header


def default_permissions(cluster: str, plane: str) -> list[str]:
    """Permissions by plane, from the original design (02-data-models)."""
    perms = [f"service:read:{cluster}"]
    if plane == "ops":
        perms += ["service:read:chain", "service:write:ops"]
    elif plane == "chain":
        perms += ["service:write:chain", "service:read:storage"]
    elif plane == "wallet":
        perms += ["service:write:wallet"]
    return perms


@dataclass
class JWTKey:
    """One key of the key ring; ``private_key`` is None for verify-only (trusted public) keys."""

    kid: str
    algorithm: str
    public_key: Any
    private_key: Any = None
    created_at: float = field(default_factory=time.time)
    retire_after: float | None = None  # unix time after which tokens under this kid are refused
    owner: str | None = None  # the only service_name this key may sign for; None: an issuer key (any)
    admin: bool = False  # tokens under this key may carry mesh:admin

    @property
    def grants_admin(self) -> bool:
        """An issuer key can already sign as any service, so refusing it admin would protect nothing."""
        return self.admin or self.owner is None


def _generate(algorithm: str) -> Any:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise AuthenticationError(f"unsupported JWT algorithm {algorithm!r}; use one of {SUPPORTED_ALGORITHMS}")


def _algorithm_of(private_key: Any) -> str:
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    raise AuthenticationError("signing key must be Ed25519 or RSA")


class ServiceAuthProvider:
    """Issues and verifies service JWTs with a rotating ring of asymmetric keys."""

    def __init__(
        self,
        issuer: str = "lucid.onion",
        audience: str = "lucid-services",
        algorithm: str = "EdDSA",
        private_key_path: str | None = None,
        *,
        leeway_seconds: int = 0,
        rotation_grace_seconds: float = 24 * 3600,
        owner: str | None = None,
        admin: bool = False,
    ) -> None:
        """``owner``: the service this key belongs to (it signs only for it; published in ``jwks()``);
        ``admin``: its tokens may carry mesh:admin (the operator's key)."""
        if algorithm not in SUPPORTED_ALGORITHMS:
            raise AuthenticationError(f"unsupported JWT algorithm {algorithm!r}; use one of {SUPPORTED_ALGORITHMS}")
        if owner is not None and not (isinstance(owner, str) and _OWNER_RE.match(owner)):
            raise AuthenticationError(f"invalid key owner {owner!r}")
        self.owner = owner
        self.admin = bool(admin)
        self.issuer = issuer
        self.audience = audience
        self.algorithm = algorithm
        self.leeway_seconds = leeway_seconds
        self.rotation_grace_seconds = rotation_grace_seconds
        self._keys: dict[str, JWTKey] = {}
        self._lock = threading.Lock()
        self._active_kid: str | None = None
        self._cache: OrderedDict[str, tuple[dict[str, Any], str]] = OrderedDict()
        self.cache_size = 4096
        if private_key_path is not None:
            self._load_or_create(Path(private_key_path))
        else:
            self.rotate_keys()

    # ------------------------------------------------------------------ keys
    def _load_or_create(self, path: Path) -> None:
        """Load the signing key from ``path``; create it (0600) when missing."""
        if path.exists():
            private = serialization.load_pem_private_key(path.read_bytes(), password=None)
            self.algorithm = _algorithm_of(private)
        else:
            private = _generate(self.algorithm)
            pem = private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            write_atomic(path, pem, 0o600)
        self._install(private)

    def _install(self, private: Any) -> str:
        public = private.public_key()
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        kid = jwt.utils.base64url_encode(hashlib.sha256(der).digest()[:12]).decode()
        with self._lock:
            if self._active_kid and self._active_kid in self._keys:
                self._keys[self._active_kid].retire_after = time.time() + self.rotation_grace_seconds
            self._keys[kid] = JWTKey(kid=kid, algorithm=_algorithm_of(private), public_key=public, private_key=private,
                                     owner=self.owner, admin=self.admin)
            self._active_kid = kid
        return kid

    def rotate_keys(self, algorithm: str | None = None) -> str:
        """Start signing with a fresh key; the previous one still verifies for the grace period."""
        return self._install(_generate(algorithm or self.algorithm))

    def retire_key(self, kid: str) -> None:
        """Stop accepting tokens signed under ``kid`` at once (e.g. after a key compromise)."""
        with self._lock:
            if kid == self._active_kid:
                raise AuthenticationError("cannot retire the active signing key; rotate first")
            self._keys.pop(kid, None)
            self._cache.clear()

    @property
    def active_kid(self) -> str:
        assert self._active_kid is not None
        return self._active_kid

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Public keys as a JWK set, for verifiers in other processes; each with its owner and admin mark,
        so a verifier trusting many services' keys still knows which service each may sign for."""
        out = []
        with self._lock:
            keys = list(self._keys.values())
        for k in keys:
            codec = OKPAlgorithm if k.algorithm == "EdDSA" else RSAAlgorithm
            jwk = codec.to_jwk(k.public_key, as_dict=True)
            jwk.update({"kid": k.kid, "alg": k.algorithm, "use": "sig"})
            if k.owner is not None:
                jwk[OWNER_MEMBER] = k.owner
            if k.admin:
                jwk[ADMIN_MEMBER] = True
            out.append(jwk)
        return {"keys": out}

    @classmethod
    def verifier_from_jwks(
        cls, jwks: dict[str, Any], issuer: str = "lucid.onion", audience: str = "lucid-services"
    ) -> "ServiceAuthProvider":
        """A verify-only provider trusting exactly the keys of a JWK set, each bound to its
        ``lucid_service`` owner and ``lucid_admin`` mark (module docstring)."""
        self = cls.__new__(cls)
        self.issuer, self.audience, self.algorithm = issuer, audience, "EdDSA"
        self.owner, self.admin = None, False
        self.leeway_seconds, self.rotation_grace_seconds = 0, 0
        self._keys, self._lock, self._active_kid = {}, threading.Lock(), None
        self._cache, self.cache_size = OrderedDict(), 4096
        for jwk in jwks.get("keys", []):
            alg = jwk.get("alg")
            if alg not in SUPPORTED_ALGORITHMS or not jwk.get("kid"):
                raise AuthenticationError("JWK set entries need a kid and an EdDSA/RS256 alg")
            codec = OKPAlgorithm if alg == "EdDSA" else RSAAlgorithm
            public = codec.from_jwk(jwk)
            if hasattr(public, "private_bytes"):
                raise AuthenticationError("JWK set must hold public keys only")
            owner, admin = jwk.get(OWNER_MEMBER), jwk.get(ADMIN_MEMBER, False)
            if owner is not None and not (isinstance(owner, str) and _OWNER_RE.match(owner)):
                raise AuthenticationError(f"JWK {jwk['kid']!r}: {OWNER_MEMBER} must be a service name")
            if not isinstance(admin, bool):
                raise AuthenticationError(f"JWK {jwk['kid']!r}: {ADMIN_MEMBER} must be true or false")
            key = JWTKey(kid=jwk["kid"], algorithm=alg, public_key=public, owner=owner, admin=admin)
            known = self._keys.get(key.kid)
            if known is not None and (known.owner, known.admin) != (owner, admin):
                raise AuthenticationError(f"JWK {key.kid!r} is listed twice with different owners")
            self._keys[key.kid] = key
        return self

    # ------------------------------------------------------------------ tokens
    def generate_service_token(
        self,
        service_name: str,
        service_id: str,
        cluster: str,
        plane: str,
        validity_hours: float = 24,
        permissions: list[str] | None = None,
        *,
        not_before: dt.datetime | None = None,
    ) -> str:
        """Sign a service token; a negative ``validity_hours`` yields an expired one (for tests)."""
        if self._active_kid is None:
            raise AuthenticationError("this provider holds no signing key (verify-only)")
        if plane not in PLANES:
            raise AuthenticationError(f"unknown plane {plane!r}")
        if self.owner is not None and service_name != self.owner:  # every verifier would refuse it
            raise AuthenticationError(f"this key belongs to {self.owner!r}; it cannot sign for {service_name!r}")
        key = self._keys[self._active_kid]
        now = int(time.time())
        nbf = int(not_before.timestamp()) if not_before else now
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": service_id,
            "iat": now,
            "nbf": nbf,
            "exp": now + int(validity_hours * 3600),
            "jti": str(uuid.uuid4()),
            "service_name": service_name,
            "service_id": service_id,
            "cluster": cluster,
            "plane": plane,
            "permissions": permissions if permissions is not None else default_permissions(cluster, plane),
        }
        return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid})

    def knows(self, token: str) -> bool:
        """True if ``token`` was verified before and is still cached (checking it again is cheap)."""
        return token in self._cache

    def verify_service_token(
        self, token: str, required_plane: str | None = None, required_cluster: str | None = None
    ) -> dict[str, Any]:
        """Verify signature, key, algorithm and claims; return the claims or raise AuthenticationError."""
        if not isinstance(token, str) or not token or len(token) > 8192:
            raise AuthenticationError("invalid token: empty or oversized")
        cached = self._cache.get(token)
        if cached is not None:
            claims, kid = cached
            key = self._keys.get(kid)
            if time.time() < claims["exp"] and key is not None and (
                key.retire_after is None or time.time() <= key.retire_after
            ):
                return self._check_required(claims, required_plane, required_cluster)
            self._cache.pop(token, None)
        header = _unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in SUPPORTED_ALGORITHMS:
            raise AuthenticationError(f"invalid token: algorithm {alg!r} not accepted")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise AuthenticationError("invalid token: unknown signing key")
        if key.retire_after is not None and time.time() > key.retire_after:
            raise AuthenticationError("invalid token: signing key retired")
        if alg != key.algorithm:
            raise AuthenticationError("invalid token: algorithm does not match the key")
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthenticationError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthenticationError("token not yet valid (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthenticationError("invalid token audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthenticationError("invalid token issuer") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid token: {exc}") from exc
        if claims.get("plane") not in PLANES or not isinstance(claims.get("service_name"), str):
            raise AuthenticationError("invalid token: bad plane or service_name claim")
        if not isinstance(claims.get("cluster"), str):
            raise AuthenticationError("invalid token: bad cluster claim")
        permissions = claims.get("permissions", [])
        if not (isinstance(permissions, list) and all(isinstance(p, str) for p in permissions)):
            raise AuthenticationError("invalid token: permissions must be a list of strings")
        if key.owner is not None and claims["service_name"] != key.owner:
            raise AuthenticationError(f"invalid token: {claims['service_name']!r} signed with the key of {key.owner!r}")
        if ADMIN_PERMISSION in permissions and not key.grants_admin:
            # a member's own key cannot make it an administrator: honoured only from admin keys
            log.warning("token of %s claims %s under non-admin key %s; not honoured", claims["service_name"],
                        ADMIN_PERMISSION, kid)
            claims["permissions"] = [p for p in permissions if p != ADMIN_PERMISSION]
        with self._lock:
            self._cache[token] = (claims, kid)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._check_required(claims, required_plane, required_cluster)

    @staticmethod
    def _check_required(claims: dict[str, Any], required_plane: str | None, required_cluster: str | None):
        if required_plane is not None and claims["plane"] != required_plane:
            raise AuthenticationError(f"plane {claims['plane']!r} not allowed (need {required_plane!r})")
        if required_cluster is not None and claims["cluster"] != required_cluster:
            raise AuthenticationError(f"cluster {claims['cluster']!r} not allowed (need {required_cluster!r})")
        return dict(claims)
