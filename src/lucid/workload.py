"""A runnable mesh workload (the wiring of mesh and node parts into one service process, so it lives above
both): registers itself, heartbeats, serves over mTLS + JWT, calls others with breakers.

``python -m lucid.workload --kv URL --name api-gateway --cluster api-gateway --plane ops
(--cert FILE --key FILE --trust-dir DIR | --ca-dir DIR) --jwt-key FILE [--jwks FILE] [--app echo|api-gateway|tron-payment] [--metrics-listen H:P]``
prints ``READY <port> <service_id>`` once it is registered. Routes of every app: ``GET /local`` (no
dependency), ``GET /call/<service>`` (resolve and call that service's /local through the breaker),
``GET /breakers``. A dependency that fails is answered with 424 (Failed Dependency), not 5xx, so callers'
breakers for *this* service stay closed (no cascade).

Apps: ``api-gateway`` also forwards ``/payments/*`` to tron-payment (the only way into the wallet plane)
and queues an anchor of each new transfer for blockchain-core (``--mq-url``); ``tron-payment`` serves
``/payments/*`` with the TRON client it alone holds (``--ledger-url``, tag key ``--tag-key-file``);
``blockchain-core`` (chain plane) consumes the anchors and serves ``GET /anchors[/<txid>]``. With ``--metrics-listen`` the workload's metrics are served over mTLS (a client
certificate from the mesh CA is required, as for every other call).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from backends.kv import open_kv
from backends.metrics import MetricsTLS, serve_metrics
from backends.serving import until_signalled
from lucid.service_mesh.audit import AuditSink
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
from lucid.service_mesh.resilience.published import BreakerPublisher
from lucid.service_mesh.security.auth_provider import ServiceAuthProvider
from lucid.service_mesh.security.cert_manager import CertificateManager

log = logging.getLogger("lucid.workload")


class WorkloadMetrics:
    """Requests served and refused, by the mesh's own audit events (handshake, JWT, policy)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("lucid_mesh_requests_total", "Requests this workload answered, by status class",
                                ["status"], registry=registry)
        self.denials = Counter("lucid_mesh_denials_total", "Calls refused by the mesh (mTLS, JWT, plane policy)",
                               ["operation", "code"], registry=registry)
        self.payouts = Counter("lucid_mesh_payment_broadcasts_total", "Payment broadcasts by outcome",
                               ["outcome"], registry=registry)
        for operation, code in (("mesh.call_denied", "LUCID_ERR_1203"),
                                ("mesh.handshake_refused", "LUCID_ERR_1204")):  # known series exist at 0
            self.denials.labels(operation, code)
        for outcome in ("success", "failed", "duplicate", "refused"):
            self.payouts.labels(outcome)
        self.anchor_failures = Counter("lucid_mesh_anchor_failures_total", "Anchors api-gateway could not queue",
                                       registry=registry)


class CountingAudit(AuditSink):
    """The mesh's audit sink: counts each denial, then hands it to the audit log (IF.witness)."""

    def __init__(self, metrics: WorkloadMetrics, inner: AuditSink | None) -> None:
        self.metrics, self.inner = metrics, inner

    def log(self, component: str, operation: str, params: dict[str, Any] | None = None,
            severity: str = "INFO", trace_id: str | None = None) -> None:
        self.metrics.denials.labels(operation, str((params or {}).get("error_code", ""))).inc()
        if self.inner is not None:
            self.inner.log(component, operation, params, severity, trace_id)


async def run(args: argparse.Namespace) -> None:
    certificate = None
    if args.cert:  # issued by the operator's CA; this process holds no CA key
        certs = CertificateManager.trust_only(Path(args.trust_dir) / "ca.crt")
        certificate = (args.cert, args.key)
    else:  # a development mesh: the workload issues its own certificate from the CA directory
        ca = Path(args.ca_dir)
        certs = CertificateManager(str(ca / "ca.crt"), str(ca / "ca.key"), str(ca / "certs"))
    auth = ServiceAuthProvider(private_key_path=args.jwt_key)
    verifier = None
    if args.jwks:
        import json

        verifier = ServiceAuthProvider.verifier_from_jwks(json.loads(Path(args.jwks).read_text()))
    registry_metrics = CollectorRegistry()
    metrics = WorkloadMetrics(registry_metrics)
    witness = None
    if args.witness:
        from infrafabric.witness.default import get_default_witness

        from infrafabric.witness.metrics import WitnessCollector

        witness = get_default_witness()  # configured by INFRAFABRIC_WITNESS_URL / _KEY_DIR
        registry_metrics.register(WitnessCollector(lambda: witness))
    kv = open_kv(args.kv)
    await kv.connect()
    registry = AsyncServiceRegistry(kv, prefix=args.prefix)
    discovery = AsyncServiceDiscoveryClient(kv, prefix=args.prefix)
    await discovery.start()
    breakers = BreakerRegistry(failure_threshold=args.breaker_threshold, recovery_timeout=args.recovery_timeout,
                               failure_exceptions=(UpstreamCallError,))
    holder: dict[str, MeshService] = {}
    app_handler = None
    tron = None
    mq = None
    anchor_store = None
    background: list[asyncio.Task[None]] = []
    if args.mq_url:
        from lucid.service_mesh.communication import AsyncMessageQueueClient
        from lucid.service_mesh.communication.metrics import MQCollector

        password = Path(args.mq_password_file).read_text().strip() if args.mq_password_file else None
        mq = AsyncMessageQueueClient(with_password(args.mq_url, password), audit=witness,
                                     outbox=args.mq_outbox)
        await mq.connect()
        mq_metrics = MQCollector(mq)
        registry_metrics.register(mq_metrics)
    if args.app == "blockchain-core":
        from lucid.node.anchors import AnchorStore, anchors_handler, consume_anchors

        anchor_store = AnchorStore(args.anchors_db)
        await anchor_store.open()
        app_handler = anchors_handler(anchor_store)
        if mq is None:
            raise SystemExit("--app blockchain-core needs --mq-url")
        background.append(asyncio.create_task(consume_anchors(mq, anchor_store, on_depth=mq_metrics.refresh_depth)))
    if args.app == "tron-payment":
        from lucid.node.tron.local_ledger import LocalLedgerTronClient
        from lucid.node.tron.mesh import payment_handler

        tron = LocalLedgerTronClient(args.ledger_url)
        await tron.initialize()
        app_handler = payment_handler(tron, Path(args.tag_key_file).read_bytes(),
                                      on_result=lambda outcome: metrics.payouts.labels(outcome).inc())

    async def call_service(target: str, method: str, path: str, body: Any = None) -> MeshResponse:
        me = holder["svc"]
        try:
            ep = await discovery.resolve_service(target)
            reply = await me.call((target, ep["endpoint"]["host"], ep["endpoint"]["port"]), method, path, body)
            return MeshResponse(reply.status_code, reply.json())
        except (CircuitBreakerOpenError, ServiceNotFoundError) as exc:
            return MeshResponse(424, error_envelope(exc))
        except LucidMeshError as exc:  # a denial by the callee's policy is a failed dependency for our caller
            return MeshResponse(424, error_envelope(exc))

    async def anchor(request_body: Any, reply_body: Any) -> None:
        """Queue an anchor per new transfer for blockchain-core (through the outbox: never lost, and the
        payout never waits for the chain). A failure is counted and logged, the payout stands."""
        from lucid.node.anchors import DESTINATION, anchor_payloads

        try:
            payloads = anchor_payloads(request_body.get("prepared", []), reply_body.get("results", []))
            for payload in payloads:
                await mq.send_message(args.name, DESTINATION, payload, priority="high")  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the transfer happened; its anchor is bookkeeping
            metrics.anchor_failures.inc()
            log.exception("could not queue anchors")

    async def handler(req: MeshRequest) -> MeshResponse:
        response = await dispatch(req)
        metrics.requests.labels(f"{response.status // 100}xx").inc()
        return response

    async def dispatch(req: MeshRequest) -> MeshResponse:
        me = holder["svc"]
        if req.path == "/local":
            return MeshResponse(200, {"service": args.name, "pid": os.getpid(), "serviceId": me.service_id})
        if req.path == "/breakers":
            return MeshResponse(200, breakers.states())
        if req.path.startswith("/call/"):
            reply = await call_service(req.path[len("/call/"):], "GET", "/local")
            return MeshResponse(200, {"via": args.name, "reply": reply.body}) if reply.status == 200 else reply
        if args.app == "api-gateway" and req.path.startswith("/payments/"):
            try:
                body = req.json() if req.body else None
            except ValueError:
                return MeshResponse(400, {"error": {"code": "LUCID_ERR_1001", "message": "body is not JSON"}})
            reply = await call_service("tron-payment", req.method, req.path, body)
            if mq is not None and req.path == "/payments/broadcast" and reply.status == 200:
                await anchor(body, reply.body)
            return reply
        if app_handler is not None:
            return await app_handler(req)
        return MeshResponse(404, {"error": {"code": "LUCID_ERR_1002", "message": "no such route"}})

    svc = MeshService(args.name, args.cluster, args.plane, certs, auth, handler, breakers=breakers,
                      call_timeout=args.call_timeout, audit=CountingAudit(metrics, witness), verifier=verifier,
                      certificate=certificate)
    holder["svc"] = svc
    port = await svc.start(port=args.port, host=args.host)
    sid = await registry.register_service(
        args.name, args.cluster, args.plane, args.advertise or args.host, port, args.version, None,
        service_id=svc.service_id, ttl=args.ttl, deregister_critical_after=args.deregister_after,
    )
    beat = TTLHeartbeat(registry, sid, interval=max(args.ttl / 4, 0.1)).start()
    published = BreakerPublisher(kv, breakers, service=args.name, service_id=sid, prefix=args.prefix).start()
    endpoint = None
    if args.metrics_listen:
        endpoint = serve_metrics(registry_metrics, args.metrics_listen,
                                 MetricsTLS(Path(svc.cert_path), Path(svc.key_path), certs.ca_cert_path))
    print(f"READY {port} {sid}", flush=True)
    await until_signalled()
    if endpoint is not None:
        endpoint.close()
    await beat.stop()
    await published.stop()
    await registry.deregister_service(sid)  # graceful exit leaves at once; a kill leaves by TTL
    await svc.close()
    for task in background:
        task.cancel()
    if tron is not None:
        await tron.close()
    if mq is not None:
        await mq.close()
    if anchor_store is not None:
        await anchor_store.close()
    if witness is not None:
        await witness.aclose()
    await discovery.close()
    await kv.close()


def with_password(url: str, password: str | None) -> str:
    """The queue URL with the password read from its file (built in process: never in argv or a log)."""
    if password is None or "@" not in url:
        return url
    from urllib.parse import quote

    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':', 1)[0]}:{quote(password, safe='')}@{host}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kv", required=True)
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--name", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--plane", required=True)
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--ca-dir", help="CA directory (with its key): the workload issues its own certificate")
    p.add_argument("--cert", help="this workload's certificate, issued by the mesh CA (with --key, --trust-dir)")
    p.add_argument("--key", help="its private key")
    p.add_argument("--trust-dir", help="the mesh CA's public certificates (ca.crt, ca-intermediate.crt)")
    p.add_argument("--jwt-key", required=True)
    p.add_argument("--jwks", help="JWK set of every service's token key (callers' tokens are checked with it)")
    p.add_argument("--app", choices=("echo", "api-gateway", "tron-payment", "blockchain-core"), default="echo")
    p.add_argument("--mq-url", help="message queue URL without a password (amqp://account@host:port/)")
    p.add_argument("--mq-password-file", help="the queue account's password (never in argv)")
    p.add_argument("--mq-outbox", help="outbox file: messages wait there while the broker is away")
    p.add_argument("--anchors-db", help="blockchain-core: the anchors' SQLite file")
    p.add_argument("--ledger-url", help="tron-payment: the local TRON ledger's database URL")
    p.add_argument("--tag-key-file", help="tron-payment: key binding prepared transfers (kept secret)")
    p.add_argument("--metrics-listen", help="HOST:PORT serving /metrics over mTLS")
    p.add_argument("--witness", action="store_true", help="audit denials to IF.witness (its environment config)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--advertise", help="address registered in discovery (default: --host)")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttl", type=float, default=2.0)
    p.add_argument("--deregister-after", type=float, default=2.0)
    p.add_argument("--breaker-threshold", type=int, default=3)
    p.add_argument("--recovery-timeout", type=float, default=30.0)
    p.add_argument("--call-timeout", type=float, default=2.0)
    args = p.parse_args()
    if not args.ca_dir and not (args.cert and args.key and args.trust_dir):
        p.error("give --cert, --key and --trust-dir (or --ca-dir for a development mesh)")
    if args.app == "tron-payment" and not args.tag_key_file:
        p.error("--app tron-payment needs --tag-key-file")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
