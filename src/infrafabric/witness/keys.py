"""Ed25519 signing keys of the witness: created once per key directory, private key file mode 0600.

Two processes that start together on an empty key directory must end up with the same key, so a
new key is written to a private temp file and published with ``os.link`` (atomic, fails if the file
exists); the loser loads the winner's key.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import WitnessKeyError

PRIVATE_KEY_FILE = "private_key.pem"
PUBLIC_KEY_FILE = "public_key.pem"

# An entry signature covers the content hash of the entry that closes its signing group; through the
# prev_hash chain that hash commits to every entry of the group (a group of one is a plain signature).
ENTRY_DOMAIN = b"infrafabric-witness/entry/v2\n"
CHECKPOINT_DOMAIN = b"infrafabric-witness/checkpoint/v1\n"


def public_key_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Short stable identifier of a public key (first 16 hex of SHA-256 of the raw key)."""
    return hashlib.sha256(public_key_bytes(public_key)).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key(source: str | bytes | Path) -> Ed25519PublicKey:
    """Load a public key from a PEM file path, PEM text, or 64-hex raw key text."""
    data: bytes
    if isinstance(source, Path) or (isinstance(source, str) and not source.lstrip().startswith("-----") and os.path.exists(source)):
        data = Path(source).read_bytes()
    elif isinstance(source, str):
        data = source.encode("ascii", "replace")
    else:
        data = bytes(source)
    text = data.strip()
    try:
        if text.startswith(b"-----"):
            key = serialization.load_pem_public_key(text)
        elif len(text) == 64:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode("ascii")))
        elif len(text) == 32:
            key = Ed25519PublicKey.from_public_bytes(text)
        else:
            raise ValueError("not PEM, not 64 hex characters")
    except (ValueError, TypeError) as exc:
        raise WitnessKeyError(f"cannot load public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise WitnessKeyError("public key is not an Ed25519 key")
    return key


def verify_signature(public_key: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        public_key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def failing_signatures(public_key: Ed25519PublicKey, items: Sequence[tuple[str, bytes]]) -> set[int]:
    """Indexes of the (signature hex, message) items that do not verify under ``public_key``.

    Large sets (a log signed entry by entry) are split over threads: Ed25519 verify releases the GIL.
    """

    def scan(lo: int, hi: int) -> list[int]:
        return [i for i in range(lo, hi) if not verify_signature(public_key, *items[i])]

    workers = min(os.cpu_count() or 1, 4)
    if len(items) < 512 or workers < 2:
        return set(scan(0, len(items)))
    step = -(-len(items) // workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="witness-verify") as pool:
        chunks = pool.map(scan, range(0, len(items), step), range(step, len(items) + step, step))
        return {i for bad in chunks for i in bad}


@dataclass(frozen=True)
class WitnessKeys:
    """The signing key pair of a witness (the private key never leaves this object)."""

    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    key_id: str

    @classmethod
    def generate(cls) -> "WitnessKeys":
        private = Ed25519PrivateKey.generate()
        return cls(private, private.public_key(), key_id_of(private.public_key()))

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey) -> "WitnessKeys":
        return cls(private, private.public_key(), key_id_of(private.public_key()))

    def sign_entry(self, content_hash: bytes) -> bytes:
        """Sign the content hash of a group's closing entry (see ``ENTRY_DOMAIN``)."""
        return self.private_key.sign(ENTRY_DOMAIN + content_hash)

    def sign_checkpoint(self, payload: bytes) -> bytes:
        return self.private_key.sign(CHECKPOINT_DOMAIN + payload)

    @property
    def public_pem(self) -> str:
        return public_key_pem(self.public_key)

    def __repr__(self) -> str:  # never print key material
        return f"WitnessKeys(key_id={self.key_id!r})"


def _check_private_permissions(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WitnessKeyError(
            f"private key {path} is accessible by group/others (mode {mode:04o}); chmod 600 it",
            error_code="WITNESS_KEY_PERMISSIONS",
        )


def load_or_create_keys(key_dir: str | os.PathLike[str], *, create: bool = True) -> WitnessKeys:
    """Load the key pair in ``key_dir``, creating it (0600 private, 0644 public) when absent and ``create``."""
    directory = Path(key_dir)
    private_path = directory / PRIVATE_KEY_FILE
    public_path = directory / PUBLIC_KEY_FILE
    if not create and not private_path.exists():
        raise WitnessKeyError(f"no witness key in {directory}", error_code="WITNESS_KEY_MISSING")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not private_path.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".key-")  # mkstemp creates the file 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, private_path)
            except FileExistsError:
                pass  # another process published its key first; use that one
        finally:
            os.unlink(tmp)
    _check_private_permissions(private_path)
    try:
        loaded = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise WitnessKeyError(f"cannot load private key {private_path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise WitnessKeyError(f"{private_path} is not an Ed25519 private key")
    keys = WitnessKeys.from_private(loaded)
    pem_text = keys.public_pem
    if not public_path.exists() or public_path.read_text() != pem_text:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".pub-")
        with os.fdopen(fd, "w") as fh:
            fh.write(pem_text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, public_path)
    return keys
