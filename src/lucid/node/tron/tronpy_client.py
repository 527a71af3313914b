"""TRON mainnet/testnet client through ``tronpy`` (selected by configuration; not the default).

tronpy is synchronous, so every call runs in a worker thread. The transaction is built and signed in
``prepare_usdt_transfer`` (its txid is known before broadcast), which is what makes recovery exact.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..validators import to_micros
from .base import PreparedTransfer, TransferResult, TwoPhaseTronClient

__all__ = ["TronpyClient"]

USDT_CONTRACT_MAINNET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


class TronpyClient(TwoPhaseTronClient):
    def __init__(self, *, private_key_hex: str, network: str = "nile", usdt_contract: str = USDT_CONTRACT_MAINNET,
                 fee_limit_sun: int = 30_000_000, api_key: str | None = None) -> None:
        try:
            from tronpy import Tron  # type: ignore[import-not-found]
            from tronpy.keys import PrivateKey  # type: ignore[import-not-found]
            from tronpy.providers import HTTPProvider  # type: ignore[import-not-found]
        except ImportError as exc:  # pragma: no cover - depends on an optional package
            raise RuntimeError("tronpy is not installed: pip install tronpy") from exc
        provider = HTTPProvider(api_key=api_key) if api_key else None
        self._client = Tron(provider=provider, network=network) if provider else Tron(network=network)
        self._key = PrivateKey(bytes.fromhex(private_key_hex))
        self._owner = self._key.public_key.to_base58check_address()
        self._contract_address = usdt_contract
        self._fee_limit = fee_limit_sun

    def _prepare_sync(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        contract = self._client.get_contract(self._contract_address)
        txn = (contract.functions.transfer(to_address, to_micros(amount)).with_owner(self._owner)
               .fee_limit(self._fee_limit).memo(reference).build().sign(self._key))
        payload: dict[str, Any] = txn.to_json()
        exp = datetime.fromtimestamp(payload["raw_data"]["expiration"] / 1000, tz=UTC)
        return PreparedTransfer(txn.txid, to_address, amount, reference, exp, payload)

    async def prepare_usdt_transfer(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        return await asyncio.to_thread(self._prepare_sync, to_address, amount, reference)

    def _broadcast_sync(self, prepared: PreparedTransfer) -> TransferResult:
        from tronpy.tron import Transaction  # type: ignore[import-not-found]

        txn = Transaction.from_json(prepared.payload, client=self._client)
        try:
            txn.broadcast()
        except Exception as exc:  # noqa: BLE001 - tronpy raises many types; the message is the outcome
            if "DUP_TRANSACTION" in str(exc):
                return {"success": True, "transaction_hash": prepared.txid, "error": None, "duplicate": True}
            return {"success": False, "transaction_hash": None, "error": str(exc)}
        return {"success": True, "transaction_hash": prepared.txid, "error": None}

    async def broadcast(self, prepared: PreparedTransfer) -> TransferResult:
        return await asyncio.to_thread(self._broadcast_sync, prepared)

    def _get_sync(self, txid: str) -> TransferResult | None:
        try:
            info = self._client.get_transaction_info(txid)
        except Exception:  # noqa: BLE001 - tronpy raises TransactionNotFound
            return None
        if not info:
            return None
        ok = info.get("receipt", {}).get("result") == "SUCCESS"
        return {"success": ok, "transaction_hash": txid, "error": None if ok else info.get("resMessage")}

    async def get_transaction(self, txid: str) -> TransferResult | None:
        return await asyncio.to_thread(self._get_sync, txid)

    async def get_balance(self, address: str) -> Decimal:
        contract = await asyncio.to_thread(self._client.get_contract, self._contract_address)
        micros = await asyncio.to_thread(contract.functions.balanceOf, address)
        return Decimal(micros) / Decimal(10**6)
