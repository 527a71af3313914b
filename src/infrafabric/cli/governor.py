"""`infrafabric governor serve | register | find-help | budgets | reset-breaker | set-budget`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from backends.kv import open_kv
from infrafabric.cli.state import default_kv_url
from infrafabric.errors import InfraFabricError

app = typer.Typer(help="IF.governor: capabilities, budgets and circuit breakers.", no_args_is_help=True)
console = Console()
KV = typer.Option(None, "--kv", help="Key-value URL (etcd://host:port, sqlite:///file)")
T = TypeVar("T")


def _with_governor(kv: Optional[str], action: Callable[[Any], Awaitable[T]]) -> T:
    """Load the governor's state from the store, run action, store the changes."""
    from infrafabric.governor import IFGovernor

    async def run() -> T:
        store = open_kv(kv or default_kv_url())
        async with store:
            governor = IFGovernor(kv=store)
            await governor.load()
            try:
                return await action(governor)
            finally:
                await governor.close()

    try:
        return asyncio.run(run())
    except (InfraFabricError, ValueError, KeyError, OSError) as exc:
        console.print(f"[red]{getattr(exc, 'error_code', 'IF_ERR')}[/red]: {getattr(exc, 'message', exc)}")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    kv: Optional[str] = KV,
    bus: Optional[str] = typer.Option(None, "--bus", help="Bus URL (nats://host:port or memory://)"),
    policy: Optional[str] = typer.Option(None, help="ResourcePolicy YAML file"),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", help="HOST:PORT serving /metrics"),
) -> None:
    """Run the governor service: answer every blocker event with a team (one answer per blocker across
    replicas) and export budgets, breakers and time-to-team."""
    from infrafabric.cli.coordinator import serve_control_plane
    from infrafabric.cli.runloop import run_service

    run_service(serve_control_plane(kv=kv, bus=bus, policy=policy, responder=True, metrics_listen=metrics_listen,
                                    name="governor"))


def _caps(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


@app.command()
def register(
    swarm_id: str,
    capabilities: str = typer.Option("", help="Comma-separated capabilities"),
    cost_per_hour: float = typer.Option(..., help="Cost per hour in USD"),
    budget: float = typer.Option(..., help="Starting budget in USD"),
    reputation: float = typer.Option(1.0),
    model: Optional[str] = typer.Option(None),
    kv: Optional[str] = KV,
) -> None:
    """Register (or replace) a swarm profile."""
    from infrafabric.governor import SwarmProfile

    async def action(governor: Any) -> None:
        governor.register_swarm(SwarmProfile(swarm_id, _caps(capabilities), cost_per_hour, reputation, budget, model))

    _with_governor(kv, action)
    console.print(f"registered {swarm_id}")


@app.command("find-help")
def find_help(
    capabilities: str = typer.Option(..., help="Comma-separated required capabilities"),
    blocked: str = typer.Option("cli-request", help="The blocked swarm (never chosen)"),
    kv: Optional[str] = KV,
) -> None:
    """Assemble the team the governor would send to a blocker."""

    async def action(governor: Any) -> list[str]:
        return await governor.request_help_for_blocker(blocked, {"required_capabilities": _caps(capabilities)})

    team = _with_governor(kv, action)
    console.print(f"team: {', '.join(team)}" if team else "[yellow]no qualified team: escalated[/yellow]")


@app.command()
def budgets(kv: Optional[str] = KV) -> None:
    """Budgets, spending and breakers of every swarm."""

    async def action(governor: Any) -> list[tuple[str, ...]]:
        rows = []
        for swarm_id in sorted(governor.swarm_registry):
            breaker = governor.circuit_breaker_status(swarm_id)
            rows.append((swarm_id, str(governor.budget_remaining(swarm_id)), str(governor.budget_spent(swarm_id)),
                         f"{governor.reputation(swarm_id):.2f}", breaker["state"], breaker["reason"] or ""))
        return rows

    table = Table("swarm", "remaining", "spent", "reputation", "breaker", "reason", title="budgets")
    for row in _with_governor(kv, action):
        table.add_row(*row)
    console.print(table)


CredentialOpt = typer.Option(..., "--credential", help="Your operator credential file (coordinator issue-credential "
                             "--role operator); the action is audited under its name")
AuthorityOpt = typer.Option(..., "--authority-key", help="The credential authority's public key (PEM)")


async def _operator(credential: Path, authority_key: Path, store: Any) -> Any:
    """The operator identity a credential proves (signature, expiry and revocations checked)."""
    from infrafabric.coordinator.credentials import CredentialVerifier, load_public_key, read_credential

    return await CredentialVerifier(load_public_key(authority_key), store).verify(read_credential(credential),
                                                                                   role="operator")


@app.command("reset-breaker")
def reset_breaker(
    swarm_id: str,
    credential: Path = CredentialOpt,
    authority_key: Path = AuthorityOpt,
    budget: Optional[float] = typer.Option(None, help="A fresh budget"),
    reason: str = typer.Option(""),
    kv: Optional[str] = KV,
) -> None:
    """Close a swarm's circuit breaker (an audited operator action)."""
    who: list[Any] = []

    async def action(governor: Any) -> None:
        who.append(await _operator(credential, authority_key, governor.kv))
        governor.reset_circuit_breaker(swarm_id, operator=who[0], new_budget=budget, reason=reason)

    _with_governor(kv, action)
    console.print(f"breaker of {swarm_id} reset by {who[0]}")


@app.command("set-budget")
def set_budget(
    swarm_id: str,
    amount: float,
    credential: Path = CredentialOpt,
    authority_key: Path = AuthorityOpt,
    kv: Optional[str] = KV,
) -> None:
    """Give a swarm a new budget (an audited operator action)."""

    async def action(governor: Any) -> None:
        governor.set_budget(swarm_id, amount, operator=await _operator(credential, authority_key,
                                                                       governor.kv))

    _with_governor(kv, action)
    console.print(f"budget of {swarm_id} set to {amount}")
