"""blockchain-core's record of payouts (chain plane): every transfer tron-payment broadcast is anchored
here, in order, from the messages api-gateway queues after each broadcast.

Why a queue and not a call: the wallet plane may call no one, and a payout must not wait for (or fail
with) the chain's bookkeeping. api-gateway queues an anchor per successful transfer through its outbox
(kept on disk while the broker is away); blockchain-core consumes at least once and stores each anchor
once (by transaction id) before it acknowledges, so a redelivery changes nothing. Ops services read the
anchors with GET, as the plane policy allows (ops -> chain is read-only).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import create_async_engine

from lucid.service_mesh.communication import AsyncMessageQueueClient
from lucid.service_mesh.policy.mesh_server import MeshRequest, MeshResponse

__all__ = ["AnchorStore", "anchor_payloads", "anchors_handler", "consume_anchors"]

DESTINATION = "blockchain-core"
_TXID = re.compile(r"^[0-9a-f]{64}\Z")
_metadata = MetaData()
anchors = Table(
    "anchors", _metadata,
    Column("height", Integer, primary_key=True, autoincrement=True),
    Column("txid", String(64), nullable=False, unique=True),
    Column("to_address", String(64), nullable=False),
    Column("amount", String(32), nullable=False),
    Column("reference", String(256), nullable=False),
    Column("anchored_at", Float, nullable=False),
)


def anchor_payloads(prepared: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The anchors for one broadcast: each transfer that succeeded now (not a duplicate of an earlier one)."""
    out = []
    for item, result in zip(prepared, results, strict=False):
        if result.get("success") and not result.get("duplicate"):
            out.append({"txid": item.get("txid"), "to_address": item.get("to_address"),
                        "amount": str(item.get("amount")), "reference": str(item.get("reference"))[:256]})
    return out


class AnchorStore:
    def __init__(self, path: str | Path) -> None:
        self.engine = create_async_engine(f"sqlite+aiosqlite:///{path}")

    async def open(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(_metadata.create_all)

    async def add_many(self, items: list[dict[str, Any]]) -> int:
        """Store anchors once each (a redelivered one is ignored); how many were new."""
        rows = [{"txid": i["txid"], "to_address": i["to_address"], "amount": i["amount"], "reference": i["reference"],
                 "anchored_at": time.time()} for i in items]
        if not rows:
            return 0
        async with self.engine.begin() as conn:
            before = await conn.scalar(select(func.count()).select_from(anchors))
            await conn.execute(sqlite_insert(anchors).on_conflict_do_nothing(index_elements=["txid"]), rows)
            after = await conn.scalar(select(func.count()).select_from(anchors))
        return int(after or 0) - int(before or 0)

    async def get(self, txid: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(anchors).where(anchors.c.txid == txid))).first()
        return None if row is None else dict(row._mapping)

    async def height(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(anchors)) or 0)

    async def close(self) -> None:
        await self.engine.dispose()


def _valid(payload: dict[str, Any]) -> bool:
    return (isinstance(payload.get("txid"), str) and bool(_TXID.match(payload["txid"]))
            and isinstance(payload.get("to_address"), str) and len(payload["to_address"]) <= 64
            and isinstance(payload.get("amount"), str) and len(payload["amount"]) <= 32
            and isinstance(payload.get("reference"), str))


async def consume_anchors(mq: AsyncMessageQueueClient, store: AnchorStore, *, on_depth: Any = None,
                          batch: int = 100) -> None:
    """Forever: take anchor messages, store them, then acknowledge (at least once, stored once). Only
    api-gateway may anchor: a message from any other broker account is rejected to the dead end. The queue
    depth (a broker round trip on a channel of its own) is measured at most once a second, not per batch."""
    depth_at = 0.0
    while True:
        try:
            messages = await mq.receive_many(DESTINATION, batch, timeout=1.0)
            good = [m for m in messages if m.source == "api-gateway" and _valid(m.payload)
                    and m.sender_account in (None, "api-gateway")]
            await store.add_many([m.payload for m in good])
            kept = {id(m) for m in good}
            for m in messages:
                if id(m) in kept:
                    await m.ack()
                else:
                    await m.reject(requeue=False)
            if on_depth is not None and time.monotonic() - depth_at >= 1.0:
                depth_at = time.monotonic()
                await on_depth(DESTINATION)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - broker or disk away: unsettled messages come back; try again
            await asyncio.sleep(0.5)


def anchors_handler(store: AnchorStore) -> Any:
    async def handle(request: MeshRequest) -> MeshResponse:
        if request.method != "GET":
            return MeshResponse(405, {"error": {"code": "LUCID_ERR_1203", "message": "anchors are read-only"}})
        if request.path == "/anchors":
            return MeshResponse(200, {"height": await store.height()})
        if request.path.startswith("/anchors/"):
            txid = request.path.rsplit("/", 1)[1]
            if not _TXID.match(txid):
                return MeshResponse(400, {"error": {"code": "LUCID_ERR_1001", "message": "txid must be 64 hex"}})
            found = await store.get(txid)
            if found is None:
                return MeshResponse(404, {"error": {"code": "LUCID_ERR_1002", "message": "no such anchor"}})
            return MeshResponse(200, {"anchor": found})
        return MeshResponse(404, {"error": {"code": "LUCID_ERR_1002", "message": "no such route"}})

    return handle
