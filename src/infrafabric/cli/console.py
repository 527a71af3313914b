"""`infrafabric console embedded | serve`: the operator console, on the embedded platform or on a stack."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

app = typer.Typer(help="The operator console: one web UI of the live platform.", no_args_is_help=True)
console = Console()


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise typer.BadParameter(f"--listen takes HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


async def _serve(console_app: Any, listen: str, ready: Any = None, duration: Optional[float] = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handlers) or ``duration`` seconds."""
    import uvicorn

    host, port = _split(listen)
    server = uvicorn.Server(uvicorn.Config(console_app, host=host, port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            return
        await asyncio.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    if ready is not None:
        ready(f"http://{host}:{bound}")
    if duration is not None:
        loop = asyncio.get_running_loop()
        loop.call_later(duration, lambda: setattr(server, "should_exit", True))
    await task


@app.command()
def embedded(
    state: Path = typer.Option(Path(os.environ.get("INFRAFABRIC_HOME", Path.home() / ".infrafabric")) / "console",
                               help="Where the embedded platform keeps its state (resumed when it exists)"),
    listen: str = typer.Option("127.0.0.1:8090", help="HOST:PORT of the console"),
    swarm_api: str = typer.Option("127.0.0.1:0", help="HOST:PORT of the swarm API for swarms in other processes"),
    seed: bool = typer.Option(True, help="Fill a new platform with the S2 phase-0 story"),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds (demos, tests)"),
) -> None:
    """The whole platform in this process (no server needed) and its console."""
    from infrafabric.cli.runloop import run_service
    from infrafabric.console import create_console_app
    from infrafabric.console.embedded import embedded_platform, seed_demo, write_login_credentials

    async def main() -> None:
        async with embedded_platform(state, swarm_api=swarm_api) as e:
            if seed:
                summary = await seed_demo(e)
                console.print(f"seeded: {summary}")
            creds = write_login_credentials(e, state)
            (state / "swarm-api.url").write_text(e.swarm_api_url)

            def ready(url: str) -> None:
                console.print(f"[green]console[/green] on {url}  (swarm API on {e.swarm_api_url})")
                console.print(f"log in with the credential in {creds['operator']} (operator) "
                              f"or {creds['viewer']} (viewer)")
                (state / "console.url").write_text(url)

            await _serve(create_console_app(e.platform), listen, ready, duration)

    run_service(main())


@app.command()
def serve(
    kv: str = typer.Option(..., "--kv", help="The coordination store (etcd://...)"),
    authority_key: Path = typer.Option(..., help="The credential authority's public key (PEM)"),
    listen: str = typer.Option("127.0.0.1:8090", help="HOST:PORT of the console"),
    mesh_kv: Optional[str] = typer.Option(None, help="The service registry's store"),
    mq_url: Optional[str] = typer.Option(None, help="The message queue (amqp://user@host:port)"),
    mq_password_file: Optional[Path] = typer.Option(None, help="File holding the message queue password"),
    mq_destination: list[str] = typer.Option([], help="A destination whose queue depth to show (repeatable)"),
    node_api: Optional[str] = typer.Option(None, help="The node-management API's base URL"),
    node_api_token_file: Optional[Path] = typer.Option(None, help="File holding an admin token for the node API"),
    name: str = typer.Option("stack", help="The deployment's name, shown in the header"),
    secure_cookies: bool = typer.Option(False, help="Mark the session cookie Secure (behind HTTPS)"),
) -> None:
    """The console of a deployment whose engines are named by URL (the stack runs this). The audit log is
    the configured witness (INFRAFABRIC_WITNESS_URL and its key directory)."""
    from infrafabric.cli.runloop import run_service
    from infrafabric.console import create_console_app
    from infrafabric.console.platform import open_platform
    from infrafabric.witness import Witness, default_key_dir, default_url

    from lucid.workload import with_password

    token = node_api_token_file.read_text().strip() if node_api_token_file else None
    if mq_url and mq_password_file:  # built in process: the password is never in argv or a log
        mq_url = with_password(mq_url, mq_password_file.read_text().strip())

    async def main() -> None:
        witness = Witness(default_url(), default_key_dir(), create_key=False)
        try:
            async with open_platform(kv_url=kv, authority_key=str(authority_key), witness=witness,
                                     mesh_kv_url=mesh_kv, mq_url=mq_url, mq_destinations=tuple(mq_destination),
                                     node_api_url=node_api, node_api_token=token, name=name) as platform:
                await _serve(create_console_app(platform, secure_cookies=secure_cookies), listen,
                             lambda url: console.print(f"[green]console serving[/green] on {url}"))
        finally:
            await witness.aclose()

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    run_service(main())
