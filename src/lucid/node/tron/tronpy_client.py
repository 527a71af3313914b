"""TRON mainnet/testnet client through ``tronpy`` (selected by configuration; not the default).

tronpy is synchronous, so every call runs in a worker thread. The transaction is built and signed in
``prepare_usdt_transfer`` (its txid is known before broadcast), which is what makes recovery exact.

Two things tronpy leaves to the caller are done here, because payouts depend on them:

* tronpy (0.6.x, online build) takes the txid from the full node's ``wallet/getsignweight`` answer and
  signs it. A txid is the sha256 of the protobuf-serialized ``raw_data``, so it is recomputed locally and a
  node that answers another hash is refused before anything is signed.
* "unknown outcome" is kept apart from "refused": a transport failure or a busy node raises
  :class:`TronNodeUnavailableError` (the payout stays in processing and is reconciled by txid) instead of
  being reported as a failed transfer or as a transaction the chain has never seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..errors import (
    TronConfigurationError,
    TronIntegrityError,
    TronNodeError,
    TronNodeUnavailableError,
    ValidationError,
)
from ..validators import to_micros
from .base import PreparedTransfer, TransferResult, TwoPhaseTronClient

if TYPE_CHECKING:  # pragma: no cover
    from tronpy.contract import Contract  # type: ignore[import-not-found]
    from tronpy.providers import HTTPProvider  # type: ignore[import-not-found]

__all__ = ["TronpyClient", "TronConfigurationError", "TronNodeError", "TronNodeUnavailableError",
           "TronIntegrityError", "USDT_CONTRACT_MAINNET", "local_txid", "micros_to_decimal"]

USDT_CONTRACT_MAINNET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
USDT_DECIMALS = 6
MEMO_KEY_DOMAIN = b"lucid-payout-memo/v1\n"

#: broadcast answers that mean "not accepted now, may be accepted later": the outcome is not final
_TRANSIENT_CODES = frozenset({"SERVER_BUSY", "NO_CONNECTION", "NOT_ENOUGH_EFFECTIVE_CONNECTION",
                              "BLOCK_UNSOLIDIFIED"})


class _SecretKey:
    """Holds the signing key so that repr/str (logs, tracebacks, debuggers) never show it."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __repr__(self) -> str:
        return "<redacted private key>"

    __str__ = __repr__


def local_txid(raw_data: dict[str, Any]) -> str:
    """sha256 of the protobuf-serialized ``raw_data``: what the network uses as the transaction id.

    tronpy's offline helper serializes the contract, ref block, times and fee limit but drops the memo
    (``data``), so the memo is added here; without it every transfer with a memo would hash wrongly.
    """
    from tronpy.proto.transaction import _raw_data_to_protobuf  # type: ignore[import-not-found]

    raw = _raw_data_to_protobuf(raw_data)
    if raw_data.get("data"):
        raw.data = bytes.fromhex(raw_data["data"])
    return hashlib.sha256(raw.SerializeToString()).hexdigest()


def micros_to_decimal(micros: int) -> Decimal:
    """Exact USDT amount of an integer micro amount: built from digits, so no context precision applies
    (Decimal division or scaleb round to 28 digits)."""
    whole, frac = divmod(int(micros), 10**USDT_DECIMALS)
    return Decimal(f"{whole}.{frac:06d}".rstrip("0").rstrip("."))


def _node_message(payload: dict[str, Any]) -> str:
    """java-tron sends ``message`` hex-encoded; fall back to the raw text when it is not."""
    msg = str(payload.get("message", ""))
    try:
        return bytes.fromhex(msg).decode()
    except ValueError:
        return msg


class TronpyClient(TwoPhaseTronClient):
    """USDT (TRC-20) payouts on a TRON network through tronpy.

    ``provider`` injects a ready tronpy ``HTTPProvider`` (a private full node, or a test transport); without
    it one is made for ``network`` (with ``api_key`` for TronGrid).
    """

    #: TRON executes a transaction in a block after accepting it; a transfer can still fail there
    #: (out of energy, a reverted contract call), so the receipt, not the broadcast, completes a payout
    final_at_broadcast = False

    def __init__(self, *, private_key_hex: str, network: str = "nile", usdt_contract: str | None = None,
                 fee_limit_sun: int = 30_000_000, api_key: str | None = None,
                 provider: HTTPProvider | None = None) -> None:
        try:
            from tronpy import Tron  # type: ignore[import-not-found]
            from tronpy.defaults import conf_for_name  # type: ignore[import-not-found]
            from tronpy.keys import PrivateKey  # type: ignore[import-not-found]
            from tronpy.providers import HTTPProvider
        except ImportError as exc:  # pragma: no cover - depends on an optional package
            raise TronConfigurationError("tronpy is not installed: pip install 'infrafabric-lucid[tron]'") from exc
        try:
            self._key = _SecretKey(PrivateKey(bytes.fromhex(private_key_hex)))
        except (ValueError, TypeError):
            # from None: the parsing error must not carry the key text into a traceback
            raise TronConfigurationError("the TRON private key must be 64 hex characters of a valid key") from None
        del private_key_hex  # keep it out of traceback locals from here on
        self._owner: str = self._key.key.public_key.to_base58check_address()
        # the memo key: derived from the signing key, so only the operator can link a memo to a payout
        self._memo_key = _SecretKey(hashlib.sha256(MEMO_KEY_DOMAIN + self._key.key.to_bytes()).digest())

        if provider is not None:
            if api_key is not None:
                raise TronConfigurationError("api_key applies only when no provider is given")
            if not isinstance(provider, HTTPProvider):
                raise TronConfigurationError("provider must be a tronpy HTTPProvider")
        else:
            conf = conf_for_name(network)
            if conf is None:
                # tronpy would silently fall back to mainnet for an unknown name
                raise TronConfigurationError(f"unknown TRON network {network!r}")
            # the endpoint is explicit: HTTPProvider(api_key=...) alone would point at mainnet whatever the network
            provider = HTTPProvider(conf["fullnode"], api_key=api_key)
        if usdt_contract is None:
            if network != "mainnet":
                raise TronConfigurationError(
                    f"usdt_contract is required on {network!r}: the default is the mainnet USDT contract")
            usdt_contract = USDT_CONTRACT_MAINNET
        self.network = network
        self._client = Tron(provider=provider, network=network)
        self._contract_address = usdt_contract
        self._fee_limit = fee_limit_sun
        self._contract: Contract | None = None

    def __repr__(self) -> str:
        return (f"TronpyClient(network={self.network!r}, owner={self._owner!r}, "
                f"usdt_contract={self._contract_address!r})")

    @property
    def owner_address(self) -> str:
        """The paying account (base58check), derived from the key."""
        return self._owner

    # ------------------------------------------------------------------ node access
    def _call(self, fn: Any, *args: Any) -> Any:
        """Run one tronpy call; a transport failure becomes TronNodeUnavailableError (outcome unknown)."""
        import requests

        try:
            return fn(*args)
        except requests.RequestException as exc:  # includes an HTTP error status and a body that is not JSON
            raise TronNodeUnavailableError(f"TRON node request failed: {type(exc).__name__}") from exc

    def _usdt(self) -> Contract:
        """The USDT contract with its ABI, fetched once (the ABI of a deployed contract does not change)."""
        if self._contract is None:
            contract = self._call(self._client.get_contract, self._contract_address)
            if not contract.abi:
                raise TronConfigurationError(
                    f"no contract ABI at {self._contract_address} on {self.network!r} (wrong usdt_contract?)")
            self._contract = contract
        return self._contract

    def memo_for(self, reference: str) -> str:
        """The transfer's on-chain memo for a payout reference. A memo is public forever; the reference
        (batch id and index, or a caller's idempotency key) is internal, so the memo is a keyed hash of
        it: the operator recomputes it to match a transaction to its payout, and nobody else learns the
        reference or can link two payouts of one batch."""
        return "lucid:" + hmac.new(self._memo_key.key, reference.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------ prepare
    def _prepare_sync(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        micros = to_micros(amount)
        if micros <= 0 or micros_to_decimal(micros) != amount:
            raise ValidationError("USDT amount must be positive with at most 6 decimals",
                                  details={"amount": str(amount)})
        builder = (self._usdt().functions.transfer(to_address, micros).with_owner(self._owner)
                   .fee_limit(self._fee_limit).memo(self.memo_for(reference)))
        txn = self._call(builder.build)
        expected = local_txid(txn.to_json()["raw_data"])
        if txn.txid != expected:
            raise TronIntegrityError(details={"node_txid": txn.txid, "local_txid": expected})
        txn.sign(self._key.key)
        payload: dict[str, Any] = txn.to_json()
        exp = datetime.fromtimestamp(payload["raw_data"]["expiration"] / 1000, tz=UTC)
        return PreparedTransfer(txn.txid, to_address, amount, reference, exp, payload)

    async def prepare_usdt_transfer(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        return await asyncio.to_thread(self._prepare_sync, to_address, Decimal(str(amount)), reference)

    # ------------------------------------------------------------------ broadcast
    def _broadcast_sync(self, prepared: PreparedTransfer) -> TransferResult:
        from tronpy.tron import Transaction  # type: ignore[import-not-found]

        if local_txid(prepared.payload["raw_data"]) != prepared.txid:
            # the stored id is what reconciliation looks up: sending other bytes would make it blind
            raise TronIntegrityError(details={"txid": prepared.txid})
        txn = Transaction.from_json(prepared.payload, client=self._client)
        # the raw answer, not Tron.broadcast: tronpy's exceptions drop the node's error code
        answer = self._call(self._client.provider.make_request, "wallet/broadcasttransaction", txn.to_json())
        if answer.get("result") is True:
            return {"success": True, "transaction_hash": prepared.txid, "error": None}
        code = str(answer.get("code", ""))
        if code == "DUP_TRANSACTION_ERROR":  # already accepted: broadcast is idempotent by txid
            return {"success": True, "transaction_hash": prepared.txid, "error": None, "duplicate": True}
        if code in _TRANSIENT_CODES or not code:
            raise TronNodeUnavailableError(f"TRON node did not decide: {code or answer!r}")
        if code == "TRANSACTION_EXPIRATION_ERROR":  # the processor's non-final marker (as the local ledger)
            return {"success": False, "transaction_hash": None, "error": "TRANSACTION_EXPIRED"}
        return {"success": False, "transaction_hash": None, "error": f"{code}: {_node_message(answer)}"}

    async def broadcast(self, prepared: PreparedTransfer) -> TransferResult:
        return await asyncio.to_thread(self._broadcast_sync, prepared)

    # ------------------------------------------------------------------ lookups
    def _get_sync(self, txid: str) -> TransferResult | None:
        from tronpy.exceptions import TransactionNotFound  # type: ignore[import-not-found]

        try:
            info = self._call(self._client.get_transaction_info, txid)
        except TransactionNotFound:  # the node answered {}: not in any block it knows
            return None
        # anything else (node down, bad answer) propagates: "never seen" would let an expired payout be re-sent
        receipt = info.get("receipt", {}).get("result")
        ok = receipt == "SUCCESS" and info.get("result") != "FAILED"
        error = None
        if not ok:
            error = _node_message({"message": info["resMessage"]}) if info.get("resMessage") else None
            error = error or receipt or info.get("result") or "FAILED"
        return {"success": ok, "transaction_hash": txid, "error": error}

    async def get_transaction(self, txid: str) -> TransferResult | None:
        return await asyncio.to_thread(self._get_sync, txid)

    def _balance_sync(self, address: str) -> Decimal:
        micros = self._call(self._usdt().functions.balanceOf, address)
        return micros_to_decimal(micros)

    async def get_balance(self, address: str) -> Decimal:
        return await asyncio.to_thread(self._balance_sync, address)
