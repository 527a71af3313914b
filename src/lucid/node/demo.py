"""The node-management demo: nodes register, start, submit PoOT and receive a payout batch, all through
the real REST API (in process), on SQLite and the local TRON ledger."""

from __future__ import annotations

import asyncio
import base64
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .api import NodeAPISettings, create_app
from .api.auth import mint_token
from .poot import sign_poot

__all__ = ["run_demo", "DEMO_WALLET"]

DEMO_WALLET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


async def run_demo(workdir: Path | None = None, *, nodes: int = 3, log: Any = print) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="lucid-node-demo-"))
    secret = secrets.token_urlsafe(32)
    settings = NodeAPISettings(db_url=f"sqlite+aiosqlite:///{workdir / 'nodes.db'}",
                               ledger_url=f"sqlite+aiosqlite:///{workdir / 'ledger.db'}", jwt_secret=secret,
                               scheduler_interval=0.2)
    app = create_app(settings)
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin', subject='demo-admin')}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node-management") as api:
        r = await api.post("/api/v1/nodes/pools", json={"pool_id": "pool_demo", "name": "demo-pool"}, headers=admin)
        r.raise_for_status()
        keys: dict[str, Ed25519PrivateKey] = {}
        ids: list[str] = []
        for i in range(nodes):
            key = Ed25519PrivateKey.generate()
            pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
            r = await api.post("/api/v1/nodes", headers=admin, json={
                "name": f"demo-node-{i}", "node_type": "worker", "initial_pool_id": "pool_demo", "public_key": pub})
            r.raise_for_status()
            nid = r.json()["node_id"]
            ids.append(nid)
            keys[nid] = key
            log(f"registered {nid}")
            (await api.post(f"/api/v1/nodes/{nid}/start", headers=admin)).raise_for_status()
            log(f"started    {nid}")
        scores = {}
        for nid in ids:
            worker = {"Authorization": f"Bearer {mint_token(secret, role='worker', node_id=nid)}"}
            ts = datetime.now(UTC)
            output = base64.b64encode(secrets.token_bytes(900)).decode()
            nonce = secrets.token_urlsafe(18)
            body = {"output_data": output, "timestamp": ts.isoformat(), "nonce": nonce,
                    "signature": sign_poot(keys[nid], nid, output, ts, nonce)}
            r = await api.post(f"/api/v1/nodes/{nid}/poot/validate", json=body, headers=worker)
            r.raise_for_status()
            scores[nid] = r.json()
            log(f"PoOT       {nid} valid={r.json()['is_valid']} score={r.json()['score']}")
        batch = {"batch_id": "batch_demo_001", "payout_requests": [
            {"node_id": nid, "amount": str(round(scores[nid]["score"] / 10, 6)), "wallet_address": DEMO_WALLET}
            for nid in ids if scores[nid]["is_valid"]]}
        r = await api.post("/api/v1/nodes/payouts/batch", json=batch, headers=admin)
        r.raise_for_status()
        log(f"payout batch accepted: {r.status_code} {r.json()['status']}")
        for _ in range(100):
            status = (await api.get("/api/v1/nodes/payouts/batch/batch_demo_001", headers=admin)).json()
            if status["status"] in ("completed", "partial", "failed"):
                break
            await asyncio.sleep(0.05)
        history = (await api.get("/api/v1/nodes/payouts/history", headers=admin)).json()
        for p in history["payouts"]:
            log(f"paid       {p['node_id']} {p['amount']} USDT tx={p['transaction_hash'][:16]}... {p['status']}")
        balance = await app.state.container.tron.get_balance(DEMO_WALLET)
        log(f"wallet {DEMO_WALLET} balance on the local ledger: {balance} USDT")
        return {"nodes": ids, "scores": scores, "batch": status, "payouts": history["payouts"],
                "balance": str(balance), "workdir": str(workdir)}
