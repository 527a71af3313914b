"""Run the discovery API: ``python -m lucid.service_mesh.api --kv URL --jwks FILE --port N``.

The JWK set file holds the public keys of the token issuer; the server never needs a private key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import uvicorn
from backends.kv import open_kv

from lucid.service_mesh.api.app import MeshRateLimits, create_app
from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider


async def main(kv_url: str, jwks_path: str, host: str, port: int, limits: MeshRateLimits,
               metrics_listen: str | None = None) -> None:
    kv = open_kv(kv_url)
    await kv.connect()
    registry = AsyncServiceRegistry(kv)
    discovery = AsyncServiceDiscoveryClient(kv)
    await discovery.start()
    verifier = ServiceAuthProvider.verifier_from_jwks(json.loads(Path(jwks_path).read_text()))
    app = create_app(registry, discovery, verifier, limits)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    endpoint = None
    if metrics_listen:
        from prometheus_client import CollectorRegistry

        from backends.metrics import serve_metrics
        from lucid.service_mesh.discovery.metrics import RegistryCollector

        registry_metrics = CollectorRegistry()
        registry_metrics.register(RegistryCollector(discovery.cache))
        endpoint = serve_metrics(registry_metrics, metrics_listen)
    try:
        await server.serve()
    finally:
        if endpoint is not None:
            endpoint.close()
        await discovery.close()
        await kv.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kv", default="memory://lucid-mesh")
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--rate-per-service", type=int, default=MeshRateLimits.per_service,
                        help="requests a minute per service identity (429 beyond)")
    parser.add_argument("--auth-failures-per-ip", type=int, default=MeshRateLimits.auth_failures_per_ip,
                        help="failed authentications a minute per client address")
    parser.add_argument("--metrics-listen", help="HOST:PORT serving /metrics (registry health by plane)")
    args = parser.parse_args()
    try:
        limits = MeshRateLimits(args.rate_per_service, args.auth_failures_per_ip)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(main(args.kv, args.jwks, args.host, args.port, limits, args.metrics_listen))
