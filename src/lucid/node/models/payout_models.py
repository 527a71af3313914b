"""Payout models: exact decimal amounts, Base58Check TRON addresses, ledger states."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ValidationError
from ..validators import validate_amount, validate_tron_address
from .node_models import utcnow
from .types import UtcDatetime

__all__ = ["PayoutStatus", "PayoutRequest", "BatchPayoutRequest", "Payout", "new_payout_id"]


def new_payout_id() -> str:
    return f"payout_{uuid.uuid4().hex}"


class PayoutStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({PayoutStatus.COMPLETED, PayoutStatus.FAILED, PayoutStatus.CANCELLED})


def _check(fn: Any, value: Any) -> Any:
    try:
        return fn(value)
    except ValidationError as exc:  # pydantic wants ValueError with a message
        raise ValueError(exc.message) from exc


class PayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: Annotated[str, Field(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]
    amount: Decimal
    currency: Literal["USDT"] = "USDT"
    wallet_address: str
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    idempotency_key: Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")] | None = None
    scheduled_at: UtcDatetime | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, v: Any) -> Decimal:
        return _check(validate_amount, v)

    @field_validator("wallet_address")
    @classmethod
    def _wallet(cls, v: str) -> str:
        return _check(validate_tron_address, v)


class BatchPayoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: Annotated[str, Field(min_length=7, max_length=64, pattern=r"^batch_[A-Za-z0-9_-]+$")] | None = None
    payout_requests: list[PayoutRequest] = Field(min_length=1, max_length=1000)
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    scheduled_at: UtcDatetime | None = None


class Payout(BaseModel):
    """One ledger row. ``idempotency_key`` is unique in the database: the same key is never paid twice."""

    model_config = ConfigDict(validate_assignment=True)

    payout_id: str = Field(default_factory=new_payout_id)
    idempotency_key: str
    node_id: str
    amount: Decimal
    currency: str = "USDT"
    wallet_address: str
    status: PayoutStatus = PayoutStatus.PENDING
    priority: str = "normal"
    transaction_hash: str | None = None
    tx_payload: dict[str, Any] | None = None
    batch_id: str | None = None
    error_message: str | None = None
    retry_count: int = 0
    max_retries: int = 3
    scheduled_at: datetime | None = None
    processed_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def result(self) -> dict[str, Any]:
        """The processor's return shape (seed: status, transaction_hash, amount, error_message)."""
        return {
            "payout_id": self.payout_id, "idempotency_key": self.idempotency_key, "node_id": self.node_id,
            "amount": self.amount, "currency": self.currency, "wallet_address": self.wallet_address,
            "status": self.status.value, "transaction_hash": self.transaction_hash,
            "error_message": self.error_message, "batch_id": self.batch_id,
        }

    def public_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"tx_payload"})
        d["amount"] = str(self.amount)
        return d
