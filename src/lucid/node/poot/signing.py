"""Ed25519 signatures over a PoOT submission (node_id, SHA-256 of the output, timestamp, nonce)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..validators import ed25519_key_is_weak

__all__ = ["poot_signing_message", "sign_poot", "verify_poot_signature", "output_hash", "as_utc"]


def as_utc(ts: datetime) -> datetime:
    """Naive timestamps are taken as UTC (the seed's tests use datetime.utcnow())."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def output_hash(output_data: str) -> str:
    return hashlib.sha256(output_data.encode()).hexdigest()


def poot_signing_message(node_id: str, output_data: str, timestamp: datetime, nonce: str) -> bytes:
    """Canonical bytes: microsecond epoch integer, so ISO formatting differences cannot break a signature."""
    micros = int(as_utc(timestamp).timestamp() * 1_000_000)
    return f"lucid-poot-v1\n{node_id}\n{output_hash(output_data)}\n{micros}\n{nonce}".encode()


def sign_poot(private_key: Ed25519PrivateKey, node_id: str, output_data: str, timestamp: datetime,
              nonce: str) -> str:
    return base64.b64encode(private_key.sign(poot_signing_message(node_id, output_data, timestamp, nonce))).decode()


def verify_poot_signature(public_key_b64: str, signature_b64: str | None, message: bytes) -> bool:
    if not signature_b64:
        return False
    try:
        raw = base64.b64decode(public_key_b64)
        if ed25519_key_is_weak(raw):  # a key stored before keys were checked: it would verify forgeries
            return False
        key = Ed25519PublicKey.from_public_bytes(raw)
        key.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
