"""A runnable mesh workload: registers itself, heartbeats, serves over mTLS + JWT, calls others with breakers.

``python -m lucid.service_mesh.policy.workload --kv URL --name api-gateway --cluster api-gateway --plane ops
--ca-dir DIR --jwt-key FILE [--ttl 2] [--breaker-threshold 3]`` prints ``READY <port> <service_id>`` once
it is registered. Routes: ``GET /local`` (no dependency), ``GET /call/<service>`` (resolve and call that
service's /local through the breaker), ``GET /breakers``. A dependency that fails is answered with 424
(Failed Dependency), not 5xx, so callers' breakers for *this* service stay closed (no cascade).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from backends.kv import open_kv

from lucid.service_mesh.discovery.discovery_core import AsyncServiceDiscoveryClient
from lucid.service_mesh.discovery.health import TTLHeartbeat
from lucid.service_mesh.discovery.keys import DEFAULT_PREFIX
from lucid.service_mesh.discovery.registry_core import AsyncServiceRegistry
from lucid.service_mesh.errors import (
    CircuitBreakerOpenError,
    LucidMeshError,
    ServiceNotFoundError,
    UpstreamCallError,
)
from lucid.service_mesh.policy.mesh_server import MeshRequest, MeshResponse, error_envelope
from lucid.service_mesh.policy.service import MeshService
from lucid.service_mesh.resilience.circuit_breaker import BreakerRegistry
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager

log = logging.getLogger("lucid.workload")


async def run(args: argparse.Namespace) -> None:
    ca = Path(args.ca_dir)
    certs = CertificateManager(str(ca / "ca.crt"), str(ca / "ca.key"), str(ca / "certs"))
    auth = ServiceAuthProvider(private_key_path=args.jwt_key)
    kv = open_kv(args.kv)
    await kv.connect()
    registry = AsyncServiceRegistry(kv, prefix=args.prefix)
    discovery = AsyncServiceDiscoveryClient(kv, prefix=args.prefix)
    await discovery.start()
    breakers = BreakerRegistry(failure_threshold=args.breaker_threshold, recovery_timeout=args.recovery_timeout,
                               failure_exceptions=(UpstreamCallError,))
    holder: dict[str, MeshService] = {}

    async def handler(req: MeshRequest) -> MeshResponse:
        me = holder["svc"]
        if req.path == "/local":
            return MeshResponse(200, {"service": args.name, "pid": os.getpid(), "serviceId": me.service_id})
        if req.path == "/breakers":
            return MeshResponse(200, breakers.states())
        if req.path.startswith("/call/"):
            target = req.path[len("/call/"):]
            try:
                ep = await discovery.resolve_service(target)
                reply = await me.call((target, ep["endpoint"]["host"], ep["endpoint"]["port"]), "GET", "/local")
                return MeshResponse(200, {"via": args.name, "reply": reply.json()})
            except (CircuitBreakerOpenError, ServiceNotFoundError) as exc:
                return MeshResponse(424, error_envelope(exc))
            except LucidMeshError as exc:
                return MeshResponse(424, error_envelope(exc))
        return MeshResponse(404, {"error": {"code": "LUCID_ERR_1002", "message": "no such route"}})

    svc = MeshService(args.name, args.cluster, args.plane, certs, auth, handler, breakers=breakers,
                      call_timeout=args.call_timeout)
    holder["svc"] = svc
    port = await svc.start(port=args.port)
    sid = await registry.register_service(
        args.name, args.cluster, args.plane, "127.0.0.1", port, args.version, None,
        service_id=svc.service_id, ttl=args.ttl, deregister_critical_after=args.deregister_after,
    )
    beat = TTLHeartbeat(registry, sid, interval=max(args.ttl / 4, 0.1)).start()
    print(f"READY {port} {sid}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await beat.stop()
    await registry.deregister_service(sid)  # graceful exit leaves at once; a kill leaves by TTL
    await svc.close()
    await discovery.close()
    await kv.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kv", required=True)
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--name", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--plane", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--ca-dir", required=True)
    p.add_argument("--jwt-key", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--deregister-after", type=float, default=2.0)
    p.add_argument("--breaker-threshold", type=int, default=3)
    p.add_argument("--recovery-timeout", type=float, default=30.0)
    p.add_argument("--call-timeout", type=float, default=2.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
