"""`infrafabric coordinator serve | status | swarms | blockers`."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from backends.kv import open_kv
from infrafabric.cli.state import default_bus_url, default_kv_url

app = typer.Typer(help="IF.coordinator: real-time coordination of swarms.", no_args_is_help=True)
console = Console()

KV = typer.Option(None, "--kv", help="Key-value URL (etcd://host:port, sqlite:///file, memory://)")
BUS = typer.Option(None, "--bus", help="Bus URL (nats://host:port or memory://)")


@app.command()
def serve(
    kv: Optional[str] = KV,
    bus: Optional[str] = BUS,
    policy: Optional[str] = typer.Option(None, help="ResourcePolicy YAML file"),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds (default: until signalled)"),
) -> None:
    """Run the coordinator service: the governor answers every blocker event with a team."""
    from infrafabric.coordinator import IFCoordinator
    from infrafabric.governor import IFGovernor, ResourcePolicy
    from infrafabric.governor.responder import BlockerResponder

    async def run() -> None:
        coordinator = IFCoordinator(kv_url=kv or default_kv_url(), bus_url=bus or default_bus_url())
        async with coordinator:
            governor = IFGovernor(coordinator, ResourcePolicy.from_yaml(policy) if policy else ResourcePolicy())
            loaded = await governor.load()
            responder = await BlockerResponder(governor).start()
            console.print(f"[green]coordinator serving[/green] kv={coordinator.kv.url} bus={coordinator.bus.url} "
                          f"swarm profiles={loaded}")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)

            async def report() -> None:
                while True:
                    a = await responder.assignments.get()
                    console.print(f"blocker {a['blocker_id']} of {a['swarm_id']}: team {a['team'] or 'escalated'}")

            reporter = asyncio.create_task(report())
            try:
                await asyncio.wait_for(stop.wait(), duration)
            except asyncio.TimeoutError:
                pass
            reporter.cancel()
            await responder.stop()
            await governor.close()
        console.print("coordinator stopped")

    asyncio.run(run())


@app.command()
def status(kv: Optional[str] = KV) -> None:
    """Health of the coordination store."""

    async def run() -> dict[str, object]:
        async with open_kv(kv or default_kv_url()) as store:
            return await store.status()

    result = asyncio.run(run())
    table = Table("field", "value", title="coordination store")
    for key, value in result.items():
        table.add_row(key, str(value))
    console.print(table)


@app.command()
def swarms(kv: Optional[str] = KV) -> None:
    """Registered swarms and their capabilities."""

    async def run() -> list[tuple[str, list[str]]]:
        async with open_kv(kv or default_kv_url()) as store:
            rows = await store.get_prefix("/swarms/")
        return [(r.key.split("/")[2], json.loads(r.value)) for r in rows if r.key.endswith("/capabilities")]

    table = Table("swarm", "capabilities", title="swarms")
    for swarm_id, caps in asyncio.run(run()):
        table.add_row(swarm_id, ", ".join(caps))
    console.print(table)


@app.command()
def blockers(kv: Optional[str] = KV) -> None:
    """Blockers reported and not yet resolved."""

    async def run() -> list[dict[str, object]]:
        async with open_kv(kv or default_kv_url()) as store:
            return [json.loads(r.value) for r in await store.get_prefix("/blockers/")]

    table = Table("blocker", "swarm", "info", title="pending blockers")
    for b in asyncio.run(run()):
        table.add_row(str(b["blocker_id"]), str(b["swarm_id"]), json.dumps(b["blocker_info"]))
    console.print(table)
