"""Identities of swarms and operators: short-lived credentials signed by the platform's authority.

A swarm in another process gets no engine credentials at all: it holds one token, issued by the
control plane's credential authority, that names it (``sub``) and its role (``swarm``, ``operator``, or ``viewer``: an operator who may look but not act).
The coordinator service takes the swarm id from the verified token for every call, so a swarm can act
only as itself. Tokens are EdDSA JWTs (PyJWT): the service needs only the authority's public key. They
expire (default one hour) and can be revoked before that, one token (``jti``) or every token a swarm
was issued until now, through the coordination store, which every replica of the service reads.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from backends.kv import KeyValueStore
from infrafabric.errors import CredentialError, PermissionDeniedError, ValidationError
from infrafabric.ids import validate_swarm_id

Role = Literal["swarm", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("swarm", "operator", "viewer")
ISSUER = "infrafabric-control-plane"
AUDIENCE = "infrafabric-coordinator"
PRIVATE_FILE = "authority_key.pem"
PUBLIC_FILE = "authority_key.pub.pem"
DEFAULT_TTL = 3600
MAX_TTL = 30 * 24 * 3600
REVOKED_PREFIX = "/auth/revoked/"
MAX_TOKEN_CHARS = 4096
VERIFIED_CACHE = 10_000  # tokens remembered after a successful signature check


@dataclass(frozen=True)
class Identity:
    """Who is calling, as a verified credential says: role, name (the swarm id or operator name), token id."""

    role: Role
    name: str
    jti: str
    issued_ms: int  # when the authority issued it (milliseconds since the epoch)
    expires_at: int  # seconds since the epoch

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


class CredentialAuthority:
    """Issues credentials. Its private key stays with the operator who runs it, never with a service."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()

    @classmethod
    def load_or_create(cls, key_dir: str | os.PathLike[str]) -> "CredentialAuthority":
        directory = Path(key_dir)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = directory / PRIVATE_FILE
        if private.exists():
            if private.stat().st_mode & 0o077:
                raise CredentialError(f"{private} is readable by group or others; chmod 600 it",
                                          error_code="IF_ERR_AUTH_KEY_UNSAFE")
            key = serialization.load_pem_private_key(private.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise CredentialError(f"{private} is not an Ed25519 key", error_code="IF_ERR_AUTH_KEY_UNSAFE")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        (directory / PUBLIC_FILE).write_bytes(public_pem(key.public_key()))
        return cls(key)

    def issue(self, role: Role, name: str, ttl: int = DEFAULT_TTL) -> str:
        if role not in ROLES:
            raise ValidationError(f"role must be one of {ROLES}")
        if role == "swarm":
            validate_swarm_id(name)
        elif not isinstance(name, str) or not name.strip() or len(name) > 128:
            raise ValidationError("an operator credential needs a name of 1-128 characters")
        if type(ttl) is not int or not 1 <= ttl <= MAX_TTL:
            raise ValidationError(f"ttl must be whole seconds from 1 to {MAX_TTL}")
        now_ms = time.time_ns() // 1_000_000
        now = now_ms // 1000
        # issued_ms: revocation of "everything issued until now" must not catch a credential issued a
        # moment later in the same second
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": name, "role": role, "iat": now, "nbf": now - 5,
                  "exp": now + ttl, "jti": uuid.uuid4().hex, "issued_ms": now_ms}
        return jwt.encode(claims, self._key, algorithm="EdDSA")


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialError(f"{path} is not an Ed25519 public key", error_code="IF_ERR_AUTH_KEY_UNSAFE")
    return key


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def read_credential(path: str | os.PathLike[str]) -> str:
    """A credential file (what ``coordinator issue-credential`` wrote): refused if others can read it."""
    file = Path(path)
    if file.stat().st_mode & 0o077:
        raise CredentialError(f"{file} is readable by group or others; chmod 600 it",
                                  error_code="IF_ERR_AUTH_KEY_UNSAFE")
    return file.read_text().strip()


def write_credential(path: str | os.PathLike[str], token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")


class CredentialVerifier:
    """Verifies tokens with the authority's public key and the revocations in the coordination store.

    Revocations are read at most once a ``refresh`` seconds (one range read, not one per call), so a
    revoked credential stops working within that time on every replica.
    """

    def __init__(self, public_key: Ed25519PublicKey, kv: KeyValueStore | None = None, *, refresh: float = 1.0) -> None:
        self.public_key = public_key
        self.kv = kv
        self.refresh = refresh
        self._revoked_jti: set[str] = set()
        self._revoked_before: dict[str, int] = {}  # "role:name" -> tokens issued at or before (ms) are revoked
        self._read_at = float("-inf")
        self._verified: dict[str, Identity] = {}

    def decode(self, token: object) -> Identity:
        """Signature, issuer, audience, times and shape; no revocation check (see ``verify``).

        A token verified once is remembered until it expires (a signature check costs more than the rest
        of a claim's work in the service); expiry and revocation are still checked on every call."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise CredentialError("missing or oversized credential")
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= time.time():
                del self._verified[token]
                raise CredentialError("credential expired", error_code="IF_ERR_AUTH_EXPIRED")
            return known
        identity = self._decode(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.clear()  # bounded: forged tokens never enter it, genuine ones are re-verified once
        self._verified[token] = identity
        return identity

    def _decode(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self.public_key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "nbf"]})
        except jwt.ExpiredSignatureError:
            raise CredentialError("credential expired", error_code="IF_ERR_AUTH_EXPIRED") from None
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise CredentialError(f"invalid credential: {exc}") from None
        role, name, jti = claims.get("role"), claims.get("sub"), claims.get("jti")
        if role not in ROLES or not isinstance(name, str) or not isinstance(jti, str):
            raise CredentialError("invalid credential: role, subject or id missing")
        if role == "swarm":
            try:
                validate_swarm_id(name)
            except ValidationError:
                raise CredentialError("invalid credential: subject is not a swarm id") from None
        issued_ms = claims.get("issued_ms")
        if type(issued_ms) is not int:
            raise CredentialError("invalid credential: issued_ms missing")
        return Identity(role, name, jti, issued_ms, int(claims["exp"]))

    async def verify(self, token: object, role: Role | None = None) -> Identity:
        identity = self.decode(token)
        if role is not None and identity.role != role:
            raise PermissionDeniedError(f"a {identity.role} credential cannot do what needs a {role} credential")
        await self._refresh()
        if identity.jti in self._revoked_jti or \
                identity.issued_ms <= self._revoked_before.get(f"{identity.role}:{identity.name}", -1):
            raise CredentialError("credential revoked", error_code="IF_ERR_AUTH_REVOKED")
        return identity

    async def _refresh(self) -> None:
        if self.kv is None or time.monotonic() - self._read_at < self.refresh:
            return
        rows = await self.kv.get_prefix(REVOKED_PREFIX)
        jti: set[str] = set()
        before: dict[str, int] = {}
        for row in rows:
            rest = row.key[len(REVOKED_PREFIX):]
            if rest.startswith("jti/"):
                jti.add(rest[4:])
            elif rest.startswith("before/"):
                try:
                    before[rest[7:]] = int(row.value)
                except ValueError:
                    continue  # a damaged row revokes nothing more; the rest still apply
        self._revoked_jti, self._revoked_before, self._read_at = jti, before, time.monotonic()


async def revoke(kv: KeyValueStore, *, jti: str | None = None, role: Role | None = None,
                 name: str | None = None, expires_in: int = MAX_TTL) -> None:
    """Revoke one credential (``jti``) or every credential issued to ``role:name`` until now.

    Entries live on a lease of ``expires_in`` seconds (a revoked token cannot outlive its own expiry, so
    the list cleans itself); the default covers the longest TTL a credential can have."""
    if jti is not None:
        key = f"{REVOKED_PREFIX}jti/{jti}"
        value = b"1"
    elif role in ROLES and isinstance(name, str):
        key = f"{REVOKED_PREFIX}before/{role}:{name}"
        value = str(time.time_ns() // 1_000_000).encode()
    else:
        raise ValidationError("revoke needs a jti, or a role and a name")
    lease = await kv.grant_lease(expires_in)
    await kv.put(key, value, lease=lease)
