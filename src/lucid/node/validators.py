"""Boundary validators shared by the models, the services and the payout processor.

TRON addresses are checked with the real Base58Check rule (version byte 0x41 + double-SHA-256 checksum),
using the ``base58`` library; amounts are exact decimals (USDT has 6 decimals, so float input is refused
when it cannot be represented exactly in micro-units).
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from decimal import Decimal, InvalidOperation
from typing import Any

import base58

from .errors import ValidationError

__all__ = [
    "NODE_ID_RE", "POOL_ID_RE", "BATCH_ID_RE", "SAFE_TEXT_RE", "validate_tron_address", "validate_amount",
    "to_micros", "from_micros", "validate_node_id", "validate_public_key", "MAX_AMOUNT", "USDT_DECIMALS",
    "NodeValidator", "ed25519_key_is_weak",
]

NODE_ID_RE = re.compile(r"^node_[A-Za-z0-9_-]{3,59}\Z")
POOL_ID_RE = re.compile(r"^pool_[A-Za-z0-9_-]{3,59}\Z")
BATCH_ID_RE = re.compile(r"^batch_[A-Za-z0-9_-]{1,58}\Z")
SAFE_TEXT_RE = r"^[\w .,()/+:-]*$"  # no quotes, angle brackets or semicolons: stored text stays inert
USDT_DECIMALS = 6
MAX_AMOUNT = Decimal("1000000")
_MICRO = Decimal(10) ** USDT_DECIMALS
_SUSPICIOUS = ("00000000", "ffffffff", "12345678")


def validate_tron_address(address: Any) -> str:
    """Return the address when it is a genuine mainnet TRON Base58Check address, else ValidationError."""
    if not isinstance(address, str) or len(address) != 34 or not address.startswith("T"):
        raise ValidationError("Invalid wallet address: a TRON address is 34 characters starting with T")
    if any(s in address.lower() for s in _SUSPICIOUS):
        raise ValidationError("Invalid wallet address: suspicious pattern")
    try:
        raw = base58.b58decode_check(address)
    except ValueError as exc:
        raise ValidationError("Invalid wallet address: Base58Check checksum failed") from exc
    if len(raw) != 21 or raw[0] != 0x41:
        raise ValidationError("Invalid wallet address: not a TRON (0x41) address")
    return address


def validate_amount(amount: Any) -> Decimal:
    """Exact USDT amount: 0 < amount <= 1,000,000 with at most 6 decimals."""
    if isinstance(amount, bool) or amount is None:
        raise ValidationError("Invalid amount")
    try:
        value = Decimal(str(amount)) if isinstance(amount, float) else Decimal(amount)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ValidationError("Invalid amount: not a number") from exc
    if not value.is_finite():
        raise ValidationError("Invalid amount: not finite")
    if value <= 0:
        raise ValidationError("Invalid amount: must be greater than 0")
    if value > MAX_AMOUNT:
        raise ValidationError("Invalid amount: above the 1,000,000 maximum")
    if value != value.quantize(Decimal(1) / _MICRO):
        raise ValidationError("Invalid amount: at most 6 decimals")
    return value


def to_micros(amount: Decimal) -> int:
    """Integer micro-USDT: the ledger stores integers so both engines sum exactly."""
    return int((amount * _MICRO).to_integral_exact())


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / _MICRO).normalize() if micros % 1_000_000 else Decimal(micros // 1_000_000)


def validate_node_id(node_id: Any) -> str:
    if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id):
        raise ValidationError("Invalid node id", details={"pattern": NODE_ID_RE.pattern})
    return node_id


def validate_public_key(value: str) -> str:
    """A node's Ed25519 public key: base64 of the 32 raw bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("public_key must be base64") from exc
    if len(raw) != 32:
        raise ValueError("public_key must be a 32-byte Ed25519 key")
    if ed25519_key_is_weak(raw):
        raise ValueError("public_key must be a canonical Ed25519 point of large order")
    return value


_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _ed25519_decode(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 5.1.3 point decoding, strict: None for y >= p, x = 0 with the sign bit set, or no x."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return None
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P:
        x = x * _SQRT_M1 % _P
        if (v * x * x - u) % _P:
            return None
    if x == 0 and sign:
        return None
    return (_P - x if x & 1 != sign else x), y


def _ed25519_double(pt: tuple[int, int]) -> tuple[int, int]:
    x, y = pt
    k = _D * x * x * y * y % _P
    return (2 * x * y * pow(1 + k, -1, _P) % _P, (y * y + x * x) * pow(1 - k, -1, _P) % _P)


@functools.lru_cache(maxsize=4096)
def ed25519_key_is_weak(raw: bytes) -> bool:
    """True for a key no one should accept: not 32 bytes, not a canonical curve point, or of small order.

    A small-order key (the identity and the other 7 torsion points) lets R = small point, S = 0 verify
    for any message, and OpenSSL's verify does not refuse it. Cached: verification asks on every proof."""
    if len(raw) != 32:
        return True
    pt = _ed25519_decode(raw)
    if pt is None:
        return True
    for _ in range(3):  # the cofactor is 8: small order iff 8P is the identity
        pt = _ed25519_double(pt)
    return pt == (0, 1)


class NodeValidator:
    """Cross-field checks the pydantic models cannot express alone (async so a service can await it)."""

    reserved_node_names = ("system", "admin")

    async def validate_create_request(self, request: Any) -> None:
        name = getattr(request, "name", "")
        if name.lower() in self.reserved_node_names:
            raise ValidationError("Invalid node name: reserved")
        self._check_limits_fit_hardware(request)

    async def validate_update_request(self, request: Any) -> None:
        self._check_limits_fit_hardware(request)

    async def validate_node(self, node: Any) -> None:
        """The node an update produces: a PUT of limits alone is checked against the stored hardware."""
        self._check_limits_fit_hardware(node)

    async def validate_node_id(self, node_id: str) -> None:
        validate_node_id(node_id)

    @staticmethod
    def _check_limits_fit_hardware(request: Any) -> None:
        hw = getattr(request, "hardware_info", None)
        cfg = getattr(request, "configuration", None)
        limits = getattr(cfg, "resource_limits", None) if cfg is not None else None
        if hw is None or limits is None:
            return
        if limits.memory_bytes is not None and limits.memory_bytes > hw.memory.total_bytes:
            raise ValidationError("Invalid hardware info: memory limit exceeds installed memory")
        if limits.disk_bytes is not None and limits.disk_bytes > hw.storage.total_bytes:
            raise ValidationError("Invalid hardware info: disk limit exceeds installed storage")
