"""TronpyClient through tronpy's real code paths, with an in-process fake TRON full node.

Only the HTTP transport is fake: a requests adapter mounted on tronpy's own ``HTTPProvider`` session answers
the java-tron HTTP API calls tronpy 0.6.2 makes (``wallet/getcontract``, ``wallet/getnodeinfo``,
``wallet/getsignweight``, ``wallet/broadcasttransaction``, ``wallet/gettransactioninfobyid``,
``wallet/triggerconstantcontract``). Key derivation, ABI encoding, transaction building and signing are
tronpy's. The fake node serializes ``raw_data`` with its own protobuf encoder (written here, independent of
tronpy's and of the client's) to derive txids and checks signatures the way a node does, so the client's
txid and signature are checked against an independent implementation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import pytest

pytest.importorskip("tronpy")

import base58  # noqa: E402
import coincurve  # noqa: E402
import requests  # noqa: E402
from Crypto.Hash import keccak  # noqa: E402
from requests.adapters import BaseAdapter  # noqa: E402
from requests.structures import CaseInsensitiveDict  # noqa: E402
from tronpy.providers import HTTPProvider  # noqa: E402

from lucid.node.errors import InternalNodeError, PayoutError, ValidationError  # noqa: E402
from lucid.node.tron.factory import create_tron_client  # noqa: E402
from lucid.node.tron.tronpy_client import (  # noqa: E402
    USDT_CONTRACT_MAINNET,
    TronConfigurationError,
    TronIntegrityError,
    TronNodeUnavailableError,
    TronpyClient,
)

FULLNODE = "http://fake-fullnode.test/"
OWNER_KEY = hashlib.sha256(b"lucid-tronpy-test-owner").hexdigest()
OTHER_KEY = hashlib.sha256(b"lucid-tronpy-test-other").hexdigest()
TRANSFER_SELECTOR = "a9059cbb"  # keccak256("transfer(address,uint256)")[:4], the ERC/TRC-20 constant
BALANCE_OF_SELECTOR = "70a08231"  # keccak256("balanceOf(address)")[:4]


# ---------------------------------------------------------------- independent crypto/encoding helpers
def _address_of_key(key_hex: str) -> tuple[str, str]:
    """(base58check, hex) TRON address of a private key: 0x41 + keccak256(uncompressed pubkey)[-20:]."""
    pub = coincurve.PrivateKey(bytes.fromhex(key_hex)).public_key.format(compressed=False)[1:]
    return _address_of_pubkey(pub)


def _address_of_pubkey(pub64: bytes) -> tuple[str, str]:
    k = keccak.new(digest_bits=256)
    k.update(pub64)
    raw = b"\x41" + k.digest()[-20:]
    return base58.b58encode_check(raw).decode(), raw.hex()


def _b58_to_hex(addr: str) -> str:
    return base58.b58decode_check(addr).hex()


OWNER, OWNER_HEX = _address_of_key(OWNER_KEY)
RECIPIENT, RECIPIENT_HEX = _address_of_key(hashlib.sha256(b"lucid-tronpy-test-recipient").hexdigest())
USDT = USDT_CONTRACT_MAINNET
USDT_HEX = _b58_to_hex(USDT)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value) if value else b""


def _pb_bytes(num: int, value: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(value)) + value if value else b""


def encode_raw_data(raw: dict[str, Any]) -> bytes:
    """protocol.Transaction.raw for one TriggerSmartContract, field by field as java-tron serializes it."""
    (contract,) = raw["contract"]
    assert contract["type"] == "TriggerSmartContract"
    v = contract["parameter"]["value"]
    trigger = (_pb_bytes(1, bytes.fromhex(v["owner_address"])) + _pb_bytes(2, bytes.fromhex(v["contract_address"]))
               + _pb_int(3, v.get("call_value", 0)) + _pb_bytes(4, bytes.fromhex(v["data"]))
               + _pb_int(5, v.get("call_token_value", 0)) + _pb_int(6, v.get("token_id", 0)))
    any_msg = _pb_bytes(1, contract["parameter"]["type_url"].encode()) + _pb_bytes(2, trigger)
    contract_msg = _pb_int(1, 31) + _pb_bytes(2, any_msg)  # 31 = ContractType.TriggerSmartContract
    return (_pb_bytes(1, bytes.fromhex(raw["ref_block_bytes"])) + _pb_bytes(4, bytes.fromhex(raw["ref_block_hash"]))
            + _pb_int(8, raw["expiration"]) + _pb_bytes(10, bytes.fromhex(raw.get("data", "")))
            + _pb_bytes(11, contract_msg) + _pb_int(14, raw["timestamp"]) + _pb_int(18, raw.get("fee_limit", 0)))


def _hexmsg(text: str) -> str:
    return text.encode().hex()


# A TRC-20 ABI as wallet/getcontract returns it (java-tron capitalizes type and stateMutability).
TRC20_ABI = [
    {"outputs": [{"type": "bool"}], "inputs": [{"name": "_to", "type": "address"},
                                               {"name": "_value", "type": "uint256"}],
     "name": "transfer", "stateMutability": "Nonpayable", "type": "Function"},
    {"outputs": [{"name": "balance", "type": "uint256"}], "constant": True,
     "inputs": [{"name": "who", "type": "address"}], "name": "balanceOf", "stateMutability": "View",
     "type": "Function"},
    {"outputs": [{"type": "uint8"}], "constant": True, "name": "decimals", "stateMutability": "View",
     "type": "Function"},
    {"inputs": [{"indexed": True, "name": "from", "type": "address"},
                {"indexed": True, "name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}], "name": "Transfer", "type": "Event"},
]


class FakeFullNode(BaseAdapter):
    """A java-tron HTTP API stand-in, in process: answers what tronpy asks, validates what a node validates."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.contracts: dict[str, list[dict[str, Any]]] = {USDT: TRC20_ABI}
        self.balances: dict[str, int] = {}
        self.tx_info: dict[str, dict[str, Any]] = {}
        self.accepted: dict[str, dict[str, Any]] = {}
        self.signed_raw_hex: dict[str, str] = {}
        self.broadcast_answer: dict[str, Any] | None = None
        self.http_status: dict[str, int] = {}
        self.lie_about_txid = False
        self.block_num = 61_234_567
        self.block_id = self.block_num.to_bytes(8, "big").hex() + hashlib.sha256(b"block").hexdigest()[16:]

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]

    # requests' adapter interface
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        path = urlparse(request.url).path.lstrip("/")
        params = json.loads(request.body or b"{}")
        self.calls.append((path, params))
        status = self.http_status.get(path, 200)
        body: Any = {"Error": "bad gateway"} if status != 200 else getattr(self, "_" + path.replace("/", "_"))(params)
        resp = requests.Response()
        resp.status_code, resp.url, resp.request, resp.encoding = status, request.url, request, "utf-8"
        resp.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        resp._content = json.dumps(body).encode()
        return resp

    def close(self) -> None:
        pass

    # java-tron endpoints
    def _wallet_getcontract(self, p: dict[str, Any]) -> dict[str, Any]:
        assert p["visible"] is True
        abi = self.contracts.get(p["value"])
        if abi is None:
            return {}
        return {"bytecode": "6080604052", "consume_user_resource_percent": 30, "name": "TetherToken",
                "origin_address": OWNER, "abi": {"entrys": abi}, "origin_energy_limit": 10_000_000,
                "contract_address": p["value"], "code_hash": hashlib.sha256(b"usdt").hexdigest()}

    def _wallet_getnodeinfo(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"block": f"Num:{self.block_num + 19},ID:{'ab' * 32}",
                "solidityBlock": f"Num:{self.block_num},ID:{self.block_id}", "activeConnectCount": 30}

    def _wallet_getsignweight(self, p: dict[str, Any]) -> dict[str, Any]:
        raw_hex = encode_raw_data(p["raw_data"]).hex()
        txid = hashlib.sha256(bytes.fromhex(raw_hex)).hexdigest()
        self.signed_raw_hex[txid] = raw_hex
        if self.lie_about_txid:
            txid = hashlib.sha256(b"some other transaction").hexdigest()
        return {"permission": {"permission_name": "owner", "threshold": 1,
                               "keys": [{"address": OWNER_HEX, "weight": 1}]},
                "result": {"code": "NOT_ENOUGH_PERMISSION"},
                "transaction": {"result": {"result": True}, "txid": txid,
                                "transaction": {"txID": txid, "raw_data": p["raw_data"], "raw_data_hex": raw_hex}}}

    def _wallet_broadcasttransaction(self, p: dict[str, Any]) -> dict[str, Any]:
        if self.broadcast_answer is not None:
            return self.broadcast_answer
        digest = hashlib.sha256(encode_raw_data(p["raw_data"])).digest()
        txid = digest.hex()
        if txid in self.accepted:
            return {"code": "DUP_TRANSACTION_ERROR", "txid": txid, "message": _hexmsg("Dup transaction.")}
        owner_hex = p["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"]
        try:
            pub = coincurve.PublicKey.from_signature_and_message(bytes.fromhex(p["signature"][0]), digest,
                                                                 hasher=None)
            signer = _address_of_pubkey(pub.format(compressed=False)[1:])[1]
        except Exception:  # noqa: BLE001 - any malformed signature is a SIGERROR on a real node
            signer = None
        if signer != owner_hex:
            return {"code": "SIGERROR", "txid": txid,
                    "message": _hexmsg("Validate signature error: signature is not owner's")}
        self.accepted[txid] = p
        return {"result": True, "txid": txid}

    def _wallet_gettransactioninfobyid(self, p: dict[str, Any]) -> dict[str, Any]:
        assert p["visible"] is True
        return self.tx_info.get(p["value"], {})

    def _wallet_triggerconstantcontract(self, p: dict[str, Any]) -> dict[str, Any]:
        assert p["contract_address"] in self.contracts
        if p["function_selector"] != "balanceOf(address)":
            return {"result": {"code": "CONTRACT_VALIDATE_ERROR", "message": _hexmsg("unknown selector")}}
        arg = bytes.fromhex(p["parameter"])
        assert len(arg) == 32 and arg[:12] == b"\x00" * 12
        who = base58.b58encode_check(b"\x41" + arg[12:]).decode()
        return {"result": {"result": True}, "energy_used": 535,
                "constant_result": [f"{self.balances.get(who, 0):064x}"],
                "transaction": {"ret": [{}], "visible": True, "txID": "00" * 32, "raw_data": {}}}


@pytest.fixture
def node() -> FakeFullNode:
    return FakeFullNode()


def _client(node: FakeFullNode, key: str = OWNER_KEY, **kw: Any) -> TronpyClient:
    provider = HTTPProvider(FULLNODE)
    provider.sess.mount(FULLNODE, node)
    return TronpyClient(private_key_hex=key, network="mainnet", usdt_contract=USDT, provider=provider, **kw)


@pytest.fixture
def client(node: FakeFullNode) -> TronpyClient:
    return _client(node)


# ---------------------------------------------------------------- prepare
async def test_prepare_builds_a_signed_trc20_transfer_whose_txid_hashes_its_raw_data(
        client: TronpyClient, node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("12.345678"), "payout-ref-1")

    # prepare reads the chain (ABI, ref block, sign weight) and sends nothing
    assert node.paths() == ["wallet/getcontract", "wallet/getnodeinfo", "wallet/getsignweight"]
    raw = prepared.payload["raw_data"]
    raw_hex = node.signed_raw_hex[prepared.txid]
    assert prepared.txid == hashlib.sha256(bytes.fromhex(raw_hex)).hexdigest()
    assert encode_raw_data(raw).hex() == raw_hex  # the stored payload is exactly what was hashed
    assert prepared.payload["txID"] == prepared.txid

    # the signature is the owner's, over the txid
    (sig_hex,) = prepared.payload["signature"]
    pub = coincurve.PublicKey.from_signature_and_message(bytes.fromhex(sig_hex), bytes.fromhex(prepared.txid),
                                                         hasher=None)
    assert pub.format() == coincurve.PrivateKey(bytes.fromhex(OWNER_KEY)).public_key.format()
    assert client.owner_address == OWNER

    # the TRC-20 call: transfer(recipient, 12345678 micros) from the owner to the USDT contract
    value = raw["contract"][0]["parameter"]["value"]
    assert value["owner_address"] == OWNER_HEX and value["contract_address"] == USDT_HEX
    assert value["data"] == (TRANSFER_SELECTOR + "00" * 12 + RECIPIENT_HEX[2:] + f"{12_345_678:064x}")
    assert raw["fee_limit"] == 30_000_000
    assert bytes.fromhex(raw["data"]) == client.memo_for("payout-ref-1").encode()
    assert raw["ref_block_bytes"] == node.block_id[12:16] and raw["ref_block_hash"] == node.block_id[16:32]

    assert (prepared.to_address, prepared.amount, prepared.reference) == (RECIPIENT, Decimal("12.345678"),
                                                                           "payout-ref-1")
    assert prepared.expiration == datetime.fromtimestamp(raw["expiration"] / 1000, tz=UTC)
    assert prepared.expiration > datetime.now(UTC)


async def test_the_memo_on_chain_is_a_keyed_hash_not_the_payout_reference(
        client: TronpyClient, node: FakeFullNode) -> None:
    import hmac

    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("1"), "batch_payroll_2026_11/17")
    memo = bytes.fromhex(prepared.payload["raw_data"]["data"]).decode()
    key = hashlib.sha256(b"lucid-payout-memo/v1\n" + bytes.fromhex(OWNER_KEY)).digest()
    assert memo == "lucid:" + hmac.new(key, b"batch_payroll_2026_11/17", hashlib.sha256).hexdigest()[:32]
    assert "batch" not in memo and "payroll" not in memo
    assert client.memo_for("batch_payroll_2026_11/17") == memo  # the operator can match it again
    assert client.memo_for("batch_payroll_2026_11/18") != memo
    other = TronpyClient(private_key_hex=OTHER_KEY, network="nile", usdt_contract=USDT,
                         provider=HTTPProvider(FULLNODE))
    assert other.memo_for("batch_payroll_2026_11/17") != memo  # another operator's memos do not match
    assert OWNER_KEY not in repr(client.__dict__) and key.hex() not in repr(client.__dict__)


async def test_prepare_refuses_a_node_txid_that_does_not_hash_the_raw_data(
        client: TronpyClient, node: FakeFullNode) -> None:
    node.lie_about_txid = True
    with pytest.raises(TronIntegrityError) as err:
        await client.prepare_usdt_transfer(RECIPIENT, Decimal("1"), "payout-ref-2")
    assert err.value.error_code == PayoutError.error_code
    assert err.value.details["local_txid"] in node.signed_raw_hex  # the honest hash was computed locally
    assert "wallet/broadcasttransaction" not in node.paths()


@pytest.mark.parametrize("amount", [Decimal("0"), Decimal("-1"), Decimal("1.0000001")])
async def test_prepare_refuses_amounts_usdt_cannot_represent(client: TronpyClient, node: FakeFullNode,
                                                             amount: Decimal) -> None:
    with pytest.raises(ValidationError):
        await client.prepare_usdt_transfer(RECIPIENT, amount, "payout-ref-3")
    assert "wallet/getsignweight" not in node.paths()


async def test_contract_abi_is_fetched_once(client: TronpyClient, node: FakeFullNode) -> None:
    a = await client.prepare_usdt_transfer(RECIPIENT, Decimal("1"), "r-a")
    b = await client.prepare_usdt_transfer(RECIPIENT, Decimal("1"), "r-b")
    assert a.txid != b.txid  # different memo, different transaction
    assert node.paths().count("wallet/getcontract") == 1


async def test_wrong_contract_address_is_a_configuration_error(node: FakeFullNode) -> None:
    node.contracts.clear()  # the node answers {} for an address without a contract
    with pytest.raises(TronConfigurationError, match="usdt_contract"):
        await _client(node).prepare_usdt_transfer(RECIPIENT, Decimal("1"), "r")


# ---------------------------------------------------------------- broadcast
async def test_broadcast_sends_the_prepared_transaction(client: TronpyClient, node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-4")
    result = await client.broadcast(prepared)
    assert result == {"success": True, "transaction_hash": prepared.txid, "error": None}
    sent = node.accepted[prepared.txid]  # the node checked hash and signature before accepting
    assert sent["raw_data"] == prepared.payload["raw_data"] and sent["signature"] == prepared.payload["signature"]


async def test_broadcast_round_trips_through_the_stored_payload(client: TronpyClient, node: FakeFullNode) -> None:
    """The processor stores to_payload() and broadcasts what it reads back after a crash."""
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-5")
    stored = type(prepared).from_payload(json.loads(json.dumps(prepared.to_payload())))
    assert (await client.broadcast(stored))["success"] is True
    assert prepared.txid in node.accepted


async def test_duplicate_broadcast_is_success_marked_duplicate(client: TronpyClient, node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-6")
    first = await client.broadcast(prepared)
    again = await client.broadcast(prepared)
    assert first == {"success": True, "transaction_hash": prepared.txid, "error": None}
    assert again == {"success": True, "transaction_hash": prepared.txid, "error": None, "duplicate": True}
    assert node.paths().count("wallet/broadcasttransaction") == 2 and len(node.accepted) == 1


async def test_broadcast_refused_by_node_returns_failure_with_its_message(node: FakeFullNode) -> None:
    owner = _client(node)
    prepared = await owner.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-7")
    forged_sig = coincurve.PrivateKey(bytes.fromhex(OTHER_KEY)).sign_recoverable(
        bytes.fromhex(prepared.txid), hasher=None).hex()
    forged = type(prepared)(prepared.txid, prepared.to_address, prepared.amount, prepared.reference,
                            prepared.expiration, {**prepared.payload, "signature": [forged_sig]})
    result = await owner.broadcast(forged)
    assert result == {"success": False, "transaction_hash": None,
                      "error": "SIGERROR: Validate signature error: signature is not owner's"}
    assert node.accepted == {}


async def test_broadcast_contract_validate_error(client: TronpyClient, node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-8")
    node.broadcast_answer = {"code": "CONTRACT_VALIDATE_ERROR", "txid": prepared.txid,
                             "message": _hexmsg("account does not exist")}
    result = await client.broadcast(prepared)
    assert result == {"success": False, "transaction_hash": None,
                      "error": "CONTRACT_VALIDATE_ERROR: account does not exist"}


async def test_broadcast_expired_is_reported_as_the_non_final_marker(client: TronpyClient,
                                                                     node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-9")
    node.broadcast_answer = {"code": "TRANSACTION_EXPIRATION_ERROR", "txid": prepared.txid,
                             "message": _hexmsg("Transaction expired")}
    assert await client.broadcast(prepared) == {"success": False, "transaction_hash": None,
                                                "error": "TRANSACTION_EXPIRED"}


@pytest.mark.parametrize("failure", ["http_502", "SERVER_BUSY", "no_code"])
async def test_broadcast_with_unknown_outcome_raises_instead_of_reporting_failure(
        client: TronpyClient, node: FakeFullNode, failure: str) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-10")
    if failure == "http_502":
        node.http_status["wallet/broadcasttransaction"] = 502
    elif failure == "SERVER_BUSY":
        node.broadcast_answer = {"code": "SERVER_BUSY", "message": _hexmsg("Server busy")}
    else:
        node.broadcast_answer = {}
    with pytest.raises(TronNodeUnavailableError):
        await client.broadcast(prepared)


async def test_broadcast_refuses_a_payload_whose_txid_does_not_match(client: TronpyClient,
                                                                     node: FakeFullNode) -> None:
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-11")
    tampered_raw = {**prepared.payload["raw_data"], "fee_limit": 1}
    tampered = type(prepared)(prepared.txid, prepared.to_address, prepared.amount, prepared.reference,
                              prepared.expiration, {**prepared.payload, "raw_data": tampered_raw})
    with pytest.raises(TronIntegrityError):
        await client.broadcast(tampered)
    assert "wallet/broadcasttransaction" not in node.paths()


# ---------------------------------------------------------------- get_transaction
TXID = hashlib.sha256(b"a landed transfer").hexdigest()


async def test_get_transaction_success_receipt(client: TronpyClient, node: FakeFullNode) -> None:
    node.tx_info[TXID] = {"id": TXID, "fee": 13_844_850, "blockNumber": 61_234_600, "blockTimeStamp": 1_717_000_000,
                          "contractResult": ["00" * 31 + "01"], "contract_address": USDT,
                          "receipt": {"energy_fee": 13_500_000, "energy_usage_total": 64_285,
                                      "net_usage": 345, "result": "SUCCESS"}}
    assert await client.get_transaction(TXID) == {"success": True, "transaction_hash": TXID, "error": None}
    assert node.calls[-1] == ("wallet/gettransactioninfobyid", {"value": TXID, "visible": True})


async def test_get_transaction_failed_receipt_decodes_res_message(client: TronpyClient, node: FakeFullNode) -> None:
    node.tx_info[TXID] = {"id": TXID, "blockNumber": 61_234_600, "result": "FAILED",
                          "resMessage": _hexmsg("REVERT opcode executed"), "contractResult": [""],
                          "receipt": {"energy_usage_total": 1_000, "result": "REVERT"}}
    assert await client.get_transaction(TXID) == {"success": False, "transaction_hash": TXID,
                                                  "error": "REVERT opcode executed"}


async def test_get_transaction_failed_receipt_without_message_names_the_receipt(
        client: TronpyClient, node: FakeFullNode) -> None:
    node.tx_info[TXID] = {"id": TXID, "blockNumber": 61_234_600, "result": "FAILED",
                          "receipt": {"energy_usage_total": 30_000_000, "result": "OUT_OF_ENERGY"}}
    assert await client.get_transaction(TXID) == {"success": False, "transaction_hash": TXID,
                                                  "error": "OUT_OF_ENERGY"}


async def test_get_transaction_not_found_is_none(client: TronpyClient, node: FakeFullNode) -> None:
    assert await client.get_transaction(TXID) is None
    assert node.paths() == ["wallet/gettransactioninfobyid"]


async def test_get_transaction_node_down_is_not_reported_as_never_seen(client: TronpyClient,
                                                                       node: FakeFullNode) -> None:
    """None would let the processor re-send an expired payout that may have landed: it must raise."""
    node.http_status["wallet/gettransactioninfobyid"] = 503
    with pytest.raises(TronNodeUnavailableError):
        await client.get_transaction(TXID)


# ---------------------------------------------------------------- get_balance
@pytest.mark.parametrize(("micros", "expected"), [
    (123_456_789_012_345_678, Decimal("123456789012.345678")),
    (1, Decimal("0.000001")),
    (0, Decimal("0")),
    (10**30 + 7, Decimal("1000000000000000000000000.000007")),  # beyond a 28-digit division context
])
async def test_get_balance_converts_micros_exactly(client: TronpyClient, node: FakeFullNode, micros: int,
                                                   expected: Decimal) -> None:
    node.balances[RECIPIENT] = micros
    balance = await client.get_balance(RECIPIENT)
    assert isinstance(balance, Decimal)
    assert balance == expected and str(balance) == str(expected)
    path, params = node.calls[-1]
    assert path == "wallet/triggerconstantcontract"
    assert params["function_selector"] == "balanceOf(address)" and params["contract_address"] == USDT
    assert params["parameter"] == "00" * 12 + RECIPIENT_HEX[2:]


# ---------------------------------------------------------------- factory and configuration
def test_factory_selects_tronpy_with_its_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_TRON_CLIENT", "tronpy")
    monkeypatch.setenv("LUCID_TRON_PRIVATE_KEY", OWNER_KEY)
    monkeypatch.setenv("LUCID_TRON_NETWORK", "nile")
    monkeypatch.setenv("LUCID_TRON_USDT_CONTRACT", RECIPIENT)  # any address: only stored here
    monkeypatch.setenv("LUCID_TRON_API_KEY", "not-a-real-api-key")
    made = create_tron_client()
    assert isinstance(made, TronpyClient)
    assert made.owner_address == OWNER and made.network == "nile" and made._contract_address == RECIPIENT
    # the endpoint follows the network even with an API key (HTTPProvider(api_key=...) alone means mainnet)
    assert made._client.provider.endpoint_uri == "https://api.nileex.io"


def test_factory_mainnet_defaults_to_the_mainnet_usdt_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_TRON_PRIVATE_KEY", OWNER_KEY)
    monkeypatch.setenv("LUCID_TRON_NETWORK", "mainnet")
    monkeypatch.delenv("LUCID_TRON_USDT_CONTRACT", raising=False)
    monkeypatch.delenv("LUCID_TRON_API_KEY", raising=False)
    made = create_tron_client("tronpy")
    assert isinstance(made, TronpyClient) and made._contract_address == USDT_CONTRACT_MAINNET
    assert made._client.provider.endpoint_uri == "https://api.trongrid.io"


def test_factory_refuses_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_TRON_CLIENT", "tronpy")
    monkeypatch.delenv("LUCID_TRON_PRIVATE_KEY", raising=False)
    with pytest.raises(TronConfigurationError, match="LUCID_TRON_PRIVATE_KEY is required") as err:
        create_tron_client()
    assert isinstance(err.value, RuntimeError) and err.value.error_code == InternalNodeError.error_code


def test_testnet_without_a_usdt_contract_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUCID_TRON_PRIVATE_KEY", OWNER_KEY)
    monkeypatch.setenv("LUCID_TRON_NETWORK", "nile")
    monkeypatch.delenv("LUCID_TRON_USDT_CONTRACT", raising=False)
    with pytest.raises(TronConfigurationError, match="usdt_contract is required"):
        create_tron_client("tronpy")


def test_unknown_network_is_refused_not_sent_to_mainnet() -> None:
    with pytest.raises(TronConfigurationError, match="unknown TRON network"):
        TronpyClient(private_key_hex=OWNER_KEY, network="mainet", usdt_contract=USDT)


# ---------------------------------------------------------------- the key stays secret
async def test_private_key_never_appears_in_reprs_payloads_or_logs(
        client: TronpyClient, node: FakeFullNode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    prepared = await client.prepare_usdt_transfer(RECIPIENT, Decimal("5"), "payout-ref-12")
    await client.broadcast(prepared)
    seen = [repr(client), str(client), repr(vars(client)), repr(prepared), json.dumps(prepared.to_payload()),
            caplog.text, json.dumps([c[1] for c in node.calls])]
    for text in seen:
        assert OWNER_KEY not in text.lower()
    assert OWNER in repr(client)  # the repr still says which account pays


@pytest.mark.parametrize("bad_key", ["zz" + OWNER_KEY[2:], OWNER_KEY[:-2], "00" * 32])
def test_invalid_key_error_does_not_echo_the_key(bad_key: str) -> None:
    with pytest.raises(TronConfigurationError) as err:
        TronpyClient(private_key_hex=bad_key, network="mainnet", usdt_contract=USDT)
    text = "".join(traceback.format_exception(err.value))
    assert bad_key not in text and bad_key[2:40] not in text
