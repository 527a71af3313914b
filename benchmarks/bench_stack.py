"""End-to-end figures through the running stack (``ifstack up``), beside the library doing the same work
in this process on the same engines, in the same run.

- push -> claim across processes: an operator pushes through the coordinator service, a swarm in this
  process (its own credential, long-polling the service) claims; baseline: ``IFCoordinator`` in process
  on the stack's etcd and NATS.
- PoOT over HTTP: node API (PostgreSQL, its own role) vs ``PoOTValidator`` in process on the same database.
- a payout through node-management -> api-gateway -> tron-payment vs the TRON ledger client in process.
- a mesh hop: operator -> api-gateway (mTLS + JWT + plane policy) vs plain TLS HTTP/1.1 on loopback; and
  the second hop (api-gateway -> tron-payment) as the difference of a two-hop and a one-hop call.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import quantile as _p
from benchmarks.common import row

IFSTACK = [sys.executable, "-m", "stack.cli"]
WALLET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def _ms(values: list[float], q: float) -> float:
    return _p(values, q) * 1000


# ---------------------------------------------------------------------------------------- push -> claim
async def _stack_push_claim(state: Any, n: int) -> list[float]:
    from infrafabric.coordinator.remote import RemoteSwarmClient
    from stack.identity import issue_swarm_credential
    from stack.scenario import stack_status

    status = stack_status(state)
    url = next(s["url"] for s in status["services"] if s["name"] == "coordinator")
    operator = issue_swarm_credential(state, "bench-operator", role="operator").read_text().strip()
    swarm_id = f"bench-{uuid.uuid4().hex[:6]}"
    swarm_token = issue_swarm_credential(state, swarm_id).read_text().strip()
    lat: list[float] = []
    async with RemoteSwarmClient(url, ["bench"], credential=swarm_token) as swarm, \
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {operator}"}) as api:
        for i in range(n + 30):
            task_id = f"bench-{swarm_id}-{i}"
            t = time.perf_counter()
            (await api.post("/v1/tasks", json={"swarm_id": swarm_id, "tasks": [{"id": task_id}]})).raise_for_status()
            task = await swarm.next_task(10)
            assert task["id"] == task_id and await swarm.claim(task_id) is not None
            if i >= 30:
                lat.append(time.perf_counter() - t)
    return lat


async def _library_push_claim(kv: str, bus: str, n: int) -> list[float]:
    from infrafabric.coordinator import IFCoordinator

    swarm_id = f"lib-{uuid.uuid4().hex[:6]}"
    lat: list[float] = []
    async with IFCoordinator(kv_url=kv, bus_url=bus, audit=None) as coordinator:
        inbox = await coordinator.register_swarm(swarm_id, ["bench"])
        for i in range(n + 30):
            task_id = f"lib-{swarm_id}-{i}"
            t = time.perf_counter()
            await coordinator.push_task_to_swarm(swarm_id, {"id": task_id})
            task = await asyncio.wait_for(inbox.get(), 10)
            assert task["id"] == task_id and await coordinator.claim(swarm_id, task_id) is not None
            if i >= 30:
                lat.append(time.perf_counter() - t)
    return lat


# ---------------------------------------------------------------------------------------- PoOT
async def _poot(state: Any, n: int) -> tuple[list[float], list[float]]:
    from lucid.node.api.auth import mint_token
    from lucid.node.db import NodeDatabase, SqlPoOTRepository
    from lucid.node.poot import PoOTValidator
    from stack.scenario import stack_status

    status = stack_status(state)
    secret = state.secret("node-jwt-secret")
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin')}"}
    url = next(s["url"] for s in status["services"] if s["name"] == "node-management")
    http: list[float] = []
    per_node = 80  # under the API's PoOT limit of 100 a minute per node
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        nodes: list[tuple[str, dict[str, str]]] = []
        for _ in range((n + 30) // per_node + 1):
            r = await api.post("/api/v1/nodes", headers=admin, json={"name": f"bench-{uuid.uuid4().hex[:8]}",
                                                                     "node_type": "worker"})
            r.raise_for_status()
            node_id = r.json()["node_id"]
            (await api.post(f"/api/v1/nodes/{node_id}/start", headers=admin)).raise_for_status()
            nodes.append((node_id, {"Authorization": f"Bearer {mint_token(secret, role='worker', node_id=node_id)}"}))
        for i in range(n + 30):
            node_id, worker = nodes[i // per_node]
            body = {"output_data": "YmVuY2g=", "timestamp": datetime.now(UTC).isoformat(),
                    "nonce": f"http-{i}-{uuid.uuid4().hex}"}
            t = time.perf_counter()
            (await api.post(f"/api/v1/nodes/{node_id}/poot/validate", headers=worker, json=body)).raise_for_status()
            if i >= 30:
                http.append(time.perf_counter() - t)
    os.environ["PGPASSFILE"] = str(state.secret_file("pgpass"))
    db = NodeDatabase(status["engines"]["node_db"])
    validator = PoOTValidator(SqlPoOTRepository(db, store_output=False))
    lib: list[float] = []
    for i in range(n + 30):
        t = time.perf_counter()
        await validator.validate_poot(node_id, "YmVuY2g=", datetime.now(UTC), f"lib-{i}-{uuid.uuid4().hex}")
        if i >= 30:
            lib.append(time.perf_counter() - t)
    await db.dispose()
    return http, lib


# ---------------------------------------------------------------------------------------- payouts
async def _payouts(state: Any, size: int, workdir: Path) -> tuple[float, float]:
    from lucid.node.api.auth import mint_token
    from lucid.node.tron.local_ledger import LocalLedgerTronClient
    from stack.scenario import stack_status

    status = stack_status(state)
    secret = state.secret("node-jwt-secret")
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin')}"}
    url = next(s["url"] for s in status["services"] if s["name"] == "node-management")
    async with httpx.AsyncClient(base_url=url, timeout=60) as api:
        r = await api.post("/api/v1/nodes", headers=admin, json={"name": f"payee-{uuid.uuid4().hex[:8]}",
                                                                 "node_type": "worker"})
        node_id = r.json()["node_id"]
        batch_id = f"batch_bench_{uuid.uuid4().hex[:10]}"
        t = time.perf_counter()
        r = await api.post("/api/v1/nodes/payouts/batch", headers=admin, json={"batch_id": batch_id, "payout_requests": [
            {"node_id": node_id, "amount": "0.5", "wallet_address": WALLET} for _ in range(size)]})
        if r.status_code >= 300:
            raise RuntimeError(f"payout batch refused: {r.status_code} {r.text}")
        while True:
            batch = (await api.get(f"/api/v1/nodes/payouts/batch/{batch_id}", headers=admin)).json()
            if batch.get("status") in ("completed", "partial", "failed"):
                break
            await asyncio.sleep(0.01)
        through_stack = time.perf_counter() - t
        assert batch["status"] == "completed", batch
    ledger = LocalLedgerTronClient(f"sqlite+aiosqlite:///{workdir / 'raw-ledger.db'}")
    await ledger.initialize()
    t = time.perf_counter()
    prepared = [await ledger.prepare_usdt_transfer(WALLET, Decimal("0.5"), f"raw-{i}") for i in range(size)]
    await ledger.broadcast_many(prepared)
    raw = time.perf_counter() - t
    await ledger.close()
    return through_stack, raw


# ---------------------------------------------------------------------------------------- mesh hops
async def _mesh_hops(stack_state: Any, n: int) -> tuple[list[float], list[float]]:
    from lucid.service_mesh.policy.caller import MeshCaller
    from stack.identity import issue_service_certificate, trust_dir
    from stack.scenario import stack_status

    cert, key = issue_service_certificate(stack_state, "operator", "admin-interface", "ops")
    caller = MeshCaller(stack_status(stack_state)["engines"]["kv"], trust_dir=trust_dir(stack_state), cert=cert,
                        key=key, jwt_key=stack_state.jwt_key("operator"), service_name="operator",
                        cluster="admin-interface", plane="ops")
    one, two = [], []
    try:
        for i in range(n + 50):
            t = time.perf_counter()
            assert (await caller.call("api-gateway", "GET", "/local"))[0] == 200
            t1 = time.perf_counter()
            assert (await caller.call("api-gateway", "GET", "/call/tron-payment"))[0] == 200
            t2 = time.perf_counter()
            if i >= 50:
                one.append(t1 - t)
                two.append(t2 - t1)
    finally:
        await caller.close()
    return one, two


def run(n: int = 500) -> list[dict[str, Any]]:
    from benchmarks.bench_mesh import _plain_tls_latencies
    from lucid.service_mesh.security.cert_manager import CertificateManager
    from stack.scenario import stack_status
    from stack.state import StackState

    base = Path(tempfile.mkdtemp(prefix="ifstack-bench-"))
    os.chmod(base, 0o711)
    root = base / "state"
    topology = base / "topology.toml"
    from stack.topology import DEFAULT_TOPOLOGY

    topology.write_text(DEFAULT_TOPOLOGY.read_text().replace("port = 8083", "port = 0"))
    up = subprocess.run([*IFSTACK, "up", "--state", str(root), "--topology", str(topology)], capture_output=True,
                        text=True, timeout=600, check=False)
    if up.returncode != 0:
        raise RuntimeError(f"ifstack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    try:
        state = StackState(root)
        status = stack_status(state)
        stack_lat = asyncio.run(_stack_push_claim(state, n))
        lib_lat = asyncio.run(_library_push_claim(status["engines"]["kv"], status["engines"]["bus"], n))
        http, lib = asyncio.run(_poot(state, n))
        stack_pay, raw_pay = asyncio.run(_payouts(state, 50, base))
        one, two = asyncio.run(_mesh_hops(state, n))
        cm = CertificateManager(str(base / "ca" / "ca.crt"), str(base / "ca" / "ca.key"), str(base / "ca" / "c"),
                                root_key_size=2048, intermediate_key_size=2048)
        plain = asyncio.run(_plain_tls_latencies(cm, n))
    finally:
        subprocess.run([*IFSTACK, "down", "--state", str(root)], capture_output=True, timeout=300, check=False)
        shutil.rmtree(base, ignore_errors=True)
    second_hop = [b - a for a, b in zip(sorted(one), sorted(two), strict=True)]
    return [
        row("stack_push_to_claim_p50", _ms(stack_lat, 0.5), "ms", "library_push_to_claim_p50", _ms(lib_lat, 0.5),
            "reported"),
        row("stack_push_to_claim_p99", _ms(stack_lat, 0.99), "ms", "library_push_to_claim_p99", _ms(lib_lat, 0.99),
            "reported (issue 17 goal for the service: <= 1.3x)"),
        row("stack_poot_http_p50", _ms(http, 0.5), "ms", "library_poot_same_db_p50", _ms(lib, 0.5), "reported"),
        row("stack_poot_http_p99", _ms(http, 0.99), "ms", "library_poot_same_db_p99", _ms(lib, 0.99), "reported"),
        row("stack_payout_via_gateway_per_payout", stack_pay / 50 * 1000, "ms", "ledger_client_in_process",
            raw_pay / 50 * 1000, "reported (batch of 50, to completed)"),
        row("stack_mesh_hop_p50", _ms(one, 0.5), "ms", "plain_tls_http_p50", _ms(plain, 0.5), "reported"),
        row("stack_mesh_hop_p99", _ms(one, 0.99), "ms", "plain_tls_http_p99", _ms(plain, 0.99), "reported"),
        row("stack_second_hop_added_p50", _ms(second_hop, 0.5), "ms", "stack_mesh_hop_p50", _ms(one, 0.5),
            "reported (api-gateway -> tron-payment)"),
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
