"""Signed checkpoints: (size, Merkle root, time) signed by the witness key.

A verifier that holds a checkpoint knows how many entries the log had and what they hashed to, so a
truncated, edited or rewritten log no longer matches it (RFC 9162 signed tree heads play this role).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from backends.jsonsafe import loads_bounded

from .errors import WitnessFormatError
from .keys import CHECKPOINT_DOMAIN, WitnessKeys, key_id_of, verify_signature

_FIELDS = frozenset(("type", "size", "root", "timestamp", "key_id", "signature"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise WitnessFormatError(f"duplicate keys {dup}")
    return dict(pairs)


def strict_object(text: str | bytes, what: str) -> dict[str, Any]:
    """A JSON object with no duplicate key at any depth (two values for one key: which one is signed?)."""
    try:
        data = loads_bounded(text, object_pairs_hook=_no_duplicates)
    except WitnessFormatError as exc:
        raise WitnessFormatError(f"{what}: {exc.message}") from None
    except ValueError as exc:
        raise WitnessFormatError(f"{what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WitnessFormatError(f"{what} must be a JSON object")
    return data


@dataclass(frozen=True)
class Checkpoint:
    size: int
    root: str
    timestamp: str
    key_id: str
    signature: str

    @staticmethod
    def payload(size: int, root: str, timestamp: str, key_id: str) -> bytes:
        return f"{size}\n{root}\n{timestamp}\n{key_id}\n".encode("ascii")

    @classmethod
    def create(cls, keys: WitnessKeys, size: int, root: bytes, timestamp: str) -> "Checkpoint":
        root_hex = root.hex()
        signature = keys.sign_checkpoint(cls.payload(size, root_hex, timestamp, keys.key_id))
        return cls(size, root_hex, timestamp, keys.key_id, signature.hex())

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """True when the signature is by ``public_key`` over exactly these fields."""
        if self.key_id != key_id_of(public_key) or not all(
                v.isascii() for v in (self.root, self.timestamp, self.key_id, self.signature)):
            return False
        message = CHECKPOINT_DOMAIN + self.payload(self.size, self.root, self.timestamp, self.key_id)
        return verify_signature(public_key, self.signature, message)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "checkpoint", **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))  # "type" first: export lines are recognised by it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Checkpoint":
        """Strict: the five signed fields (and ``"type": "checkpoint"``), nothing else."""
        if not isinstance(data, dict):
            raise WitnessFormatError("bad checkpoint: not an object")
        extra = sorted(set(data) - _FIELDS)
        if extra:
            raise WitnessFormatError(f"bad checkpoint: unknown fields {extra} (not covered by its signature)")
        if data.get("type", "checkpoint") != "checkpoint":
            raise WitnessFormatError("bad checkpoint: type is not 'checkpoint'")
        try:
            size = data["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError("size must be a non-negative integer")
            fields = {k: data[k] for k in ("root", "timestamp", "key_id", "signature")}
            if not all(isinstance(v, str) and v.isascii() for v in fields.values()):
                raise ValueError("root, timestamp, key_id and signature must be ASCII strings")
            return cls(size=size, **fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise WitnessFormatError(f"bad checkpoint: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "Checkpoint":
        return cls.from_dict(strict_object(text, "checkpoint"))  # duplicate keys refused at any depth
