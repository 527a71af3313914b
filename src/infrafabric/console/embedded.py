"""The console on the embedded default: the whole platform in this one process, no server needed.

The coordination store is a SQLite file (one owning process: this one), the audit log a SQLite witness,
the node API runs in process behind an ASGI transport, and the swarm API listens on a port so swarms in
other processes can connect with their credentials (that is how a blocker "reported from another
process" reaches this console). ``seed_demo`` fills it with the S2 phase-0 swarms, claims, a blocker and
its team, WASM executions, charges, registered mesh services and paid nodes, so a newcomer sees a live
platform.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from backends.kv import open_kv
from infrafabric.console.platform import NodeAPI, Platform
from infrafabric.coordinator.credentials import CredentialAuthority, CredentialVerifier, write_credential
from infrafabric.optimise.tracker import CostTracker
from infrafabric.witness import Witness

MESH_SERVICES = (("api-gateway", "ops", "gateway"), ("session-management", "ops", "sessions"),
                 ("blockchain-core", "chain", "chain"), ("tron-payment", "wallet", "wallet"),
                 ("node-management", "ops", "nodes"))
QUEUE_DESTINATIONS = ("blockchain-core", "session-management")


@dataclass
class Embedded:
    """What the embedded console runs beside its app (the CLI and the tests reach in through these)."""

    platform: Platform
    state_dir: Path
    authority: CredentialAuthority
    swarm_api_url: str
    coordinator: Any
    responder: Any
    node_secret: str

    def credential(self, role: str, name: str, ttl: int = 8 * 3600) -> str:
        return self.authority.issue(role, name, ttl)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def embedded_platform(state_dir: Path, *, swarm_api: str = "127.0.0.1:0") -> AsyncIterator[Embedded]:
    from backends.serving import AsgiServer
    from infrafabric.coordinator import IFCoordinator
    from infrafabric.coordinator.service import SwarmGateway, create_app
    from infrafabric.governor import IFGovernor, ResourcePolicy
    from infrafabric.governor.responder import BlockerResponder
    from lucid.node.api.app import create_app as create_node_app
    from lucid.node.api.auth import mint_token
    from lucid.node.api.settings import NodeAPISettings
    from lucid.service_mesh.communication import AsyncMessageQueueClient

    state_dir.mkdir(parents=True, exist_ok=True)
    witness = Witness(f"sqlite:///{state_dir / 'witness.db'}", state_dir / "witness-keys")
    costs = CostTracker(witness)
    authority = CredentialAuthority.load_or_create(state_dir / "authority")
    coordinator = IFCoordinator(kv_url=f"sqlite:///{state_dir / 'coordination.db'}", bus_url="memory://",
                                audit=witness.log)
    mesh_kv = open_kv("memory://")
    mq = AsyncMessageQueueClient(f"memory://console-{secrets.token_hex(4)}")
    node_secret = secrets.token_urlsafe(32)
    node_app = create_node_app(NodeAPISettings(
        db_url=f"sqlite+aiosqlite:///{state_dir / 'nodes.db'}",
        ledger_url=f"sqlite+aiosqlite:///{state_dir / 'ledger.db'}", jwt_secret=node_secret, scheduler_interval=0.2))
    async with coordinator, mq, node_app.router.lifespan_context(node_app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node_app), base_url="http://node-management", timeout=10.0) as client:
        governor = IFGovernor(coordinator, ResourcePolicy(max_swarms_per_task=3, max_cost_per_task=10.0,
                                                          min_capability_match=0.7), audit=witness.log,
                              cost_sink=lambda swarm, op, amount, **meta: costs.track(swarm, op, amount, **meta))
        await governor.load()
        await governor.follow()
        responder = await BlockerResponder(governor).start()
        gateway = SwarmGateway(coordinator, CredentialVerifier(authority.public_key, coordinator.kv))
        host, _, port = swarm_api.rpartition(":")
        server = await AsgiServer(create_app(gateway), host or "127.0.0.1", int(port)).start()
        bound = server.port
        platform = Platform(kv=coordinator.kv, governor=governor, witness=witness,
                            verifier=CredentialVerifier(authority.public_key, coordinator.kv), mesh_kv=mesh_kv, mq=mq,
                            mq_destinations=QUEUE_DESTINATIONS,
                            nodes=NodeAPI(client, mint_token(node_secret, role="admin", subject="console",
                                                             ttl_seconds=30 * 24 * 3600)),
                            costs=costs, name=f"embedded · {state_dir}")
        try:
            yield Embedded(platform, state_dir, authority, f"http://{host or '127.0.0.1'}:{bound}",
                           coordinator, responder, node_secret)
        finally:
            await server.stop()
            await gateway.close()
            await responder.stop()
            await governor.close()
            await mesh_kv.close()
            await witness.aclose()


async def seed_demo(e: Embedded) -> dict[str, Any]:
    """The S2 phase-0 story on this platform: every figure the console then shows was produced here."""
    from infrafabric.chassis import IFChassis, ResourceLimits, ServiceContract
    from infrafabric.chassis.modules import reference_module
    from infrafabric.demo import SESSIONS
    from infrafabric.governor import SwarmProfile
    from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry

    c, g = e.coordinator, e.platform.governor
    for swarm_id, caps, cost in SESSIONS:
        if swarm_id not in g.swarm_registry:
            g.register_swarm(SwarmProfile(swarm_id, caps, cost, 0.9, 20.0, "gpt-4o-mini"))
        await c.register_swarm(swarm_id, [str(x) for x in caps])
    await g.flush()
    tasks = [f"phase0-{i:03d}" for i in range(24)]
    for i, task_id in enumerate(tasks):
        await c.push_task_to_swarm(SESSIONS[i % 7][0], {"id": task_id, "kind": "integration"})
    for i, task_id in enumerate(tasks):
        swarm_id = SESSIONS[i % 7][0]
        claim = await c.claim(swarm_id, task_id)
        if claim is not None and i % 3 == 0:
            await c.complete_task(swarm_id, task_id, {"ok": True}, claim)
    for i, (swarm_id, _, _) in enumerate(SESSIONS):
        await g.acharge(swarm_id, "model-call", Decimal("1.25") * (i + 1))
    await g.acharge("session-3-h323", "model-call", Decimal("20"))  # over its budget: the breaker trips
    await c.detect_blocker("session-4-sip", {"description": "SIP to NDI bridge handshake fails",
                                             "required_capabilities": ["integration:ndi", "code-analysis:python"]})
    chassis = IFChassis(audit=e.platform.witness.log, reputation_sink=g.update_reputation)
    try:
        for swarm_id in ("session-1-ndi", "session-7-bus"):
            chassis.load_swarm(swarm_id, reference_module(), ServiceContract(
                swarm_id, capabilities=["code-analysis:python"],
                resource_requirements=ResourceLimits(max_memory_mb=64, max_execution_time_seconds=2)))
            for n in range(3):
                await chassis.execute_task(swarm_id, {"id": f"wasm-{swarm_id}-{n}", "action": "wordcount",
                                                      "text": "decode the SIP to NDI bridge handshake"})
    finally:
        chassis.close()
    registry = AsyncServiceRegistry(e.platform.mesh_kv)  # type: ignore[arg-type]
    for name, plane, cluster in MESH_SERVICES:
        await registry.register_service(name, cluster, plane, "127.0.0.1", 9000 + len(name), "1.0.0",
                                        service_id=f"{name}-1", ttl="1h", deregister_critical_after="2h")
    for n in range(3):
        await e.platform.mq.send_message("api-gateway", "blockchain-core", {"anchor": n}, priority="normal")
    paid = await _seed_nodes(e)
    await e.platform.witness.aflush()
    return {"swarms": len(SESSIONS), "tasks": len(tasks), "nodes": paid}


async def _seed_nodes(e: Embedded) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from lucid.node.demo import DEMO_WALLET, sign_poot

    api = e.platform.nodes
    assert api is not None
    if (await api.get("/api/v1/nodes", limit=1)).get("nodes"):
        return 0  # resumed state: the nodes are there already
    await api.post("/api/v1/nodes/pools", {"pool_id": "pool_demo", "name": "demo-pool"})
    requests = []
    for i in range(3):
        key = Ed25519PrivateKey.generate()
        pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        r = await api.post("/api/v1/nodes", {"name": f"demo-node-{i}", "node_type": "worker",
                                             "initial_pool_id": "pool_demo", "public_key": pub})
        r.raise_for_status()
        nid = r.json()["node_id"]
        (await api.post(f"/api/v1/nodes/{nid}/start", {})).raise_for_status()
        ts = datetime.now(UTC)
        output = base64.b64encode(secrets.token_bytes(900)).decode()
        nonce = secrets.token_urlsafe(18)
        from lucid.node.api.auth import mint_token  # the node's own worker token for its PoOT

        worker = mint_token(e.node_secret, role="worker", node_id=nid)
        r = await api.client.post(f"/api/v1/nodes/{nid}/poot/validate", headers={"Authorization": f"Bearer {worker}"},
                                  json={"output_data": output, "timestamp": ts.isoformat(), "nonce": nonce,
                                        "signature": sign_poot(key, nid, output, ts, nonce)})
        r.raise_for_status()
        for beat in range(12):  # the node's own figures, as its agent sends them with each heartbeat
            cpu = 20 + 5 * i + 15 * ((beat * (i + 2)) % 5) / 4
            sample = {"cpu_percent": cpu, "memory_percent": 40 + 3 * i, "memory_used_bytes": 2 ** 32,
                      "memory_total_bytes": 2 ** 34, "disk_percent": 55.0, "disk_used_bytes": 2 ** 38,
                      "disk_total_bytes": 2 ** 40, "network_bytes_sent": beat * 10 ** 6,
                      "network_bytes_recv": beat * 2 * 10 ** 6}
            (await api.client.post(f"/api/v1/nodes/{nid}/heartbeat", json={"resources": sample},
                                   headers={"Authorization": f"Bearer {worker}"})).raise_for_status()
        requests.append({"node_id": nid, "amount": str(round(r.json()["score"] / 10, 6) or "1"),
                         "wallet_address": DEMO_WALLET})
    r = await api.post("/api/v1/nodes/payouts/batch", {"batch_id": "batch_demo_001", "payout_requests": requests})
    r.raise_for_status()
    for _ in range(100):
        status = await api.get("/api/v1/nodes/payouts/batch/batch_demo_001")
        if status["status"] in ("completed", "partial", "failed"):
            break
        await asyncio.sleep(0.05)
    return len(requests)


def write_login_credentials(e: Embedded, directory: Path) -> dict[str, Path]:
    """An operator and a viewer credential for the newcomer to paste (mode 600 files)."""
    out = {}
    for role, name in (("operator", "console-operator"), ("viewer", "console-viewer")):
        path = directory / f"{role}.credential"
        write_credential(path, e.credential(role, name))
        out[role] = path
    return out
