"""Seed 003 PayoutProcessor tests (unit: mocked repository, TRON client and audit logger) plus the
amount/address rules."""

from __future__ import annotations

from decimal import Decimal
from unittest.mock import AsyncMock

import pytest

from lucid.node.errors import ValidationError
from lucid.node.models.node_models import Node
from lucid.node.payouts import PayoutProcessor
from lucid.node.validators import validate_amount, validate_tron_address
from tests.fixtures.node_fixtures import TEST_WALLET, sample_node_data


class TestPayoutProcessor:
    @pytest.fixture
    async def payout_processor(self):
        mock_repository = AsyncMock()
        mock_tron_client = AsyncMock()
        mock_audit_logger = AsyncMock()
        processor = PayoutProcessor(repository=mock_repository, tron_client=mock_tron_client,
                                    audit_logger=mock_audit_logger)
        return processor, mock_repository, mock_tron_client, mock_audit_logger

    async def test_process_single_payout_success(self, payout_processor):
        processor, mock_repo, mock_tron, mock_audit = payout_processor
        payout_request = {"node_id": "node_test_001", "amount": 100.50, "currency": "USDT",
                          "wallet_address": TEST_WALLET}
        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        mock_tron.transfer_usdt.return_value = {"transaction_hash": "0x1234567890abcdef", "success": True}
        mock_repo.save_payout.return_value = None
        mock_audit.log_payout_operation.return_value = None
        result = await processor.process_payout(payout_request)
        assert result["status"] == "completed"
        assert result["transaction_hash"] == "0x1234567890abcdef"
        assert result["amount"] == 100.50
        assert isinstance(result["amount"], Decimal)
        mock_tron.transfer_usdt.assert_called_once_with(to_address=TEST_WALLET, amount=100.50)
        mock_audit.log_payout_operation.assert_called_once()
        assert mock_audit.log_payout_operation.call_args.args[0] == "payout.completed"

    async def test_process_batch_payouts_success(self, payout_processor):
        processor, mock_repo, mock_tron, _ = payout_processor
        batch_requests = [
            {"node_id": "node_test_001", "amount": 50.0, "currency": "USDT", "wallet_address": TEST_WALLET},
            {"node_id": "node_test_002", "amount": 75.0, "currency": "USDT", "wallet_address": TEST_WALLET}]
        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        mock_tron.transfer_usdt.return_value = {"transaction_hash": "0x1234567890abcdef", "success": True}
        mock_repo.save_payout.return_value = None
        result = await processor.process_batch_payouts(batch_requests)
        assert result["batch_id"] is not None
        assert result["total_processed"] == 2
        assert result["successful"] == 2
        assert result["failed"] == 0
        assert len(result["results"]) == 2
        assert mock_tron.transfer_usdt.call_count == 2
        keys = [c.args[0].idempotency_key for c in mock_repo.save_payout.call_args_list]
        assert keys == [f"{result['batch_id']}/0", f"{result['batch_id']}/1"]

    async def test_process_payout_insufficient_balance(self, payout_processor):
        processor, mock_repo, mock_tron, mock_audit = payout_processor
        payout_request = {"node_id": "node_test_001", "amount": 1000000.0, "currency": "USDT",
                          "wallet_address": TEST_WALLET}
        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        mock_tron.transfer_usdt.return_value = {"success": False, "error": "Insufficient balance"}
        result = await processor.process_payout(payout_request)
        assert result["status"] == "failed"
        assert "Insufficient balance" in result["error_message"]
        mock_audit.log_payout_operation.assert_called_once()

    async def test_process_payout_invalid_wallet_address(self, payout_processor):
        processor, mock_repo, mock_tron, _ = payout_processor
        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        with pytest.raises(ValidationError, match="Invalid wallet address"):
            await processor.process_payout({"node_id": "node_test_001", "amount": 100.0, "currency": "USDT",
                                            "wallet_address": "invalid_address"})
        mock_tron.transfer_usdt.assert_not_called()
        mock_repo.save_payout.assert_not_called()

    async def test_transfer_exception_is_not_reported_done(self, payout_processor):
        """An exception from the chain client means the outcome is unknown: not completed, not failed."""
        processor, mock_repo, mock_tron, _ = payout_processor
        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        mock_tron.transfer_usdt.side_effect = ConnectionError("node unreachable")
        result = await processor.process_payout({"node_id": "node_test_001", "amount": 1,
                                                 "wallet_address": TEST_WALLET})
        assert result["status"] == "processing"
        mock_repo.finalize.assert_not_called()

    async def test_already_completed_key_is_not_paid_again(self, payout_processor):
        processor, mock_repo, mock_tron, _ = payout_processor
        from lucid.node.models.payout_models import Payout

        mock_repo.get_node_by_id.return_value = Node(**sample_node_data())
        mock_repo.save_payout.return_value = Payout(idempotency_key="k-123456789", node_id="node_test_001",
                                                    amount=Decimal(5), wallet_address=TEST_WALLET,
                                                    status="completed", transaction_hash="abc")
        result = await processor.process_payout({"node_id": "node_test_001", "amount": 5,
                                                 "wallet_address": TEST_WALLET, "idempotency_key": "k-123456789"})
        assert result["status"] == "completed" and result["transaction_hash"] == "abc"
        mock_tron.transfer_usdt.assert_not_called()


class TestAmountAndAddressRules:
    @pytest.mark.parametrize("amount", ["0.000001", "1", "1000000", 100.5, "999999.999999"])
    def test_valid_amounts(self, amount):
        assert validate_amount(amount) == Decimal(str(amount))

    @pytest.mark.parametrize("amount", [0, -1, "-1000", "1000000.000001", "0.0000001", "1.1234567", "NaN",
                                        "Infinity", "abc", None, True])
    def test_invalid_amounts(self, amount):
        with pytest.raises(ValidationError) as exc:
            validate_amount(amount)
        assert exc.value.error_code == "LUCID_ERR_5000"

    @pytest.mark.parametrize("address", [
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6T",  # checksum broken by one character's case
        "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6",  # 33 characters
        "AR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",  # wrong prefix
        "invalid_address", "", None,
        "T0000000000000000000000000000000000"[:34],
    ])
    def test_invalid_addresses(self, address):
        with pytest.raises(ValidationError, match="Invalid wallet address"):
            validate_tron_address(address)

    def test_genuine_address(self):
        assert validate_tron_address(TEST_WALLET) == TEST_WALLET
