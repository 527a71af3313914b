"""`infrafabric coordinator serve | status | swarms | blockers | resolve-blocker | issue-credential | revoke-credential`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from backends.kv import open_kv
from infrafabric.cli.runloop import run_service
from infrafabric.cli.state import default_bus_url, default_kv_url

app = typer.Typer(help="IF.coordinator: real-time coordination of swarms.", no_args_is_help=True)
console = Console()

KV = typer.Option(None, "--kv", help="Key-value URL (etcd://host:port, sqlite:///file, memory://)")
BUS = typer.Option(None, "--bus", help="Bus URL (nats://host:port or memory://)")


METRICS = typer.Option(None, "--metrics-listen", help="HOST:PORT serving /metrics for Prometheus")


@app.command()
def serve(
    kv: Optional[str] = KV,
    bus: Optional[str] = BUS,
    policy: Optional[str] = typer.Option(None, help="ResourcePolicy YAML file"),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds (default: until signalled)"),
    listen: Optional[str] = typer.Option(None, help="HOST:PORT for swarms in other processes (the swarm API)"),
    authority_key: Optional[Path] = typer.Option(None, help="The credential authority's public key (PEM): "
                                                 "swarm credentials are verified with it"),
    tls_cert: Optional[Path] = typer.Option(None, help="Server certificate for the swarm API (HTTPS)"),
    tls_key: Optional[Path] = typer.Option(None, help="Its private key"),
    claim_ttl: int = typer.Option(10, help="Seconds a silent swarm's session and claims live"),
    responder: bool = typer.Option(True, "--responder/--no-responder",
                                   help="Answer blocker events here (off when a separate governor service does)"),
    metrics_listen: Optional[str] = METRICS,
) -> None:
    """Run the coordinator service: the governor answers every blocker event with a team; with --listen,
    swarms in other processes work through it with their own credentials, never touching the engines."""
    if listen is not None and authority_key is None:
        console.print("[red]error:[/red] --listen needs --authority-key (swarm credentials are checked with it)")
        raise typer.Exit(2)
    run_service(serve_control_plane(kv=kv, bus=bus, policy=policy, duration=duration, listen=listen,
                                    authority_key=authority_key, tls_cert=tls_cert, tls_key=tls_key,
                                    claim_ttl=claim_ttl, responder=responder, metrics_listen=metrics_listen))


async def serve_control_plane(*, kv: Optional[str], bus: Optional[str], policy: Optional[str] = None,
                              duration: Optional[float] = None, listen: Optional[str] = None,
                              authority_key: Optional[Path] = None, tls_cert: Optional[Path] = None,
                              tls_key: Optional[Path] = None, claim_ttl: int = 10, responder: bool = True,
                              metrics_listen: Optional[str] = None, name: str = "coordinator") -> None:
    """The coordinator service (``listen``) and/or the governor's blocker responder, until SIGTERM.

    The metrics endpoint starts last: once it answers, everything this process serves is up (the stack's
    supervisor uses it as the health probe)."""
    from prometheus_client import CollectorRegistry

    from backends.metrics import serve_metrics
    from infrafabric.coordinator import IFCoordinator
    from infrafabric.coordinator.metrics import CoordinatorMetrics
    from infrafabric.governor import IFGovernor, ResourcePolicy
    from infrafabric.governor.metrics import GovernorMetrics
    from infrafabric.governor.responder import BlockerResponder

    from infrafabric.witness.default import current_default_witness
    from infrafabric.witness.metrics import WitnessCollector

    registry = CollectorRegistry()
    registry.register(WitnessCollector(current_default_witness))
    coordinator = IFCoordinator(kv_url=kv or default_kv_url(), bus_url=bus or default_bus_url(), claim_ttl=claim_ttl)
    async with coordinator:
        server = await _start_swarm_api(coordinator, listen, authority_key, tls_cert, tls_key,
                                        CoordinatorMetrics(registry)) if listen else None
        governor, loaded, answering = None, 0, None
        if responder:  # the governor's view is only needed to answer blockers
            governor = IFGovernor(coordinator, ResourcePolicy.from_yaml(policy) if policy else ResourcePolicy())
            loaded = await governor.load()
            await governor.follow()  # current with other replicas and operators; only live swarms are chosen
            answering = await BlockerResponder(governor).start()
        governor_metrics = GovernorMetrics(governor, registry) if governor is not None else None
        console.print(f"[green]{name} serving[/green] kv={coordinator.kv.url} "
                      f"bus={coordinator.bus.url} swarm profiles={loaded} responder={'on' if answering else 'off'}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        async def report() -> None:
            assert answering is not None and governor_metrics is not None
            while True:
                a = await answering.assignments.get()
                governor_metrics.observe_assignment(a)
                console.print(f"blocker {a['blocker_id']} of {a['swarm_id']}: team {a['team'] or 'escalated'}")

        reporter = asyncio.create_task(report()) if answering else None
        endpoint = serve_metrics(registry, metrics_listen) if metrics_listen else None
        if endpoint is not None:
            console.print(f"metrics on {endpoint.url}")
        try:
            await asyncio.wait_for(stop.wait(), duration)
        except asyncio.TimeoutError:
            pass
        if endpoint is not None:
            endpoint.close()
        if reporter is not None:
            reporter.cancel()
        if server is not None:
            await server.stop()
        if answering is not None:
            await answering.stop()
        if governor is not None:
            await governor.close()
    console.print("stopped")


class _SwarmAPI:
    """The swarm API (``coordinator.service``) served inside the coordinator's event loop."""

    def __init__(self, gateway: object, server: object) -> None:
        self.gateway, self.server = gateway, server

    async def stop(self) -> None:
        await self.server.stop()  # type: ignore[attr-defined]
        await self.gateway.close()  # type: ignore[attr-defined]


async def _start_swarm_api(coordinator: object, listen: str, authority_key: Optional[Path],
                           tls_cert: Optional[Path], tls_key: Optional[Path], metrics: object = None) -> _SwarmAPI:
    from backends.serving import AsgiServer
    from infrafabric.coordinator.credentials import CredentialVerifier, load_public_key
    from infrafabric.coordinator.service import SwarmGateway, create_app

    host, _, port = listen.rpartition(":")
    assert authority_key is not None
    gateway = SwarmGateway(coordinator, CredentialVerifier(load_public_key(authority_key),  # type: ignore[arg-type]
                                                           coordinator.kv),  # type: ignore[attr-defined]
                           metrics=metrics)  # type: ignore[arg-type]
    server = await AsgiServer(create_app(gateway), host or "127.0.0.1", int(port),
                              ssl_certfile=str(tls_cert) if tls_cert else None,
                              ssl_keyfile=str(tls_key) if tls_key else None).start()
    console.print(f"swarm API on {'https' if tls_cert else 'http'}://{host or '127.0.0.1'}:{port}")
    return _SwarmAPI(gateway, server)


@app.command("issue-credential")
def issue_credential(
    name: str = typer.Argument(..., help="The swarm id (or, with --role operator or viewer, the person's name)"),
    authority_dir: Path = typer.Option(..., help="The credential authority's key directory (created if new)"),
    out: Path = typer.Option(..., "--out", "-o", help="Credential file to write (mode 600)"),
    role: str = typer.Option("swarm", help="swarm, operator, or viewer (console: sees everything but secrets, changes nothing)"),
    ttl: int = typer.Option(3600, help="Seconds it is valid"),
) -> None:
    """Issue a credential for one swarm (or operator): the only secret a swarm process is given."""
    from infrafabric.coordinator.credentials import CredentialAuthority, write_credential
    from infrafabric.errors import InfraFabricError

    try:
        authority = CredentialAuthority.load_or_create(authority_dir)
        token = authority.issue(role, name, ttl)  # type: ignore[arg-type]
    except InfraFabricError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    write_credential(out, token)
    console.print(f"{role} credential for {name} written to {out} (valid {ttl} s)")


@app.command("revoke-credential")
def revoke_credential(
    kv: Optional[str] = KV,
    credential: Optional[Path] = typer.Option(None, help="Revoke this one credential file"),
    swarm: Optional[str] = typer.Option(None, help="Revoke every credential issued to this swarm until now"),
    operator: Optional[str] = typer.Option(None, help="Revoke every credential issued to this operator until now"),
) -> None:
    """Revoke credentials: every coordinator replica refuses them within a second."""
    import jwt

    from infrafabric.coordinator.credentials import MAX_TTL, read_credential, revoke

    async def run() -> None:
        async with open_kv(kv or default_kv_url()) as store:
            if credential is not None:
                claims = jwt.decode(read_credential(credential), options={"verify_signature": False})
                await revoke(store, jti=str(claims["jti"]), expires_in=max(int(claims["exp"]) - int(time.time()), 1))
            elif swarm is not None:
                await revoke(store, role="swarm", name=swarm, expires_in=MAX_TTL)
            elif operator is not None:
                await revoke(store, role="operator", name=operator, expires_in=MAX_TTL)
            else:
                console.print("[red]error:[/red] name a --credential, a --swarm or an --operator")
                raise typer.Exit(2)

    asyncio.run(run())
    console.print("revoked")


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


@app.command("resolve-blocker")
def resolve_blocker(
    swarm_id: str = typer.Argument(..., help="The swarm that reported it"),
    blocker_id: str = typer.Argument(..., help="Its id (see `coordinator blockers`)"),
    kv: Optional[str] = KV,
) -> None:
    """Mark a blocker resolved (an operator decision; audited)."""
    from infrafabric.audit import log_operation
    from infrafabric.coordinator import keys as coordination_keys
    from infrafabric.errors import InfraFabricError
    from infrafabric.ids import validate_swarm_id, validate_task_id

    try:
        validate_swarm_id(swarm_id)
        validate_task_id(blocker_id)
    except InfraFabricError as exc:
        console.print(f"[red]{exc.error_code}[/red]: {exc.message}")
        raise typer.Exit(2) from None

    async def run() -> bool:
        async with open_kv(kv or default_kv_url()) as store:
            return await store.delete(coordination_keys.blocker_key(swarm_id, blocker_id))

    if not asyncio.run(run()):
        console.print(f"[red]no pending blocker {blocker_id} of {swarm_id}[/red]")
        raise typer.Exit(1)
    log_operation("IF.coordinator", "blocker_resolved", {"swarm_id": swarm_id, "blocker_id": blocker_id,
                                                         "by": "operator"}, "INFO")
    console.print(f"blocker {blocker_id} of {swarm_id} resolved")


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
