"""A swarm worker process: `python -m infrafabric.coordinator.worker --service URL --credential FILE`.

A swarm's process holds only its own credential and talks to the coordinator service (``service.py``):
it never gets an engine address. ``--swarm-id ID --kv URL --bus URL`` joins through the engines directly,
which only control-plane processes (that hold the engines' credentials anyway) should do.

It registers, then for every pushed task claims it and (unless --hold) completes it with a result,
printing one JSON line per event on stdout so a supervisor or a test can follow it. With --hold it
keeps its claims without completing: kill it to see its lease expire and its tasks become claimable.
With ``--chassis URL`` each task runs in the chassis pool's WASM sandbox (with this swarm's credential)
and its result is the guest's answer: swarm code never runs in the worker's own process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from infrafabric.coordinator.client import SwarmClient
from infrafabric.coordinator.remote import RemoteSwarmClient
from infrafabric.errors import InfraFabricError


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class ChassisRunner:
    """Runs a task in the chassis pool service with this swarm's credential."""

    def __init__(self, url: str, credential_file: str) -> None:
        import httpx

        from infrafabric.coordinator.credentials import read_credential

        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=30.0, headers={
            "Authorization": f"Bearer {read_credential(credential_file)}"})

    async def run(self, task: dict[str, object]) -> dict[str, object]:
        payload = {"id": str(task.get("id", "task")), "action": task.get("action") or "echo",
                   "text": str(task.get("text") or task.get("type") or "")}
        reply = await self._client.post("/v1/executions", json={"task": payload})
        body = reply.json()
        if reply.status_code != 200:
            error = body.get("error", {})
            raise InfraFabricError(str(error.get("message", reply.status_code)),
                                   error_code=str(error.get("code", "IF_ERR_CHASSIS")))
        return body  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self._client.aclose()


async def run(args: argparse.Namespace) -> None:
    caps = [c for c in args.capabilities.split(",") if c]
    client: SwarmClient | RemoteSwarmClient
    if args.service:
        client = RemoteSwarmClient(args.service, caps, credential_file=args.credential, ca_file=args.ca)
    else:
        client = SwarmClient(args.swarm_id, caps, kv_url=args.kv, bus_url=args.bus, claim_ttl=args.claim_ttl)
    try:
        await client.start()
    except InfraFabricError as exc:
        emit("error", code=exc.error_code, message=exc.message)
        raise SystemExit(3) from None
    emit("ready", swarm_id=client.swarm_id, pid=os.getpid())
    chassis = ChassisRunner(args.chassis, args.credential) if args.chassis else None
    try:
        while True:
            task = await client.next_task()
            task_id = task.get("id")
            if task.get("type") == "stop":
                break
            if task.get("type") == "report_blocker":
                event = await client.report_blocker(task.get("blocker_info", {}))
                emit("blocker_reported", blocker_id=event["blocker_id"])
                continue
            emit("received", task_id=task_id, type=task.get("type"))
            claim = await client.claim(str(task_id))
            if claim is None:
                emit("lost", task_id=task_id)
                continue
            emit("claimed", task_id=task_id, revision=claim.revision)
            if not args.hold:
                result: object = {"by": client.swarm_id}
                if chassis is not None:
                    result = await chassis.run(task)
                    emit("executed", task_id=task_id, status=result.get("result", {}).get("status"))
                await client.complete(claim.task_id, result, claim)
                emit("completed", task_id=task_id)
    except InfraFabricError as exc:
        emit("error", code=exc.error_code, message=exc.message)
        raise SystemExit(3) from None
    finally:
        if chassis is not None:
            await chassis.close()
        await client.stop(release=not args.hold)
        emit("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--service", help="coordinator service URL (a swarm's only way in)")
    parser.add_argument("--credential", help="this swarm's credential file (with --service)")
    parser.add_argument("--ca", help="CA certificate for an HTTPS service")
    parser.add_argument("--swarm-id", help="with --kv/--bus only: control-plane processes")
    parser.add_argument("--capabilities", default="")
    parser.add_argument("--kv")
    parser.add_argument("--bus")
    parser.add_argument("--claim-ttl", type=int, default=10)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--chassis", help="chassis pool URL: run each task in its sandbox (with --service)")
    args = parser.parse_args()
    if args.service and not args.credential:
        parser.error("--service needs --credential")
    if not args.service and not (args.swarm_id and args.kv and args.bus):
        parser.error("give --service and --credential (or, for control-plane processes, --swarm-id, --kv, --bus)")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
