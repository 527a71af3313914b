"""`infrafabric gateway`: the metering gateway for model calls."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from backends.serving import AsgiServer, until_signalled
from infrafabric.cli.runloop import run_service
from infrafabric.cli.state import default_kv_url

app = typer.Typer(help="IF.gateway: OpenAI/Anthropic-compatible model calls, reserved and settled against budgets",
                  no_args_is_help=True)
console = Console()


@app.command()
def serve(
    config: Path = typer.Option(..., help="Gateway TOML: prices, providers (keys from env or file), swarm policy"),
    authority_key: Path = typer.Option(..., help="The credential authority's public key: swarms' keys are checked"),
    kv: Optional[str] = typer.Option(None, "--kv", help="Ledger store URL (etcd://host:port, sqlite:///file)"),
    listen: str = typer.Option("127.0.0.1:8090", help="HOST:PORT to serve on"),
    upstream_timeout: float = typer.Option(60.0, help="Seconds to wait for a provider"),
    lease_ttl: int = typer.Option(10, help="Seconds this replica's holds outlive it if it dies"),
    tls_cert: Optional[Path] = typer.Option(None, help="Server certificate (HTTPS)"),
    tls_key: Optional[Path] = typer.Option(None, help="Its private key"),
    metrics_listen: Optional[str] = typer.Option(None, "--metrics-listen", help="HOST:PORT serving /metrics"),
) -> None:
    """Serve /v1/chat/completions, /v1/embeddings, /v1/models and /v1/messages, metered."""
    from backends.kv import open_kv
    from infrafabric.audit import log_operation
    from infrafabric.coordinator.credentials import CredentialVerifier, load_public_key
    from infrafabric.errors import InfraFabricError
    from infrafabric.gateway.app import MeteringGateway, create_app
    from infrafabric.gateway.config import GatewayConfig
    from infrafabric.seed_wiring import track_cost_with_optimise

    try:
        settings = GatewayConfig.load(config)
    except InfraFabricError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    host, _, port = listen.rpartition(":")

    async def run() -> None:
        from prometheus_client import CollectorRegistry

        from backends.metrics import serve_metrics
        from infrafabric.gateway.metrics import GatewayMetrics
        from infrafabric.witness.default import current_default_witness
        from infrafabric.witness.metrics import WitnessCollector

        registry = CollectorRegistry()
        registry.register(WitnessCollector(current_default_witness))
        metrics = GatewayMetrics(registry)
        async with open_kv(kv or default_kv_url()) as store:
            gateway = await MeteringGateway(settings, store, CredentialVerifier(load_public_key(authority_key), store),
                                            audit=metrics.wrap(log_operation), cost_sink=track_cost_with_optimise,
                                            upstream_timeout=upstream_timeout, lease_ttl=lease_ttl).start()
            server = await AsgiServer(create_app(gateway), host or "127.0.0.1", int(port),
                                      ssl_certfile=str(tls_cert) if tls_cert else None,
                                      ssl_keyfile=str(tls_key) if tls_key else None).start()
            console.print(f"gateway serving on {'https' if tls_cert else 'http'}://{host or '127.0.0.1'}:{port} "
                          f"(rates {settings.rates.version}, replica {gateway.replica_id})", highlight=False)
            endpoint = serve_metrics(registry, metrics_listen) if metrics_listen else None
            await until_signalled()
            if endpoint is not None:
                endpoint.close()
            await server.stop()
            await gateway.close()

    run_service(run())
