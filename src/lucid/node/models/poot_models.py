"""PoOT (proof of observation time) request and result models."""

from __future__ import annotations

import random
import time
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .node_models import utcnow
from .types import ProofDatetime

__all__ = ["PoOTValidationRequest", "PoOTBatchItem", "PoOTBatchRequest", "PoOTValidationResult", "PoOTScore",
           "MAX_OUTPUT_BYTES"]

MAX_OUTPUT_BYTES = 1024 * 1024
Nonce = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
NodeIdStr = Annotated[str, Field(min_length=8, max_length=64, pattern=r"^node_[a-zA-Z0-9_-]+$")]


class PoOTValidationRequest(BaseModel):
    """Body of POST /nodes/{node_id}/poot/validate. The size rule is the validator's (one error message)."""

    model_config = ConfigDict(extra="forbid")
    # The parser's bound is loose so the validator's rule (MAX_OUTPUT_BYTES, LUCID_ERR_5005) is the one a
    # client meets; the schema documents that real limit.
    output_data: Annotated[str, Field(min_length=1, max_length=2 * MAX_OUTPUT_BYTES,
                                      json_schema_extra={"maxLength": MAX_OUTPUT_BYTES})]
    timestamp: ProofDatetime
    nonce: Nonce
    signature: Annotated[str, Field(max_length=200)] | None = None


class PoOTBatchItem(PoOTValidationRequest):
    node_id: NodeIdStr


class PoOTBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    validations: list[PoOTBatchItem] = Field(min_length=1, max_length=1000)


def uuid7_text() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then 74 random bits.

    Validation ids key the validations table; uuid4 keys landed on random pages of its index, each one
    a page rewritten in the WAL at commit. Time-ordered keys append at the index's right edge. The random
    bits come from ``random`` (reseeded after fork): ids are unique, not secret, and os.urandom's
    syscall gives up the GIL on the validation hot path."""
    rand = _randbits(74)
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & _LOW62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_randbits = random.getrandbits
_LOW62 = (1 << 62) - 1


class PoOTValidationResult(BaseModel):
    validation_id: str = Field(default_factory=lambda: uuid7_text())
    node_id: str
    output_data: str = ""
    output_hash: str = ""
    timestamp: datetime | None = None
    nonce: str = ""
    is_valid: bool = False
    score: float = Field(default=0.0, ge=0, le=100)
    score_parts: dict[str, float] = Field(default_factory=dict)
    confidence: float = Field(default=0.0, ge=0, le=1)
    validation_time_ms: float = Field(default=0.0, ge=0)
    errors: list[str] = Field(default_factory=list)
    batch_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def public_dict(self) -> dict[str, Any]:
        """API view: the (up to 1 MiB) output itself is not echoed back."""
        return self.model_dump(mode="json", exclude={"output_data"})

    def public_json(self) -> bytes:
        """``public_dict`` as JSON, written by pydantic in one pass (the hot route's answer; a dump
        followed by json.dumps cost several times more)."""
        return self.__pydantic_serializer__.to_json(self, exclude={"output_data"})


class PoOTScore(BaseModel):
    node_id: str
    score: float = Field(ge=0, le=100)
    calculated_at: datetime
    output_hash: str | None = None
    validation_status: Literal["valid", "invalid", "pending"]
    confidence: float = Field(ge=0, le=1)
