"""Payouts through the mesh: the node API never holds the TRON client in the deployed form.

``MeshTronClient`` is the node API's two-phase TRON client: every call goes to ``api-gateway`` (ops
plane) over mTLS + JWT, which forwards ``/payments/*`` to ``tron-payment`` (wallet plane), the only
process holding the TRON client and its key. The plane policy refuses node-management → tron-payment.

A prepared transfer leaves tron-payment and comes back for its broadcast, so tron-payment binds it: the
transaction id is recomputed from the raw transaction and an HMAC tag (a key only tron-payment holds)
must match, so neither the gateway nor the node API can change the payee or the amount on the way (a
real chain's signature does the same job for ``TronpyClient``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from backends.errors import PlatformError
from lucid.service_mesh.policy.caller import MeshCaller
from lucid.service_mesh.policy.mesh_server import MeshRequest, MeshResponse

from .base import PreparedTransfer, TransferResult, TwoPhaseTronClient

__all__ = ["MeshTronClient", "PaymentError", "gateway_call", "payment_handler"]

MeshCall = Callable[[str, str, Any], Awaitable[tuple[int, Any]]]  # (method, path, body) -> (status, json)
_TXID = re.compile(r"^[0-9a-f]{64}\Z")
_REFERENCE = re.compile(r"^[\x21-\x7e]{1,256}\Z")  # printable ASCII (an idempotency key: "batch/3")
MAX_BATCH = 500


class PaymentError(PlatformError):
    """A refused payment call; ``error_code`` is LUCID_ERR_* and ``http_status`` the status it answers."""

    error_code = "LUCID_ERR_1001"
    http_status = 400

    def __init__(self, message: str, error_code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, error_code)
        if status is not None:
            self.http_status = status


class MeshTronClient(TwoPhaseTronClient):
    def __init__(self, call: MeshCall, *, final_at_broadcast: bool = True) -> None:
        self._call = call
        self.final_at_broadcast = final_at_broadcast

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = await self._call(method, path, body)
        if status != 200:
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            raise PaymentError(str(error.get("message", f"payment service answered {status}")),
                               str(error.get("code", "LUCID_ERR_1005")), status)
        return answer

    async def prepare_usdt_transfer(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        answer = await self._json("POST", "/payments/prepare", {"to_address": to_address, "amount": str(amount),
                                                                 "reference": reference})
        # tron-payment's tag rides inside raw, so it survives the processor's own storage of the payload
        return PreparedTransfer.from_payload(answer["prepared"])

    async def prepare_many(self, transfers: list[tuple[str, Decimal, str]]) -> list[PreparedTransfer]:
        if not transfers:
            return []
        answer = await self._json("POST", "/payments/prepare", {"transfers": [
            {"to_address": to, "amount": str(amount), "reference": ref} for to, amount, ref in transfers]})
        return [PreparedTransfer.from_payload(p) for p in answer["prepared"]]

    async def broadcast(self, prepared: PreparedTransfer) -> TransferResult:
        return (await self.broadcast_many([prepared]))[0]

    async def broadcast_many(self, prepared: list[PreparedTransfer]) -> list[TransferResult]:
        if not prepared:
            return []
        answer = await self._json("POST", "/payments/broadcast", {"prepared": [p.to_payload() for p in prepared]})
        return list(answer["results"])

    async def get_transaction(self, txid: str) -> TransferResult | None:
        answer = await self._json("GET", f"/payments/transactions/{txid}")
        return answer.get("transaction")  # type: ignore[no-any-return]

    async def get_balance(self, address: str) -> Decimal:
        answer = await self._json("GET", f"/payments/balances/{address}")
        return Decimal(str(answer["balance"]))

    async def close(self) -> None:
        close = getattr(self._call, "close", None)
        if close is not None:
            await close()


def _tag(key: bytes, raw: dict[str, Any]) -> str:
    canonical = json.dumps({k: v for k, v in raw.items() if k != "tag"}, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def _amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PaymentError("amount must be a decimal number") from None
    if not amount.is_finite() or amount <= 0 or amount > Decimal("1000000000") or amount.as_tuple().exponent < -6:
        raise PaymentError("amount must be positive, at most 1e9 USDT, with at most 6 decimals")
    return amount


def _address(value: Any, field: str) -> str:
    """A genuine TRON address (Base58Check, version 0x41): a typo or a forged string never gets a transfer."""
    from lucid.node.validators import validate_tron_address

    try:
        return validate_tron_address(value)
    except ValueError:
        raise PaymentError(f"{field} must be a TRON Base58Check address") from None


def _object(request: MeshRequest) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise PaymentError("body is not JSON") from None
    if not isinstance(body, dict):
        raise PaymentError("body must be a JSON object")
    return body


def payment_handler(tron: TwoPhaseTronClient, tag_key: bytes,
                    on_result: Callable[[str], None] | None = None) -> Callable[[MeshRequest], Awaitable[MeshResponse]]:
    """tron-payment's routes. ``tag_key`` binds prepared transfers; ``on_result`` sees each broadcast's
    outcome (``success``, ``failed``, ``duplicate``, ``refused``) for the metrics."""

    def count(outcome: str) -> None:
        if on_result is not None:
            on_result(outcome)

    def transfer(body: Any) -> tuple[str, Decimal, str]:
        if not isinstance(body, dict):
            raise PaymentError("each transfer must be an object")
        to, reference = _address(body.get("to_address"), "to_address"), body.get("reference")
        if not isinstance(reference, str) or not _REFERENCE.match(reference):
            raise PaymentError("reference must be 1-256 printable ASCII characters")
        return to, _amount(body.get("amount")), reference

    def tagged(prepared: PreparedTransfer) -> dict[str, Any]:
        payload = prepared.to_payload()
        payload["raw"] = {**payload["raw"], "tag": _tag(tag_key, payload["raw"])}
        return payload

    async def prepare(request: MeshRequest) -> MeshResponse:
        """One transfer (``{to_address, amount, reference}``) or several (``{"transfers": [...]}``, all
        validated before any is prepared)."""
        body = _object(request)
        if "transfers" not in body:
            return MeshResponse(200, {"prepared": tagged(await tron.prepare_usdt_transfer(*transfer(body)))})
        items = body["transfers"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise PaymentError(f"transfers must be a list of 1 to {MAX_BATCH}")
        made = await tron.prepare_many([transfer(item) for item in items])
        return MeshResponse(200, {"prepared": [tagged(p) for p in made]})

    def verified(item: Any) -> PreparedTransfer:
        if not isinstance(item, dict) or not isinstance(item.get("raw"), dict):
            raise PaymentError("each prepared transfer must be an object with its raw transaction")
        raw = dict(item["raw"])
        tag = raw.get("tag")
        if not isinstance(tag, str) or not hmac.compare_digest(tag, _tag(tag_key, raw)):
            count("refused")
            raise PaymentError("prepared transfer was not issued by tron-payment or was changed", "LUCID_ERR_1203",
                               403)
        raw.pop("tag")
        txid = hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        if item.get("txid") != txid or item.get("to_address") != raw.get("to"):
            count("refused")
            raise PaymentError("transaction id or payee does not match the raw transaction", "LUCID_ERR_1203", 403)
        try:
            return PreparedTransfer.from_payload({**item, "raw": raw})
        except (KeyError, ValueError, TypeError, InvalidOperation):
            raise PaymentError("prepared transfer is malformed") from None

    async def broadcast(request: MeshRequest) -> MeshResponse:
        items = _object(request).get("prepared")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise PaymentError(f"prepared must be a list of 1 to {MAX_BATCH} transfers")
        transfers = [verified(item) for item in items]  # all verified before any is broadcast
        results = await tron.broadcast_many(transfers)
        for r in results:
            count("duplicate" if r.get("duplicate") else "success" if r.get("success") else "failed")
        return MeshResponse(200, {"results": results})

    async def transaction(txid: str) -> MeshResponse:
        if not _TXID.match(txid):
            raise PaymentError("txid must be 64 hex digits")
        found = await tron.get_transaction(txid)
        return MeshResponse(200, {"transaction": None if found is None else
                                  {k: str(v) if isinstance(v, Decimal) else v for k, v in found.items()}})

    async def balance(address: str) -> MeshResponse:
        _address(address, "address")
        return MeshResponse(200, {"address": address, "balance": str(await tron.get_balance(address))})

    async def handle(request: MeshRequest) -> MeshResponse:
        try:
            if request.method == "POST" and request.path == "/payments/prepare":
                return await prepare(request)
            if request.method == "POST" and request.path == "/payments/broadcast":
                return await broadcast(request)
            if request.method == "GET" and request.path.startswith("/payments/transactions/"):
                return await transaction(request.path.rsplit("/", 1)[1])
            if request.method == "GET" and request.path.startswith("/payments/balances/"):
                return await balance(request.path.rsplit("/", 1)[1])
            return MeshResponse(404, {"error": {"code": "LUCID_ERR_1002", "message": "no such route"}})
        except PaymentError as exc:
            return MeshResponse(exc.http_status, {"error": {"code": exc.error_code, "message": exc.message}})

    return handle


def gateway_call(caller: MeshCaller, target: str = "api-gateway") -> MeshCall:
    """node-management's way to the payment service: every call to ``target`` (api-gateway)."""

    async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return await caller.call(target, method, path, body)

    call.close = caller.close  # type: ignore[attr-defined]
    return call
