"""TRON client interface.

Exactly-once payouts need the transaction id *before* the transfer is broadcast: a TRON transaction is
built and signed locally, its id is the hash of its raw data, and the network refuses a duplicate id and
any transaction past its expiration. So the interface is two-phase: ``prepare_usdt_transfer`` (build +
sign, no side effect), ``broadcast`` (idempotent by txid), ``get_transaction`` (look the id up).
``transfer_usdt(to_address, amount)`` is the seed's one-shot call, kept for callers that need no recovery.
"""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

__all__ = ["PreparedTransfer", "TwoPhaseTronClient", "TransferResult"]

TransferResult = dict[str, Any]  # {"success": bool, "transaction_hash": str | None, "error": str | None}


@dataclass(frozen=True)
class PreparedTransfer:
    txid: str
    to_address: str
    amount: Decimal
    reference: str
    expiration: datetime
    payload: dict[str, Any]

    def to_payload(self) -> dict[str, Any]:
        return {"txid": self.txid, "to_address": self.to_address, "amount": str(self.amount),
                "reference": self.reference, "expiration": self.expiration.isoformat(), "raw": self.payload}

    @classmethod
    def from_payload(cls, d: dict[str, Any]) -> PreparedTransfer:
        exp = datetime.fromisoformat(d["expiration"])
        return cls(d["txid"], d["to_address"], Decimal(d["amount"]), d["reference"],
                   exp if exp.tzinfo else exp.replace(tzinfo=UTC), d["raw"])


class TwoPhaseTronClient(abc.ABC):
    """What the PayoutProcessor needs for crash-safe payouts."""

    #: how long after expiration a missing transaction is trusted to be gone for good
    expiry_grace_seconds: float = 60.0
    #: whether an accepted broadcast is already the outcome. True for a ledger that applies a transfer
    #: when it accepts it; False for a chain that executes it in a later block, where only the receipt
    #: (``get_transaction``) says whether the transfer happened.
    final_at_broadcast: bool = True

    @abc.abstractmethod
    async def prepare_usdt_transfer(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer: ...

    async def prepare_many(self, transfers: list[tuple[str, Decimal, str]]) -> list[PreparedTransfer]:
        """Prepare several ``(to_address, amount, reference)`` transfers, in order (one round trip where
        the client is remote)."""
        return [await self.prepare_usdt_transfer(to, amount, ref) for to, amount, ref in transfers]

    @abc.abstractmethod
    async def broadcast(self, prepared: PreparedTransfer) -> TransferResult: ...

    async def broadcast_many(self, prepared: list[PreparedTransfer]) -> list[TransferResult]:
        return [await self.broadcast(p) for p in prepared]

    @abc.abstractmethod
    async def get_transaction(self, txid: str) -> TransferResult | None:
        """The recorded outcome of a transaction, or None when the chain has never seen it."""

    @abc.abstractmethod
    async def get_balance(self, address: str) -> Decimal: ...

    async def transfer_usdt(self, to_address: str, amount: Decimal) -> TransferResult:
        prepared = await self.prepare_usdt_transfer(to_address, Decimal(str(amount)), f"adhoc-{uuid.uuid4().hex}")
        return await self.broadcast(prepared)

    def definitely_expired(self, prepared: PreparedTransfer, now: datetime) -> bool:
        return (now - prepared.expiration).total_seconds() > self.expiry_grace_seconds

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
