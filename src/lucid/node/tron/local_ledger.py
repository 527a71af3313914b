"""A persistent local stand-in for the TRON chain (the default client).

It keeps TRON's rules that matter for exactly-once payouts: transaction ids are content hashes fixed
before broadcast, a duplicate id is not applied twice, an expired transaction is refused, and a transfer
above the sender's balance fails (and is recorded as failed, as a reverted TRC-20 call is on TRON). The
ledger is its own SQLite (or PostgreSQL) database, separate from the node database, like a real chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import base58
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, bindparam, func, select, update

from ..db.engine import NodeDatabase
from ..db.tables import UTCDateTime
from ..models.node_models import utcnow
from ..validators import from_micros, to_micros
from .base import PreparedTransfer, TransferResult, TwoPhaseTronClient

__all__ = ["LocalLedgerTronClient", "treasury_address", "ENV_LEDGER_URL"]

ENV_LEDGER_URL = "LUCID_TRON_LEDGER_URL"
ledger_metadata = MetaData()
accounts = Table("ledger_accounts", ledger_metadata,
                 Column("address", String(64), primary_key=True),
                 Column("balance_micros", BigInteger, nullable=False))
transactions = Table("ledger_transactions", ledger_metadata,
                     Column("seq", Integer, primary_key=True, autoincrement=True),
                     Column("txid", String(64), nullable=False, unique=True),
                     Column("from_address", String(64), nullable=False),
                     Column("to_address", String(64), nullable=False),
                     Column("amount_micros", BigInteger, nullable=False),
                     Column("reference", String(200), nullable=False, index=True),
                     Column("status", String(16), nullable=False),
                     Column("error", Text),
                     Column("created_at", UTCDateTime, nullable=False))


def treasury_address(seed: str = "lucid-treasury") -> str:
    """A genuine Base58Check TRON address derived from a seed string (0x41 + 20 bytes)."""
    return base58.b58encode_check(b"\x41" + hashlib.sha256(seed.encode()).digest()[:20]).decode()


class LocalLedgerTronClient(TwoPhaseTronClient):
    def __init__(self, url: str | None = None, *, treasury: str | None = None,
                 initial_balance: Decimal = Decimal("100000000"), expiration_seconds: float = 60.0,
                 expiry_grace_seconds: float = 0.0) -> None:
        self.url = url or os.environ.get(ENV_LEDGER_URL, "sqlite+aiosqlite:///./lucid_tron_ledger.db")
        self.db = NodeDatabase(self.url)
        self.treasury = treasury or treasury_address()
        self.initial_balance = initial_balance
        self.expiration = timedelta(seconds=expiration_seconds)
        self.expiry_grace_seconds = expiry_grace_seconds
        self._ready = False

    async def initialize(self) -> None:
        if self._ready:
            return
        async with self.db.engine.begin() as conn:
            await conn.run_sync(ledger_metadata.create_all)
            stmt = self.db.insert_ignore(accounts).on_conflict_do_nothing(index_elements=["address"])
            await conn.execute(stmt.values(address=self.treasury, balance_micros=to_micros(self.initial_balance)))
        self._ready = True

    async def prepare_usdt_transfer(self, to_address: str, amount: Decimal, reference: str) -> PreparedTransfer:
        expiration = utcnow() + self.expiration
        raw = {"from": self.treasury, "to": to_address, "amount_micros": to_micros(Decimal(amount)),
               "reference": reference, "expiration": int(expiration.timestamp() * 1000), "salt": uuid.uuid4().hex}
        txid = hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return PreparedTransfer(txid, to_address, Decimal(amount), reference, expiration, raw)

    async def broadcast(self, prepared: PreparedTransfer) -> TransferResult:
        return (await self.broadcast_many([prepared]))[0]

    async def broadcast_many(self, prepared: list[PreparedTransfer]) -> list[TransferResult]:
        """Apply many transactions in one ledger transaction, each with TRON's per-transaction rules."""
        await self.initialize()
        if not prepared:
            return []
        now = utcnow()
        results: list[TransferResult] = []
        async with self.db.engine.begin() as conn:
            ids = [p.txid for p in prepared]
            seen = {r.txid: (r.status, r.error) for r in (await conn.execute(
                select(transactions.c.txid, transactions.c.status, transactions.c.error)
                .where(transactions.c.txid.in_(ids)))).all()}
            senders = {p.payload["from"] for p in prepared}
            balances = {r.address: r.balance_micros for r in (await conn.execute(
                select(accounts).where(accounts.c.address.in_(senders)))).all()}
            rows: list[dict[str, Any]] = []
            deltas: dict[str, int] = {}
            for p in prepared:
                raw = p.payload
                if p.txid in seen:  # duplicate broadcast: report the recorded outcome, apply nothing
                    status, err = seen[p.txid]
                    results.append({"success": status == "SUCCESS", "transaction_hash": p.txid,
                                    "error": err, "duplicate": True})
                    continue
                if now.timestamp() * 1000 > raw["expiration"]:
                    results.append({"success": False, "transaction_hash": None, "error": "TRANSACTION_EXPIRED"})
                    continue
                amount, sender = int(raw["amount_micros"]), raw["from"]
                ok = balances.get(sender, 0) >= amount
                if ok:
                    balances[sender] -= amount
                    deltas[sender] = deltas.get(sender, 0) - amount
                    deltas[raw["to"]] = deltas.get(raw["to"], 0) + amount
                error = None if ok else "Insufficient balance"
                rows.append({"txid": p.txid, "from_address": sender, "to_address": raw["to"],
                             "amount_micros": amount, "reference": raw["reference"],
                             "status": "SUCCESS" if ok else "FAILED", "error": error, "created_at": now})
                seen[p.txid] = (rows[-1]["status"], error)
                results.append({"success": ok, "transaction_hash": p.txid, "error": error})
            if rows:
                await conn.execute(transactions.insert(), rows)
            if deltas:
                ins = self.db.insert_ignore(accounts).on_conflict_do_nothing(index_elements=["address"])
                await conn.execute(ins, [{"address": a, "balance_micros": 0} for a in deltas])
                await conn.execute(
                    update(accounts).where(accounts.c.address == bindparam("b_addr"))
                    .values(balance_micros=accounts.c.balance_micros + bindparam("b_delta")),
                    [{"b_addr": a, "b_delta": d} for a, d in deltas.items()])
        return results

    async def get_transaction(self, txid: str) -> TransferResult | None:
        await self.initialize()
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(select(transactions).where(transactions.c.txid == txid))).first()
        if row is None:
            return None
        return {"success": row.status == "SUCCESS", "transaction_hash": row.txid, "error": row.error,
                "reference": row.reference, "amount": from_micros(row.amount_micros), "to_address": row.to_address}

    async def get_balance(self, address: str) -> Decimal:
        await self.initialize()
        async with self.db.reader.connect() as conn:
            v = await conn.scalar(select(accounts.c.balance_micros).where(accounts.c.address == address))
        return from_micros(int(v or 0))

    async def transactions_by_reference(self) -> dict[str, list[dict[str, Any]]]:
        """Audit view: every recorded transaction grouped by payout reference (tests check exactly-once)."""
        await self.initialize()
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(select(transactions).order_by(transactions.c.seq))).all()
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r.reference, []).append(dict(r._mapping))
        return out

    async def total_supply(self) -> Decimal:
        await self.initialize()
        async with self.db.reader.connect() as conn:
            v = await conn.scalar(select(func.sum(accounts.c.balance_micros)))
        return from_micros(int(v or 0))

    async def close(self) -> None:
        await self.db.dispose()
