"""``lucid`` command line: serve the node-management API, mint tokens, run the node demo; ``lucid mesh``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import typer
from rich.console import Console

from lucid.service_mesh.cli import app as mesh_app

app = typer.Typer(help="Lucid: node management (REST API on port 8083) and the service mesh.", no_args_is_help=True)
app.add_typer(mesh_app, name="mesh")
console = Console()


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Bind address"),
          port: int = typer.Option(8083, help="Port (the node-management cluster's port)"),
          db_url: str = typer.Option(None, help="Database URL (default LUCID_NODE_DB_URL or ./lucid_node.db)"),
          ledger_url: str = typer.Option(None, help="Local TRON ledger URL (default LUCID_TRON_LEDGER_URL)"),
          log_level: str = typer.Option("info")) -> None:
    """Run the node-management API with uvicorn."""
    import uvicorn

    from lucid.node.api import NodeAPISettings, create_app
    from lucid.node.api.gc_tuning import tuned_collector

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    kwargs = {k: v for k, v in {"db_url": db_url, "ledger_url": ledger_url}.items() if v}
    settings = NodeAPISettings(**kwargs)
    if not settings.jwt_secret and not settings.jwt_public_key:
        console.print("[yellow]LUCID_NODE_JWT_SECRET is not set: a random key is used, so no token will be "
                      "accepted. Set it and mint tokens with `lucid token`.[/yellow]")
    app_ = create_app(settings)
    with tuned_collector():  # this process serves the API and nothing else (see gc_tuning)
        uvicorn.run(app_, host=host, port=port, log_level=log_level)


@app.command()
def token(role: str = typer.Option("admin", help="worker | validator | admin | super_admin"),
          subject: str = typer.Option(None), node_id: str = typer.Option(None),
          ttl: int = typer.Option(3600, help="Lifetime in seconds")) -> None:
    """Mint a bearer token signed with LUCID_NODE_JWT_SECRET (printed to stdout only)."""
    from lucid.node.api.auth import ROLE_PERMISSIONS, mint_token

    secret = os.environ.get("LUCID_NODE_JWT_SECRET")
    if not secret:
        console.print("[red]LUCID_NODE_JWT_SECRET is not set[/red]")
        raise typer.Exit(2)
    if role not in ROLE_PERMISSIONS:
        console.print(f"[red]unknown role {role}[/red]")
        raise typer.Exit(2)
    sys.stdout.write(mint_token(secret, role=role, subject=subject, node_id=node_id, ttl_seconds=ttl) + "\n")


@app.command("demo-nodes")
def demo_nodes(nodes: int = typer.Option(3, min=1, max=50)) -> None:
    """Nodes register, start, submit signed PoOT and receive a payout batch (in process)."""
    from lucid.node.demo import run_demo

    result = asyncio.run(run_demo(nodes=nodes, log=console.print))
    paid = sum(1 for p in result["payouts"] if p["status"] == "completed")
    console.print(f"[green]{paid}/{len(result['nodes'])} nodes paid; batch {result['batch']['status']}[/green]")
    if paid != len(result["nodes"]):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
