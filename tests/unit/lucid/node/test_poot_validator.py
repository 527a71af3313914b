"""Seed 003 PoOTValidator tests (unit, mocked repository) plus the score/confidence/signature rules."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from unittest.mock import AsyncMock

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lucid.node.errors import InvalidPoOTError, NonceReplayError
from lucid.node.models.node_models import Node
from lucid.node.models.poot_models import PoOTValidationResult
from lucid.node.poot import PoOTValidator, sign_poot


def utcnow_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class TestPoOTValidator:
    @pytest.fixture
    async def poot_validator(self):
        mock_repository = AsyncMock()
        return PoOTValidator(mock_repository), mock_repository

    @staticmethod
    def _ok(repo: AsyncMock) -> None:
        repo.get_by_id.return_value = Node(status="active")
        repo.get_by_nonce.return_value = None
        repo.get_recent_validations.return_value = []
        repo.save_validation.return_value = None

    async def test_validate_poot_success(self, poot_validator):
        validator, mock_repo = poot_validator
        self._ok(mock_repo)
        result = await validator.validate_poot("node_test_001", "base64_encoded_output_data", utcnow_naive(),
                                               "unique_nonce_12345")
        assert result.node_id == "node_test_001"
        assert result.output_data == "base64_encoded_output_data"
        assert result.is_valid is True
        assert result.score > 0
        assert result.confidence > 0
        assert result.validation_time_ms > 0
        assert set(result.score_parts) == {"output", "freshness", "reliability", "nonce"}
        assert result.score == pytest.approx(sum(result.score_parts.values()), abs=0.05)
        mock_repo.save_validation.assert_called_once()
        assert mock_repo.save_validation.call_args.kwargs == {"claim_nonce": True, "checked_against": (None,)}

    async def test_validate_poot_timestamp_out_of_range(self, poot_validator):
        validator, _ = poot_validator
        with pytest.raises(InvalidPoOTError, match="Timestamp out of valid range"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive() - timedelta(hours=25), "nonce_1234")

    async def test_validate_poot_future_timestamp(self, poot_validator):
        validator, _ = poot_validator
        with pytest.raises(InvalidPoOTError, match="Timestamp out of valid range"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive() + timedelta(minutes=5), "nonce_1")

    async def test_validate_poot_large_output_data(self, poot_validator):
        validator, _ = poot_validator
        with pytest.raises(InvalidPoOTError, match="Output data too large") as exc:
            await validator.validate_poot("node_test_001", "A" * (1024 * 1024 + 1), utcnow_naive(), "nonce_1")
        assert exc.value.error_code == "LUCID_ERR_5005"

    async def test_exactly_one_mib_is_accepted(self, poot_validator):
        validator, repo = poot_validator
        self._ok(repo)
        r = await validator.validate_poot("node_test_001", "A" * (1024 * 1024), utcnow_naive(), "n0nce-Qx81Zk")
        assert r.score_parts["output"] == 30

    async def test_validate_poot_node_inactive(self, poot_validator):
        validator, mock_repo = poot_validator
        mock_repo.get_by_id.return_value = Node(status="inactive")
        with pytest.raises(InvalidPoOTError, match="Node not found or inactive"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive(), "unique_nonce_12345")

    async def test_validate_poot_node_missing(self, poot_validator):
        validator, mock_repo = poot_validator
        mock_repo.get_by_id.return_value = None
        with pytest.raises(InvalidPoOTError, match="Node not found or inactive"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive(), "unique_nonce_12345")

    async def test_nonce_reuse_rejected_and_recorded(self, poot_validator):
        validator, repo = poot_validator
        self._ok(repo)
        repo.get_by_nonce.return_value = {"node_id": "node_test_001", "nonce": "n"}
        with pytest.raises(InvalidPoOTError, match="Nonce already used"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive(), "unique_nonce_12345")
        saved = repo.save_validation.call_args.args[0]
        assert saved.is_valid is False and saved.errors == ["Nonce already used"] and saved.score == 0

    async def test_lost_nonce_race_propagates(self, poot_validator):
        """The database said the nonce was taken between the check and the insert."""
        validator, repo = poot_validator
        self._ok(repo)
        repo.save_validation.side_effect = NonceReplayError("Nonce already used")
        with pytest.raises(InvalidPoOTError, match="Nonce already used"):
            await validator.validate_poot("node_test_001", "data", utcnow_naive(), "unique_nonce_12345")

    async def test_batch_validate_poot_success(self, poot_validator):
        validator, mock_repo = poot_validator
        self._ok(mock_repo)
        now = utcnow_naive()
        result = await validator.batch_validate_poot([
            {"node_id": "node_test_001", "output_data": "data1", "timestamp": now, "nonce": "nonce1"},
            {"node_id": "node_test_002", "output_data": "data2", "timestamp": now, "nonce": "nonce2"}])
        assert "batch_id" in result
        assert len(result["results"]) == 2
        assert result["summary"] == {"total": 2, "valid": 2, "invalid": 0, "errors": 0}

    async def test_batch_validate_poot_mixed_results(self, poot_validator):
        validator, mock_repo = poot_validator

        def mock_get_by_id(node_id):
            return Node(status="active") if node_id == "node_test_001" else Node(status="inactive")

        mock_repo.get_by_id.side_effect = mock_get_by_id
        mock_repo.get_by_nonce.return_value = None
        mock_repo.get_recent_validations.return_value = []
        now = utcnow_naive()
        result = await validator.batch_validate_poot([
            {"node_id": "node_test_001", "output_data": "data1", "timestamp": now, "nonce": "nonce1"},
            {"node_id": "node_test_002", "output_data": "data2", "timestamp": now, "nonce": "nonce2"}])
        assert result["summary"]["total"] == 2
        assert result["summary"]["valid"] == 1
        assert result["summary"]["invalid"] == 0
        assert result["summary"]["errors"] == 1

    async def test_batch_counts_low_score_as_invalid(self, poot_validator):
        validator, repo = poot_validator
        self._ok(repo)
        validator.min_valid_score = 99
        result = await validator.batch_validate_poot([
            {"node_id": "node_test_001", "output_data": "x", "timestamp": utcnow_naive(), "nonce": "aaaa"}])
        assert result["summary"] == {"total": 1, "valid": 0, "invalid": 1, "errors": 0}
        assert result["results"][0]["errors"] == ["Score below threshold"]


class TestScoring:
    def test_parts_bounds(self):
        v = PoOTValidator(AsyncMock())
        assert v.output_score("") == 0 and v.output_score("x" * 5000) == 30
        assert v.freshness_score(timedelta(0)) == 25 and v.freshness_score(timedelta(hours=24)) == 0
        assert v.nonce_score("aaaaaaaaaaaaaaaaaaaa") == 0  # no entropy
        assert 19 < v.nonce_score("Xk29-pQ7_zLm4rT8") <= 20

    def test_reliability_and_confidence_from_history(self):
        v = PoOTValidator(AsyncMock())
        assert v.reliability([]) == 0.5
        hist = [PoOTValidationResult(node_id="node_x_1", is_valid=True, score=s) for s in (60, 70, 80)]
        assert v.reliability(hist) == pytest.approx(0.7 + 0.3 * 0.7)
        assert v.confidence(70, hist) == 1.0
        assert v.confidence(70, []) == 0.5
        far = v.confidence(10, hist)
        assert far == 0.1  # a score far from the node's history is not trusted


class TestSignedSubmissions:
    @pytest.fixture
    def keyed(self):
        key = Ed25519PrivateKey.generate()
        pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        repo = AsyncMock()
        repo.get_by_id.return_value = Node(status="active", public_key=pub)
        repo.get_by_nonce.return_value = None
        repo.get_recent_validations.return_value = []
        return PoOTValidator(repo), key, repo

    async def test_valid_signature_accepted(self, keyed):
        validator, key, _ = keyed
        ts = utcnow_naive()
        sig = sign_poot(key, "node_abc_1", "payload", ts, "nonce-Kq81xZ")
        r = await validator.validate_poot("node_abc_1", "payload", ts, "nonce-Kq81xZ", signature=sig)
        assert r.is_valid

    @pytest.mark.parametrize("tamper", ["missing", "other_key", "other_output", "other_nonce"])
    async def test_bad_signature_rejected(self, keyed, tamper):
        validator, key, repo = keyed
        ts = utcnow_naive()
        signer = Ed25519PrivateKey.generate() if tamper == "other_key" else key
        sig = sign_poot(signer, "node_abc_1", "payload-2" if tamper == "other_output" else "payload", ts,
                        "nonce-other" if tamper == "other_nonce" else "nonce-Kq81xZ")
        with pytest.raises(InvalidPoOTError, match="signature"):
            await validator.validate_poot("node_abc_1", "payload", ts, "nonce-Kq81xZ",
                                          signature=None if tamper == "missing" else sig)
        assert repo.save_validation.call_args.args[0].is_valid is False
