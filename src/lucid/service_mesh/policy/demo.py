"""Lucid mesh demo: ``python -m lucid.service_mesh.policy.demo [--kv URL]``.

Registers the Lucid services with certificates, makes an allowed call, two denied cross-plane calls, and
shows a circuit breaker opening when a dependency goes down and closing when it comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from backends.kv import open_kv
from rich.console import Console
from rich.table import Table

from lucid.service_mesh.discovery import AsyncServiceDiscoveryClient, AsyncServiceRegistry
from lucid.service_mesh.errors import CircuitBreakerOpenError, LucidMeshError, UpstreamCallError
from lucid.service_mesh.planes import CLUSTER_PLANE
from lucid.service_mesh.policy.service import MeshService
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager

SERVICES = ["api-gateway", "node-management", "session-management", "blockchain-core", "tron-payment"]


async def demo(kv_url: str, workdir: Path, console: Console, recovery_timeout: float = 1.0) -> dict[str, Any]:
    certs = CertificateManager(str(workdir / "ca.crt"), str(workdir / "ca.key"), str(workdir / "certs"))
    auth = ServiceAuthProvider()
    kv = open_kv(kv_url)
    await kv.connect()
    registry = AsyncServiceRegistry(kv)
    discovery = AsyncServiceDiscoveryClient(kv)
    await discovery.start()
    breakers = BreakerRegistry(failure_threshold=3, recovery_timeout=recovery_timeout, success_threshold=1,
                               failure_exceptions=(UpstreamCallError,))
    mesh = {n: MeshService(n, n, CLUSTER_PLANE[n], certs, auth, breakers=breakers if n == "api-gateway" else None,
                           call_timeout=1.0) for n in SERVICES}
    outcome: dict[str, Any] = {"calls": []}
    try:
        table = Table(title="Registered Lucid services (certificate identity)")
        for col in ("service", "plane", "port", "SPIFFE id"):
            table.add_column(col)
        for name, svc in mesh.items():
            port = await svc.start()
            await registry.register_service(name, name, svc.identity.plane, "127.0.0.1", port, "1.0.0", None,
                                            service_id=svc.service_id)
            table.add_row(name, svc.identity.plane, str(port), svc.identity.spiffe_id)
        console.print(table)
        await discovery.wait_for(lambda d: len(d.cache.service_names()) == len(SERVICES))

        async def call(src: str, dst: str, method: str, path: str) -> str:
            ep = await discovery.resolve_service(dst)
            target = (dst, ep["endpoint"]["host"], ep["endpoint"]["port"])
            try:
                reply = await mesh[src].call(target, method, path)
                result = f"allowed ({reply.status_code})"
            except CircuitBreakerOpenError as exc:
                result = f"breaker open [{exc.error_code}]"
            except UpstreamCallError as exc:
                result = f"failed [{exc.error_code}] unreachable"
            except LucidMeshError as exc:
                result = f"denied [{exc.error_code}] {exc.message.split(': ')[-1]}"
            outcome["calls"].append((src, dst, method, result))
            console.print(f"  {src} -> {dst} {method} {path}: [bold]{result}[/bold]")
            return result

        console.rule("plane policy on live mTLS + JWT calls")
        await call("api-gateway", "blockchain-core", "GET", "/api/v1/blocks/1")
        await call("api-gateway", "blockchain-core", "POST", "/api/v1/blocks")
        await call("tron-payment", "blockchain-core", "GET", "/api/v1/blocks/1")
        await call("node-management", "tron-payment", "POST", "/api/v1/payments")
        await call("api-gateway", "tron-payment", "POST", "/api/v1/payments")

        console.rule("circuit breaker: session-management goes down, then comes back")
        down = mesh["session-management"]
        port = down.port
        await down.server.close()
        states = []
        for _ in range(5):
            await call("api-gateway", "session-management", "GET", "/api/v1/sessions")
            states.append(breakers.get("session-management").state)
        console.print(f"  breaker states: {states}")
        await down.server.start(port=port)
        await asyncio.sleep(recovery_timeout)  # the breaker's recovery timeout, in real time
        await call("api-gateway", "session-management", "GET", "/api/v1/sessions")
        states.append(breakers.get("session-management").state)
        console.print(f"  after recovery: {states[-1]}")
        outcome["breaker_states"] = states
    finally:
        for svc in mesh.values():
            await svc.close()
        await discovery.close()
        await kv.close()
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kv", default="memory://lucid-demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lucid-demo-") as tmp:
        asyncio.run(demo(args.kv, Path(tmp), Console()))


if __name__ == "__main__":
    main()
