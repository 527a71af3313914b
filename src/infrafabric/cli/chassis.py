"""``infrafabric chassis modules | run | check-url | attacks | serve``: the WASM sandbox from the shell."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from infrafabric.chassis import (
    ChassisError,
    IFChassis,
    ResourceLimits,
    ScopedCredentials,
    ServiceContract,
)
from infrafabric.audit import log_operation
from infrafabric.chassis.modules import EXAMPLES, module_bytes

app = typer.Typer(help="IF.chassis: run swarm code in a WebAssembly sandbox.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _load_module(source: str) -> bytes:
    """An example name, a .wat file or a .wasm file."""
    if source in EXAMPLES:
        return module_bytes(source)
    path = Path(source)
    if not path.is_file():
        raise typer.BadParameter(f"{source!r} is neither an example module ({', '.join(EXAMPLES)}) nor a file")
    data = path.read_bytes()
    if path.suffix == ".wat":
        import wasmtime

        return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
    return data


@app.command("modules")
def list_modules() -> None:
    """List the example guest modules shipped with the chassis."""
    table = Table("name", "bytes")
    for name in EXAMPLES:
        table.add_row(name, str(len(module_bytes(name))))
    console.print(table)


@app.command("run")
def run_task(
    task: str = typer.Argument(..., help='Task JSON, e.g. \'{"action": "wordcount", "text": "a b"}\''),
    module: str = typer.Option("reference", "--module", "-m", help="Example name, .wat or .wasm file."),
    swarm_id: str = typer.Option("cli-swarm", "--swarm"),
    memory_mb: int = typer.Option(256, "--memory-mb", min=1),
    timeout: float = typer.Option(10.0, "--timeout", min=0.01, help="Wall-clock cap in seconds."),
    cpu_percent: int = typer.Option(25, "--cpu-percent", min=1, max=100),
    token: Optional[str] = typer.Option(None, "--token", envvar="IF_CHASSIS_TOKEN",
                                        help="Scoped token the host injects (never shown to the guest)."),
    endpoint: list[str] = typer.Option([], "--endpoint", help="Allowed endpoint (repeatable)."),
    ttl: float = typer.Option(300, "--ttl", min=1, max=3600),
) -> None:
    """Run one task in a fresh sandbox and print the guest's JSON result."""
    try:
        payload = json.loads(task)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"task is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise typer.BadParameter("task must be a JSON object")

    async def go() -> int:
        chassis = IFChassis(audit=log_operation, reputation_sink=None)
        try:
            contract = ServiceContract(swarm_id, resource_requirements=ResourceLimits(
                max_memory_mb=memory_mb, max_execution_time_seconds=timeout, max_cpu_percent=cpu_percent))
            chassis.load_swarm(swarm_id, _load_module(module), contract)
            creds = None
            if endpoint:
                task_id = str(payload.setdefault("id", "cli-task"))
                creds = ScopedCredentials(swarm_id, task_id, token, ttl, list(endpoint))
            outcome = await chassis.execute_task_detailed(swarm_id, payload, creds)
        except ChassisError as exc:
            err_console.print(f"[red]{exc.error_code}[/red] {exc.message}")
            return 1
        finally:
            chassis.close()
        console.print_json(json.dumps(outcome.result))
        if outcome.stdout:
            err_console.print(f"[dim]stdout:[/dim] {outcome.stdout.decode('utf-8', 'replace')}")
        err_console.print(f"[dim]{outcome.latency_ms:.2f} ms, fuel {outcome.fuel_consumed}, "
                          f"memory {outcome.memory_bytes} bytes[/dim]")
        return 0

    raise typer.Exit(asyncio.run(go()))


@app.command("check-url")
def check_url(
    url: str = typer.Argument(...),
    allow: list[str] = typer.Option(..., "--allow", help="Allowed endpoint (repeatable)."),
) -> None:
    """Would scoped credentials for these endpoints allow this URL? (exit 0 yes, 1 no)"""
    try:
        creds = ScopedCredentials("cli", "check", None, 60, list(allow))
    except ChassisError as exc:
        err_console.print(f"[red]{exc.error_code}[/red] {exc.message}")
        raise typer.Exit(2) from None
    allowed = creds.is_endpoint_allowed(url)
    console.print("[green]allowed[/green]" if allowed else "[red]refused[/red]")
    raise typer.Exit(0 if allowed else 1)


@app.command("attacks")
def attacks() -> None:
    """Run the attack showcase: every attack is refused, useful work still runs."""
    from infrafabric.chassis.showcase import run_showcase

    rows = asyncio.run(run_showcase())
    table = Table("scenario", "swarm", "outcome", "error code", "detail", "s", title="IF.chassis attack showcase")
    for row in rows:
        colour = "red" if row.outcome == "refused" else "green"
        table.add_row(row.scenario, row.swarm_id, f"[{colour}]{row.outcome}[/{colour}]", row.error_code or "",
                      row.detail[:90], f"{row.seconds:.3f}")
    console.print(table)


@app.command("serve")
def serve(
    listen: str = typer.Option("127.0.0.1:8095", help="HOST:PORT for swarms' executions"),
    authority_key: Path = typer.Option(..., help="The credential authority's public key: swarms' keys are checked"),
    kv: Optional[str] = typer.Option(None, "--kv", help="Store holding credential revocations (etcd://, sqlite:///)"),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", help="HOST:PORT serving /metrics"),
    price: str = typer.Option("0", help="Dollars charged to the swarm's budget per execution (0: no charge)"),
) -> None:
    """Run the chassis pool: swarms in other processes run tasks in its sandboxes with their own credential."""
    from prometheus_client import CollectorRegistry

    from backends.kv import open_kv
    from backends.metrics import serve_metrics
    from infrafabric.chassis.service import ChassisMetrics, ChassisPool, create_app
    from backends.serving import AsgiServer, until_signalled
    from infrafabric.cli.runloop import run_service
    from infrafabric.cli.state import default_kv_url
    from infrafabric.coordinator.credentials import CredentialVerifier, load_public_key

    host, _, port = listen.rpartition(":")

    async def run() -> None:
        from infrafabric.witness.default import current_default_witness
        from infrafabric.witness.metrics import WitnessCollector

        registry = CollectorRegistry()
        registry.register(WitnessCollector(current_default_witness))
        from decimal import Decimal

        from infrafabric.governor import IFGovernor

        async with open_kv(kv or default_kv_url()) as store:
            chassis = IFChassis(audit=log_operation, reputation_sink=None)
            governor = IFGovernor(kv=store)
            await governor.load()
            await governor.follow()  # budgets set by operators and other charges are seen here
            pool = ChassisPool(chassis, CredentialVerifier(load_public_key(authority_key), store),
                               ChassisMetrics(registry), charge=governor.acharge, price=Decimal(price))
            server = await AsgiServer(create_app(pool), host or "127.0.0.1", int(port)).start()
            endpoint = serve_metrics(registry, metrics_listen) if metrics_listen else None
            console.print(f"chassis pool serving on http://{host or '127.0.0.1'}:{port}", highlight=False)
            await until_signalled()
            if endpoint is not None:
                endpoint.close()
            await server.stop()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, chassis.close)
            await governor.close()

    run_service(run())
