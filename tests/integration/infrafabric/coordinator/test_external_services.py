"""IF.coordinator against the real engines (seed 002 'external services', made real)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from etcd3aio import Etcd3Client

from infrafabric.coordinator import Claim, IFCoordinator
from infrafabric.coordinator.core import CoordinationCore
from infrafabric.errors import StaleClaimError

pytestmark = [pytest.mark.etcd, pytest.mark.nats]


@pytest.mark.asyncio
async def test_etcd_backend_integration(etcd_server) -> None:  # type: ignore[no-untyped-def]
    host, port = etcd_server.endpoint.split(":")
    coordinator = IFCoordinator(etcd_host=host, etcd_port=int(port))
    try:
        await coordinator.register_swarm("test-swarm", ["test:capability"])
        async with Etcd3Client([etcd_server.endpoint]) as raw:  # read it back with a plain etcd client
            resp = await raw.kv.get("/swarms/test-swarm/capabilities")
        assert resp.kvs
        caps = json.loads(resp.kvs[0].value.decode())
        assert "test:capability" in caps
    finally:
        await coordinator.close()


class Worker:
    """A swarm worker in its own process, followed through its JSON event lines."""

    def __init__(self, swarm_id: str, kv: str, bus: str, *extra: str) -> None:
        self.swarm_id = swarm_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infrafabric.coordinator.worker", "--swarm-id", swarm_id, "--kv", kv,
             "--bus", bus, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    async def next_event(self, timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
        if not line:
            raise AssertionError(f"worker exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    async def expect(self, event: str) -> dict[str, Any]:
        while True:
            got = await self.next_event()
            if got["event"] == event:
                return got

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for w in made:
        w.close()


async def test_nats_message_bus_integration(etcd_server, nats_server, workers) -> None:  # type: ignore[no-untyped-def]
    """A swarm in another process receives pushes over NATS, claims on etcd, completes, reports blockers."""
    coordinator = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url)
    try:
        orchestrator = await coordinator.register_swarm("orchestrator", [])
        swarm_id = f"remote-{uuid.uuid4().hex[:6]}"
        worker = Worker(swarm_id, etcd_server.url, nats_server.url, "--capabilities", "integration:sip")
        workers.append(worker)
        await worker.expect("ready")
        caps, _ = coordinator.etcd.get(f"/swarms/{swarm_id}/capabilities")
        assert json.loads(caps) == ["integration:sip"]  # type: ignore[arg-type]
        task_id = f"task-{uuid.uuid4().hex[:8]}"
        await coordinator.announce_task(task_id)
        start = time.perf_counter()
        await coordinator.push_task_to_swarm(swarm_id, {"id": task_id, "action": "work"})
        push_ms = (time.perf_counter() - start) * 1000
        assert push_ms < 100
        assert (await worker.expect("claimed"))["task_id"] == task_id
        await worker.expect("completed")
        assert await coordinator.task_owner(task_id) == f"completed:{swarm_id}"
        result, _ = coordinator.etcd.get(f"/tasks/{task_id}/result")
        assert json.loads(result) == {"by": swarm_id}  # type: ignore[arg-type]
        assert await coordinator.claim_task("someone-else", task_id) is False

        await coordinator.push_task_to_swarm(swarm_id, {"id": "blk-1", "type": "report_blocker",
                                                        "blocker_info": {"reason": "needs ndi"}})
        reported = await worker.expect("blocker_reported")
        event = await asyncio.wait_for(orchestrator.get(), 5)
        assert event["type"] == "blocker_detected" and event["swarm_id"] == swarm_id
        assert event["blocker_id"] == reported["blocker_id"]
    finally:
        await coordinator.close()


async def test_killed_worker_loses_its_claims_after_the_ttl(etcd_server, nats_server, workers) -> None:  # type: ignore[no-untyped-def]
    coordinator = IFCoordinator(kv_url=etcd_server.url, bus_url=nats_server.url)
    try:
        swarm_id = f"doomed-{uuid.uuid4().hex[:6]}"
        worker = Worker(swarm_id, etcd_server.url, nats_server.url, "--hold", "--claim-ttl", "1")
        workers.append(worker)
        await worker.expect("ready")
        task_id = f"task-{uuid.uuid4().hex[:8]}"
        await coordinator.announce_task(task_id)
        await coordinator.push_task_to_swarm(swarm_id, {"id": task_id})
        claimed = await worker.expect("claimed")
        assert await coordinator.task_owner(task_id) == swarm_id
        worker.kill()
        deadline = time.monotonic() + 10
        while not await coordinator.claim_task("rescuer", task_id):
            assert time.monotonic() < deadline, "the dead worker's claim never expired"
            await asyncio.sleep(0.2)
        # The dead owner's fencing token is refused (as if the process came back and tried to finish).
        zombie = CoordinationCore(coordinator.kv, coordinator.bus)
        stale = Claim(task_id, swarm_id, claimed["revision"], 0)
        with pytest.raises(StaleClaimError):
            await zombie.complete(swarm_id, task_id, {"late": True}, stale)
        assert await coordinator.task_owner(task_id) == "rescuer"
    finally:
        await coordinator.close()
