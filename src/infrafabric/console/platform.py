"""What the console reads and acts on. One shape for both deployments: the embedded platform builds it in
process (``embedded.py``); the stack's console process builds it from the engines' URLs (``open_platform``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from backends.kv import KeyValueStore, open_kv
from infrafabric.coordinator.credentials import CredentialVerifier, load_public_key
from infrafabric.governor import IFGovernor
from infrafabric.optimise.tracker import CostTracker
from infrafabric.witness import Witness


@dataclass
class NodeAPI:
    """The node-management API (the only owner of node data and the only payer), reached over HTTP or, on
    the embedded platform, in process through an ASGI transport. ``token`` is an admin token for it."""

    client: httpx.AsyncClient
    token: str

    async def get(self, path: str, **params: Any) -> Any:
        r = await self.client.get(path, params={k: v for k, v in params.items() if v is not None},
                                  headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(path, json=body, headers={"Authorization": f"Bearer {self.token}"})


@dataclass
class Platform:
    """The collaborators of the console (all explicit: nothing is found through process-wide defaults)."""

    kv: KeyValueStore  # coordination state: swarms, tasks, blockers, the governor's records
    governor: IFGovernor  # following the store; operator actions go through it (audited, replica-safe ledger)
    witness: Witness  # the audit log; also the console's event source and where its own actions are written
    verifier: CredentialVerifier  # operator and viewer credentials
    mesh_kv: KeyValueStore | None = None  # the service registry's store
    mq: Any = None  # AsyncMessageQueueClient: queue depth per destination
    mq_destinations: tuple[str, ...] = ()
    nodes: NodeAPI | None = None
    costs: CostTracker | None = None
    name: str = "embedded"  # shown in the header: which deployment this console shows
    extras: dict[str, Any] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def open_platform(*, kv_url: str, authority_key: str, witness: Witness, mesh_kv_url: str | None = None,
                        mq_url: str | None = None, mq_destinations: tuple[str, ...] = (),
                        node_api_url: str | None = None, node_api_token: str | None = None,
                        name: str = "stack") -> AsyncIterator[Platform]:
    """The platform of a deployment whose engines are named by URL (the stack's console process)."""
    kv = open_kv(kv_url)
    mesh_kv = open_kv(mesh_kv_url) if mesh_kv_url else None
    governor = IFGovernor(kv=kv, audit=witness.log, cost_sink=None)
    await governor.load()
    await governor.follow()
    mq = None
    if mq_url:
        from lucid.service_mesh.communication import AsyncMessageQueueClient

        mq = AsyncMessageQueueClient(mq_url)
        await mq.__aenter__()
    client = httpx.AsyncClient(base_url=node_api_url, timeout=5.0) if node_api_url else None
    platform = Platform(kv=kv, governor=governor, witness=witness,
                        verifier=CredentialVerifier(load_public_key(authority_key), kv), mesh_kv=mesh_kv, mq=mq,
                        mq_destinations=mq_destinations,
                        nodes=NodeAPI(client, node_api_token or "") if client is not None else None,
                        costs=CostTracker(witness), name=name)
    try:
        yield platform
    finally:
        await governor.close()
        if client is not None:
            await client.aclose()
        if mq is not None:
            await mq.__aexit__(None, None, None)
        if mesh_kv is not None:
            await mesh_kv.close()
        await kv.close()
