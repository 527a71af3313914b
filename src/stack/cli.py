"""``ifstack up | down | status``: bring the platform up as services on real engines, watch it, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from backends.servers.base import pid_exists
from backends.servers.ports import port_is_free

app = typer.Typer(help="The platform as running services (see docs/OPERATIONS.md).", no_args_is_help=True)
console = Console()
STATE = typer.Option(Path(".stack"), "--state", help="State directory (engines' data, keys, logs, ports)")


def _status(state: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state / "status.json").read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _supervisor_pid(state: Path) -> int | None:
    try:
        pid = int((state / "supervisor.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_exists(pid) else None


def _print(status: dict[str, Any]) -> None:
    table = Table(title=f"stack {status['phase']}")
    for col in ("service", "url", "pid", "health", "restarts"):
        table.add_column(col)
    for proc in status["engines"]["processes"]:
        table.add_row(f"[dim]engine[/dim] {proc['name']}", proc["url"], str(proc["pid"] or "-"), "ready", "")
    if status.get("prometheus"):
        table.add_row("[dim]engine[/dim] prometheus", status["prometheus"], "", "ready", "")
    for s in status["services"]:
        health = "[green]healthy[/green]" if s["healthy"] else "[red]unhealthy[/red]"
        table.add_row(s["name"], s["url"] or "-", str(s["pid"] or "-"), health, str(s["restarts"]))
    console.print(table)
    if status.get("error"):
        console.print(f"[red]{status['error']}[/red]")


@app.command()
def up(state: Path = STATE,
       topology: Optional[Path] = typer.Option(None, help="Topology TOML (default deploy/topology.toml)"),
       only: list[str] = typer.Option([], "--only", help="Start only this service here (repeatable)"),
       timeout: float = typer.Option(300.0, help="Seconds to wait for every service to be healthy")) -> None:
    """Start the engines and every service (or resume them from STATE); exit 0 once all are healthy."""
    state = state.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if _supervisor_pid(state) is not None:
        status = _status(state)
        if status is not None:
            _print(status)
        console.print(f"already up (supervisor pid {_supervisor_pid(state)})")
        return
    from stack.reaper import reap

    left = reap(state)  # a previous supervisor killed outright: its services still hold the ports
    if left:
        console.print(f"stopped {len(left)} process(es) a dead supervisor left behind")
    (state / "status.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "stack.supervisor", "--state", str(state)]
    if topology is not None:
        argv += ["--topology", str(topology.resolve())]
    if only:
        argv += ["--only", *only]
    with open(state / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603
                                start_new_session=True, cwd=str(state))
    deadline = time.monotonic() + timeout
    while True:
        status = _status(state)
        if status is not None and status["phase"] == "running" and all(s["healthy"] for s in status["services"]):
            _print(status)
            console.print(f"[green]stack up[/green]: state {state}, supervisor pid {proc.pid}")
            return
        if proc.poll() is not None or (status is not None and status["phase"] == "failed"):
            if status is not None:
                _print(status)
            tail = (state / "supervisor.log").read_text(errors="replace").splitlines()[-30:]
            console.print("[red]stack failed to start[/red]\n" + "\n".join(tail))
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            console.print(f"[red]not healthy after {timeout:.0f} s[/red]; stopping")
            os.kill(proc.pid, signal.SIGTERM)
            raise typer.Exit(1)
        time.sleep(0.2)


@app.command()
def down(state: Path = STATE, timeout: float = typer.Option(120.0)) -> None:
    """Stop every service and engine this state directory's supervisor started; check no port stays bound."""
    from stack.reaper import reap

    state = state.resolve()
    pid = _supervisor_pid(state)
    if pid is None:
        left = reap(state)  # a supervisor killed outright leaves its services and engines running
        console.print(f"no supervisor; stopped {len(left)} process(es) it left behind" if left else "not running")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_exists(pid):
            if time.monotonic() > deadline:
                console.print(f"[red]supervisor {pid} did not stop in {timeout:.0f} s; killing it[/red]")
                os.killpg(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        reap(state)  # anything it could not stop
    ports = json.loads((state / "ports.json").read_text()) if (state / "ports.json").exists() else {}
    busy = sorted(f"{k}={p}" for k, p in ports.items() if not port_is_free(p))
    if busy:
        console.print(f"[red]ports still bound after down: {', '.join(busy)}[/red]")
        raise typer.Exit(1)
    console.print("[green]stack down[/green]: no process left, no port bound")


@app.command()
def status(state: Path = STATE) -> None:
    """What runs where, with health and restarts."""
    current = _status(state.resolve())
    if current is None or _supervisor_pid(state.resolve()) is None:
        console.print("not running")
        raise typer.Exit(3)
    _print(current)


@app.command()
def scenario(state: Path = STATE, tasks_per_swarm: int = typer.Option(3, min=1, max=100)) -> None:
    """Run the seed's phase-0 scenario and one node's paid payout against the running stack."""
    import asyncio

    from stack.scenario import run_payout, run_phase0
    from stack.state import StackState

    if _supervisor_pid(state.resolve()) is None:
        console.print("not running: ifstack up first")
        raise typer.Exit(3)
    st = StackState(state)
    phase0 = asyncio.run(run_phase0(st, tasks_per_swarm=tasks_per_swarm))
    console.print(f"phase 0: {len(phase0.completed)}/{len(phase0.tasks)} tasks completed by "
                  f"{len(set(phase0.completed.values()))} swarms in {phase0.seconds:.2f} s; blocker "
                  f"{phase0.blocker_id}: team {', '.join(phase0.team) or '-'} "
                  f"({len(phase0.help_completed)}/{len(phase0.team)} help tasks done)")
    payout = asyncio.run(run_payout(st))
    paid = [p for p in payout.payouts if p["status"] == "completed"]
    console.print(f"payout: node {payout.node_id} batch {payout.batch.get('status')}, "
                  f"{len(paid)} paid (tx {paid[0]['transaction_hash'][:16] if paid else '-'}...)")
    ok = len(phase0.completed) == len(phase0.tasks) and phase0.team and \
        len(phase0.help_completed) == len(phase0.team) and paid
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
