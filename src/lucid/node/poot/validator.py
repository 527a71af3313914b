"""PoOTValidator: the rejection rules, score and confidence of SPEC.md.

Rejections (InvalidPoOTError): timestamp in the future or older than 24 h, output over 1 MiB, node missing
or inactive, bad/missing Ed25519 signature for a node with a registered key, nonce already used by the
node in the last 24 h. The nonce check is enforced atomically by the database (the nonce row is inserted
with the validation); the read before it only avoids scoring work for an obvious replay.

Score (0-100) = output (0-30) + freshness (0-25) + reliability (0-25) + nonce quality (0-20); each part is
returned. Valid iff no rule failed and score >= ``min_valid_score``. Confidence (0-1) compares the score
with the node's history: 0.5 without history, else max(0.1, 1 - z/3).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from backends.inflight import InFlightLimit

from ..errors import InvalidPoOTError, NodeManagementError, NonceReplayError
from ..models.node_models import NodeStatus, utcnow
from ..models.poot_models import MAX_OUTPUT_BYTES, PoOTValidationResult, uuid7_text
from .repository import PoOTRepository, RepositoryTraits, ScoreWindowSource, traits_of
from .score_window import ScoreWindow
from .signing import as_utc, output_hash, poot_signing_message, verify_poot_signature

__all__ = ["PoOTValidator", "MAX_AGE", "FUTURE_SKEW"]

MAX_AGE = timedelta(hours=24)
FUTURE_SKEW = timedelta(seconds=5)  # clock skew tolerated for "not in the future"
_MAX_NONCE = 128
_C_LOG2_C = [0.0] + [c * math.log2(c) for c in range(1, _MAX_NONCE + 1)]


def shannon_entropy(s: str) -> float:
    """Bits per character: log2(n) - sum(c log2 c) / n over the character counts c (the c log2 c of
    counts up to the longest nonce come from a table: this runs on every proof)."""
    if not s:
        return 0.0
    n = len(s)
    counts = Counter(s).values()
    if n < len(_C_LOG2_C):
        return max(0.0, math.log2(n) - sum(map(_C_LOG2_C.__getitem__, counts)) / n)
    return max(0.0, math.log2(n) - sum(c * math.log2(c) for c in counts) / n)


class PoOTValidator:
    def __init__(self, repository: PoOTRepository, *, traits: RepositoryTraits | None = None,
                 min_valid_score: float = 40.0, history_size: int = 100, batch_concurrency: int = 32) -> None:
        """``traits``: what the repository does beyond the seed's four methods (default: what its class
        declares, ``repository.traits_of``). A repository that caches nodes has a signature failure re-checked
        against a fresh read before it is held against the node; one that records nonce replays in its
        storing transaction spares every honest proof the nonce look-up before scoring; one that keeps
        score windows is scored from its live window."""
        self.repository = repository
        self.traits = traits if traits is not None else traits_of(repository)
        self.min_valid_score = min_valid_score
        self.history_size = history_size
        self.batch_concurrency = batch_concurrency

    # ------------------------------------------------------------------ scoring parts
    @staticmethod
    def output_score(output_data: str) -> float:
        """Up to 30: non-empty output earns 10, its size the rest (full at 1 KiB and above)."""
        return 10.0 + 20.0 * min(1.0, len(output_data) / 1024) if output_data else 0.0

    @staticmethod
    def freshness_score(age: timedelta) -> float:
        return max(0.0, 25.0 * (1 - age / MAX_AGE))

    @staticmethod
    def reliability(history: Sequence[Any] | ScoreWindow) -> float:
        """0.7 x success rate + 0.3 x mean score / 100 over recent validations; 0.5 for a new node."""
        return (history if isinstance(history, ScoreWindow) else ScoreWindow.of(history)).reliability()

    @staticmethod
    def nonce_score(nonce: str) -> float:
        """Up to 20: length (full at 16) times character entropy (full at 3.5 bits/char)."""
        return 20.0 * min(1.0, len(nonce) / 16) * min(1.0, shannon_entropy(nonce) / 3.5)

    @staticmethod
    def confidence(score: float, history: Sequence[Any] | ScoreWindow) -> float:
        """0.5 with fewer than two valid proofs in the history, else max(0.1, 1 - z/3), z the score's
        distance from the valid scores' mean in standard deviations (ScoreWindow: O(1), exact)."""
        return (history if isinstance(history, ScoreWindow) else ScoreWindow.of(history)).confidence(score)

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, output_data: Any, timestamp: Any, nonce: Any, now: datetime) -> datetime:
        if not isinstance(timestamp, datetime):
            raise InvalidPoOTError("Timestamp out of valid range")
        ts = as_utc(timestamp)
        if ts > now + FUTURE_SKEW or ts < now - MAX_AGE:
            raise InvalidPoOTError("Timestamp out of valid range")
        if not isinstance(output_data, str) or not output_data:
            raise InvalidPoOTError("Output data missing")
        # The limit is in UTF-8 bytes (a character is 1-4 of them): only a string that could pass either
        # way is encoded, so the usual small proof is not copied on every request.
        if len(output_data) > MAX_OUTPUT_BYTES or (
                len(output_data) * 4 > MAX_OUTPUT_BYTES
                and len(output_data.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_BYTES):
            raise InvalidPoOTError("Output data too large")
        if not isinstance(nonce, str) or not nonce or len(nonce) > _MAX_NONCE or not nonce.isprintable():
            raise InvalidPoOTError("Invalid nonce")
        return ts

    async def validate_poot(self, node_id: str, output_data: str, timestamp: datetime, nonce: str, *,
                            signature: str | None = None, batch_id: str | None = None) -> PoOTValidationResult:
        started = time.perf_counter()
        now = utcnow()
        ts = self._check_inputs(output_data, timestamp, nonce, now)
        node = await self.repository.get_by_id(node_id)
        if node is None or getattr(node, "status", None) != NodeStatus.ACTIVE:
            raise InvalidPoOTError("Node not found or inactive")
        digest = output_hash(output_data)

        async def reject(message: str, cls: type[InvalidPoOTError] = InvalidPoOTError) -> InvalidPoOTError:
            await self.repository.save_validation(PoOTValidationResult(
                node_id=node_id, output_hash=digest, timestamp=ts, nonce=nonce, is_valid=False,
                errors=[message], batch_id=batch_id, validation_time_ms=(time.perf_counter() - started) * 1000))
            return cls(message)

        public_key = getattr(node, "public_key", None)
        if isinstance(public_key, str) and public_key:
            signed = poot_signing_message(node_id, output_data, ts, nonce)
            if not verify_poot_signature(public_key, signature, signed) and self.traits.caches_nodes:
                # The node may have been re-keyed elsewhere since it was cached: decide on a fresh read.
                node = await self.repository.get_by_id(node_id, fresh=True)
                if node is None or getattr(node, "status", None) != NodeStatus.ACTIVE:
                    raise InvalidPoOTError("Node not found or inactive")
                public_key = getattr(node, "public_key", None)
            if (isinstance(public_key, str) and public_key
                    and not verify_poot_signature(public_key, signature, signed)):
                raise await reject("Invalid or missing signature")
        if not self.traits.records_nonce_replays and \
                await self.repository.get_by_nonce(node_id, nonce, now - MAX_AGE):
            raise await reject("Nonce already used", NonceReplayError)
        history = await self._history(node_id)
        parts = {"output": self.output_score(output_data), "freshness": self.freshness_score(now - ts),
                 "reliability": 25.0 * history.reliability(), "nonce": self.nonce_score(nonce)}
        parts = {k: round(v, 2) for k, v in parts.items()}
        score = round(min(100.0, sum(parts.values())), 2)
        is_valid = score >= self.min_valid_score
        confidence = history.confidence(score)
        # model_construct: every field is computed here, in range by construction (0 <= score <= 100,
        # 0.1 <= confidence <= 1); validating them again cost more than computing them
        result = PoOTValidationResult.model_construct(
            validation_id=uuid7_text(), node_id=node_id, output_data=output_data, output_hash=digest, timestamp=ts,
            nonce=nonce, is_valid=is_valid, score=score, score_parts=parts, confidence=confidence,
            validation_time_ms=max((time.perf_counter() - started) * 1000, 0.001),
            errors=[] if is_valid else ["Score below threshold"], batch_id=batch_id, created_at=utcnow())
        # the repository re-reads the node in the storing transaction and refuses the proof if the node is
        # no longer active or no longer has this key; NonceReplayError if the nonce claim lost the race
        await self.repository.save_validation(
            result, claim_nonce=True,
            checked_against=(public_key if isinstance(public_key, str) and public_key else None,))
        return result

    async def _history(self, node_id: str) -> ScoreWindow:
        """The node's recent summaries: the repository's live window when it keeps one."""
        if self.traits.keeps_score_windows:
            window = await cast(ScoreWindowSource, self.repository).get_score_window(node_id, self.history_size)
            if isinstance(window, ScoreWindow):
                return window
        history = await self.repository.get_recent_validations(node_id, limit=self.history_size)
        return ScoreWindow.of(history if isinstance(history, list) else [], self.history_size)

    async def batch_validate_poot(self, validations: list[dict[str, Any]]) -> dict[str, Any]:
        """Validate concurrently. A rejected item counts under ``errors``, a scored-but-invalid one under
        ``invalid`` (the seed's summary)."""
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        sem = InFlightLimit(self.batch_concurrency)

        async def one(item: dict[str, Any]) -> dict[str, Any]:
            async with sem:
                try:
                    r = await self.validate_poot(item["node_id"], item["output_data"], item["timestamp"],
                                                 item["nonce"], signature=item.get("signature"), batch_id=batch_id)
                except NodeManagementError as exc:
                    return {"node_id": item.get("node_id"), "is_valid": False, "error": exc.message,
                            "error_code": exc.error_code}
                except (KeyError, TypeError) as exc:
                    return {"node_id": item.get("node_id"), "is_valid": False, "error": f"malformed item: {exc}",
                            "error_code": InvalidPoOTError.error_code}
                return r.public_dict()

        results = await asyncio.gather(*(one(v) for v in validations))
        errors = sum(1 for r in results if "error" in r)
        valid = sum(1 for r in results if r.get("is_valid"))
        return {"batch_id": batch_id, "results": results,
                "summary": {"total": len(results), "valid": valid, "invalid": len(results) - valid - errors,
                            "errors": errors}}

    async def get_score(self, node_id: str) -> dict[str, Any]:
        """The node's score is its latest valid proof; the status is that of its latest attempt."""
        latest = await self.repository.latest(node_id)
        if latest is None:
            return {"node_id": node_id, "score": 0.0, "calculated_at": utcnow(), "output_hash": None,
                    "validation_status": "pending", "confidence": 0.0}
        best = latest if latest.is_valid else await self.repository.latest(node_id, valid_only=True)
        history = await self.repository.get_recent_validations(node_id, limit=self.history_size)
        return {"node_id": node_id, "score": best.score if best else 0.0,
                "calculated_at": (best or latest).created_at, "output_hash": best.output_hash if best else None,
                "validation_status": "valid" if latest.is_valid else "invalid",
                "confidence": best.confidence if best else 0.0, "reliability": round(self.reliability(history), 4)}
