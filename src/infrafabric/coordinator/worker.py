"""A swarm worker process: `python -m infrafabric.coordinator.worker --swarm-id ID --kv URL --bus URL`.

It registers, then for every pushed task claims it and (unless --hold) completes it with a result,
printing one JSON line per event on stdout so a supervisor or a test can follow it. With --hold it
keeps its claims without completing: kill it to see its lease expire and its tasks become claimable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from infrafabric.coordinator.client import SwarmClient


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    caps = [c for c in args.capabilities.split(",") if c]
    client = SwarmClient(args.swarm_id, caps, kv_url=args.kv, bus_url=args.bus, claim_ttl=args.claim_ttl)
    await client.start()
    emit("ready", swarm_id=args.swarm_id, pid=os.getpid())
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
                await client.complete(claim.task_id, {"by": args.swarm_id}, claim)
                emit("completed", task_id=task_id)
    finally:
        await client.stop(release=not args.hold)
        emit("stopped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--swarm-id", required=True)
    parser.add_argument("--capabilities", default="")
    parser.add_argument("--kv", required=True)
    parser.add_argument("--bus", required=True)
    parser.add_argument("--claim-ttl", type=int, default=10)
    parser.add_argument("--hold", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
