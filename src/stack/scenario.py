"""The seed's scenarios, run against a running stack from outside, as an operator's tools would.

``phase0``: tasks are pushed to the seven swarms through the coordinator service (operator credential),
each swarm claims and runs them in the chassis pool (charged to its budget), session-4 reports a blocker,
the governor service assigns a team whose help tasks run the same way. ``payout``: a node registers,
starts, proves its work (PoOT) and is paid through node-management → api-gateway → tron-payment.
Both read the outcome back from the engines and the services, never from the scenario's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from stack.identity import issue_swarm_credential
from stack.state import StackState

__all__ = ["Phase0Result", "PayoutResult", "TasksResult", "run_payout", "run_phase0", "run_tasks", "stack_status"]

PHASE0_WALLET = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
NODE_SAMPLE = {"cpu_percent": 12.5, "memory_percent": 33.0, "memory_used_bytes": 2 << 30,
               "memory_total_bytes": 6 << 30, "disk_percent": 20.0, "disk_used_bytes": 40 << 30,
               "disk_total_bytes": 200 << 30, "network_bytes_sent": 1000, "network_bytes_recv": 2000}


def stack_status(state: StackState) -> dict[str, Any]:
    return json.loads(state.status_file.read_text())  # type: ignore[no-any-return]


def _service(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in status["services"] if s["name"] == name)


@dataclass
class Phase0Result:
    run_id: str
    tasks: list[str]
    completed: dict[str, str] = field(default_factory=dict)  # task id -> swarm that completed it
    blocker_id: str | None = None
    team: list[str] = field(default_factory=list)
    help_completed: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def _task_owners(kv_url: str, task_ids: list[str]) -> dict[str, str]:
    from backends.kv import open_kv
    from infrafabric.coordinator import keys

    owners: dict[str, str] = {}
    async with open_kv(kv_url) as kv:
        for task_id in task_ids:
            row = await kv.get(keys.owner_key(task_id))
            if row is not None and row.value.decode().startswith(keys.COMPLETED_PREFIX):
                owners[task_id] = row.value.decode()[len(keys.COMPLETED_PREFIX):]
    return owners


async def _answered(kv_url: str) -> set[str]:
    """Blocker ids the governor has answered (its one-answer-per-blocker records)."""
    from backends.kv import open_kv
    from infrafabric.governor.responder import ANSWERS

    async with open_kv(kv_url) as kv:
        return {row.key[len(ANSWERS):] for row in await kv.get_prefix(ANSWERS)}


async def _help_tasks(kv_url: str, blocker_id: str) -> dict[str, str]:
    """The blocker's help tasks (``help-<blocker>-<helper>``) → their owner record."""
    from backends.kv import open_kv
    from infrafabric.coordinator import keys

    prefix = keys.TASKS + keys.help_task_id(blocker_id, "")
    async with open_kv(kv_url) as kv:
        return {row.key[len(prefix):-len("/owner")]: row.value.decode()
                for row in await kv.get_prefix(prefix) if row.key.endswith("/owner")}


async def run_phase0(state: StackState, *, tasks_per_swarm: int = 3, timeout: float = 60.0) -> Phase0Result:
    status = stack_status(state)
    kv_url = status["engines"]["kv"]
    swarms = [s["name"][len("swarm-"):] for s in status["services"] if s["name"].startswith("swarm-")]
    credential = issue_swarm_credential(state, "phase0-orchestrator", role="operator")
    run_id = uuid.uuid4().hex[:8]
    result = Phase0Result(run_id, [])
    answered_before = await _answered(kv_url)
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {credential.read_text().strip()}"}
    async with httpx.AsyncClient(base_url=_service(status, "coordinator")["url"], headers=headers,
                                 timeout=30.0) as api:
        for swarm in swarms:
            batch = [{"id": f"phase0-{run_id}-{swarm}-{i}", "action": "wordcount", "text": f"task {i} of {swarm}"}
                     for i in range(tasks_per_swarm)]
            r = await api.post("/v1/tasks", json={"swarm_id": swarm, "tasks": batch})
            r.raise_for_status()
            result.tasks += [t["id"] for t in batch]
        blocked = "session-4-sip"
        r = await api.post("/v1/tasks", json={"swarm_id": blocked, "tasks": [{
            "id": f"phase0-{run_id}-blocker", "type": "report_blocker", "blocker_info": {
                "reason": "sip_ndi_integration_failure", "run": run_id,
                "required_capabilities": ["integration:sip", "integration:ndi", "integration:webrtc"]}}]})
        r.raise_for_status()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        from infrafabric.coordinator.keys import COMPLETED_PREFIX

        result.completed = await _task_owners(kv_url, result.tasks)
        new = sorted((await _answered(kv_url)) - answered_before)
        if new:
            result.blocker_id = new[0]
            helpers = await _help_tasks(kv_url, result.blocker_id)
            result.team = sorted(helpers)
            result.help_completed = sorted(h for h, owner in helpers.items() if owner == COMPLETED_PREFIX + h)
        if len(result.completed) == len(result.tasks) and result.team and \
                len(result.help_completed) == len(result.team):
            break
        await asyncio.sleep(0.2)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class TasksResult:
    pushed: int
    done: int
    seconds: float


async def run_tasks(state: StackState, counts: dict[str, int], *, timeout: float = 120.0) -> TasksResult:
    """Push ``counts[swarm]`` wordcount tasks to each swarm at once; time until every one is completed."""
    status = stack_status(state)
    credential = issue_swarm_credential(state, "phase0-orchestrator", role="operator")
    run_id = uuid.uuid4().hex[:8]
    ids: list[str] = []
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=_service(status, "coordinator")["url"], timeout=30.0,
                                 headers={"Authorization": f"Bearer {credential.read_text().strip()}"}) as api:
        for swarm, n in counts.items():
            batch = [{"id": f"work-{run_id}-{swarm}-{i}", "action": "wordcount", "text": "lorem ipsum " * 50}
                     for i in range(n)]
            (await api.post("/v1/tasks", json={"swarm_id": swarm, "tasks": batch})).raise_for_status()
            ids += [t["id"] for t in batch]
    deadline = time.monotonic() + timeout
    done: dict[str, str] = {}
    while time.monotonic() < deadline:
        done = await _task_owners(status["engines"]["kv"], ids)
        if len(done) == len(ids):
            break
        await asyncio.sleep(0.05)
    return TasksResult(len(ids), len(done), time.perf_counter() - started)


@dataclass
class PayoutResult:
    node_id: str
    batch_id: str
    batch: dict[str, Any]
    payouts: list[dict[str, Any]]
    resources: dict[str, Any] = field(default_factory=dict)  # the node's history after its heartbeat


async def run_payout(state: StackState, *, timeout: float = 60.0) -> PayoutResult:
    """One node's life, from registration to a paid payout, through the node API on the stack."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from lucid.node.api.auth import mint_token
    from lucid.node.poot import sign_poot

    status = stack_status(state)
    secret = state.secret("node-jwt-secret")
    admin = {"Authorization": f"Bearer {mint_token(secret, role='admin', subject='stack-operator')}"}
    tag = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=_service(status, "node-management")["url"], timeout=30.0) as api:
        pool_id = f"pool_{tag}"
        (await api.post("/api/v1/nodes/pools", json={"pool_id": pool_id, "name": f"stack-{tag}"},
                        headers=admin)).raise_for_status()
        key = Ed25519PrivateKey.generate()
        pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        r = await api.post("/api/v1/nodes", headers=admin, json={
            "name": f"stack-node-{tag}", "node_type": "worker", "initial_pool_id": pool_id, "public_key": pub})
        r.raise_for_status()
        node_id = r.json()["node_id"]
        (await api.post(f"/api/v1/nodes/{node_id}/start", headers=admin)).raise_for_status()
        worker = {"Authorization": f"Bearer {mint_token(secret, role='worker', node_id=node_id)}"}
        (await api.post(f"/api/v1/nodes/{node_id}/heartbeat", headers=worker, json={"resources": NODE_SAMPLE})
         ).raise_for_status()  # the node's own figures, not the API host's
        resources = (await api.get(f"/api/v1/nodes/{node_id}/resources", headers=admin)).json()
        ts = datetime.now(UTC)
        output = base64.b64encode(secrets.token_bytes(900)).decode()
        nonce = secrets.token_urlsafe(18)
        r = await api.post(f"/api/v1/nodes/{node_id}/poot/validate", headers=worker, json={
            "output_data": output, "timestamp": ts.isoformat(), "nonce": nonce,
            "signature": sign_poot(key, node_id, output, ts, nonce)})
        r.raise_for_status()
        score = r.json()
        batch_id = f"batch_{tag}"
        r = await api.post("/api/v1/nodes/payouts/batch", headers=admin, json={"batch_id": batch_id, "payout_requests": [
            {"node_id": node_id, "amount": str(round(max(score["score"], 1.0) / 10, 6)),
             "wallet_address": PHASE0_WALLET}]})
        r.raise_for_status()
        deadline = time.monotonic() + timeout
        batch: dict[str, Any] = {}
        while time.monotonic() < deadline:
            batch = (await api.get(f"/api/v1/nodes/payouts/batch/{batch_id}", headers=admin)).json()
            if batch.get("status") in ("completed", "partial", "failed"):
                break
            await asyncio.sleep(0.2)
        history = (await api.get("/api/v1/nodes/payouts/history", headers=admin,
                                 params={"node_id": node_id})).json()
    return PayoutResult(node_id, batch_id, batch, [p for p in history["payouts"] if p["node_id"] == node_id],
                        resources)
