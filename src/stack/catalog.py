"""What each service of the stack is: its command line, environment, ports, health probe and scrape job.

Every service is an ordinary command of the project (``infrafabric coordinator serve``, ``lucid serve``,
the mesh workload, the swarm worker), so what the supervisor runs is what an operator would run by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stack.engines import Engines
from stack.identity import StackIdentity, issue_service_certificate, issue_swarm_credential, trust_dir
from stack.state import StackState
from stack.topology import Topology

__all__ = ["Health", "Scrape", "ServiceSpec", "build_catalog"]

PY = sys.executable


@dataclass(frozen=True)
class Health:
    """``http``: GET ``url`` answers 200 (``tls`` = (ca, cert, key) for an mTLS endpoint); ``log``: the
    service wrote ``marker`` to its log since its latest start (a worker has no port)."""

    kind: str
    url: str = ""
    marker: str = ""
    tls: tuple[Path, Path, Path] | None = None


@dataclass(frozen=True)
class Scrape:
    target: str  # host:port
    scheme: str = "http"
    path: str = "/metrics"
    tls: tuple[Path, Path, Path] | None = None  # (ca, client cert, client key)
    server_name: str | None = None
    bearer_file: Path | None = None


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    health: Health
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""
    ports: list[int] = field(default_factory=list)
    scrape: Scrape | None = None
    before_start: Callable[[], None] | None = None


def _admin_token(secret: str) -> str:
    from lucid.node.api.auth import mint_token

    return mint_token(secret, role="admin", subject="console", ttl_seconds=30 * 24 * 3600)


def _mesh_tls(identity: StackIdentity) -> tuple[Path, Path, Path]:
    return identity.trust_root, identity.scrape_cert, identity.scrape_key


def build_catalog(topology: Topology, state: StackState, engines: Engines, identity: StackIdentity,
                  only: list[str] | None = None) -> list[ServiceSpec]:
    h = topology.host
    specs: dict[str, ServiceSpec] = {}

    def port(key: str) -> int:
        conf = topology.services.get(key)
        return state.port(f"service.{key}", conf.port if conf is not None else 0)

    def metrics(key: str) -> int:
        return state.port(f"service.{key}.metrics")

    from infrafabric.coordinator.credentials import PUBLIC_FILE

    authority_pub = state.authority / PUBLIC_FILE
    trust = trust_dir(state)
    service_pki = state.root / "pki" / "services"
    mesh_args = ["--kv", engines.mesh_kv_url, "--trust-dir", str(trust), "--jwks", str(state.jwks)]

    # -- mesh discovery API ----------------------------------------------------------------------------
    p, m = port("discovery"), metrics("discovery")
    specs["discovery"] = ServiceSpec(
        "discovery", [PY, "-m", "lucid.service_mesh.api", "--kv", engines.mesh_kv_url, "--jwks", str(state.jwks),
                      "--host", h, "--port", str(p), "--metrics-listen", f"{h}:{m}"],
        Health("http", f"http://{h}:{m}/metrics"), url=f"http://{h}:{p}", ports=[p, m], scrape=Scrape(f"{h}:{m}"))

    # -- IF.coordinator (swarm API) and IF.governor (blocker responder) -----------------------------------
    p, m = port("coordinator"), metrics("coordinator")
    specs["coordinator"] = ServiceSpec(
        "coordinator", [PY, "-m", "infrafabric.cli.main", "coordinator", "serve", "--kv", engines.kv_url,
                        "--bus", engines.bus_url, "--listen", f"{h}:{p}", "--authority-key", str(authority_pub),
                        "--no-responder", "--metrics-listen", f"{h}:{m}"],
        Health("http", f"http://{h}:{m}/metrics"), url=f"http://{h}:{p}", ports=[p, m], scrape=Scrape(f"{h}:{m}"))
    m = metrics("governor")
    specs["governor"] = ServiceSpec(
        "governor", [PY, "-m", "infrafabric.cli.main", "governor", "serve", "--kv", engines.kv_url,
                     "--bus", engines.bus_url, "--metrics-listen", f"{h}:{m}"],
        Health("http", f"http://{h}:{m}/metrics"), ports=[m], scrape=Scrape(f"{h}:{m}"))

    # -- IF.chassis pool ----------------------------------------------------------------------------------
    p, m = port("chassis-pool"), metrics("chassis-pool")
    specs["chassis-pool"] = ServiceSpec(
        "chassis-pool", [PY, "-m", "infrafabric.cli.main", "chassis", "serve", "--listen", f"{h}:{p}",
                         "--authority-key", str(authority_pub), "--kv", engines.kv_url,
                         "--metrics-listen", f"{h}:{m}", "--price", "0.05"],
        Health("http", f"http://{h}:{m}/metrics"), url=f"http://{h}:{p}", ports=[p, m], scrape=Scrape(f"{h}:{m}"))

    # -- the metered model gateway (when the topology gives it a configuration) ---------------------------
    conf = topology.services.get("model-gateway")
    if conf is not None and conf.enabled and conf.config is not None:
        p, m = port("model-gateway"), metrics("model-gateway")
        specs["model-gateway"] = ServiceSpec(
            "model-gateway", [PY, "-m", "infrafabric.cli.main", "gateway", "serve", "--config", str(conf.config),
                              "--authority-key", str(authority_pub), "--kv", engines.kv_url, "--listen", f"{h}:{p}",
                              "--metrics-listen", f"{h}:{m}"],
            Health("http", f"http://{h}:{m}/metrics"), url=f"http://{h}:{p}", ports=[p, m], scrape=Scrape(f"{h}:{m}"))

    # -- the payment path: tron-payment (wallet plane) behind api-gateway (ops plane) -------------------------
    tls = _mesh_tls(identity)
    def issue(name: str, plane: str) -> Callable[[], None]:
        def before_start() -> None:
            issue_service_certificate(state, name, name, plane)
            if name == "tron-payment":
                state.secret("tron-payment-tag-key")
        return before_start

    def mq(service: str) -> list[str]:
        host = engines.amqp_url.split("://", 1)[1]
        return ["--mq-url", f"amqp://{service}@{host}", "--mq-password-file",
                str(state.secret_file(f"rabbitmq-{service}"))]

    for name, plane, extra in (
        ("blockchain-core", "chain", ["--app", "blockchain-core", "--anchors-db",
                                      str(state.root / "data" / "anchors.db"), *mq("blockchain-core")]),
        ("tron-payment", "wallet", ["--app", "tron-payment", "--ledger-url",
                                    f"sqlite+aiosqlite:///{state.root / 'data' / 'tron-ledger.db'}",
                                    "--tag-key-file", str(state.secret_file("tron-payment-tag-key"))]),
        ("api-gateway", "ops", ["--app", "api-gateway", *mq("api-gateway"), "--mq-outbox",
                                str(state.root / "data" / "api-gateway-outbox.db")]),
    ):
        p, m = port(name), metrics(name)
        specs[name] = ServiceSpec(
            name, [PY, "-m", "lucid.workload", *mesh_args, "--name", name, "--cluster", name,
                   "--cert", str(service_pki / f"{name}.crt"), "--key", str(service_pki / f"{name}.key"),
                   "--host", h,
                   "--plane", plane, "--jwt-key", str(state.jwt_key(name)), "--port", str(p), "--ttl", "2",
                   "--deregister-after", "4", "--recovery-timeout", "3", "--metrics-listen", f"{h}:{m}",
                   "--witness", *extra],
            Health("https", f"https://{h}:{m}/metrics", tls=tls), url=f"mtls://{h}:{p}", ports=[p, m],
            scrape=Scrape(f"{h}:{m}", "https", tls=tls, server_name=f"{name}.lucid.internal"),
            before_start=issue(name, plane))

    # -- node management API (8083): payouts through the mesh -------------------------------------------
    p = port("node-management")
    specs["node-management"] = ServiceSpec(
        "node-management", [PY, "-m", "lucid.cli", "serve", "--host", h, "--port", str(p),
                            "--db-url", engines.node_db_url, "--log-level", "warning"],
        Health("http", f"http://{h}:{p}/health"),
        env={"LUCID_NODE_JWT_SECRET": identity.node_jwt_secret, "LUCID_TRON_CLIENT": "mesh",
             "LUCID_MESH_KV": engines.mesh_kv_url, "LUCID_MESH_ADVERTISE": f"{h}:{p}",
             "LUCID_MESH_TRUST_DIR": str(trust),
             "LUCID_MESH_CERT": str(service_pki / "node-management.crt"),
             "LUCID_MESH_KEY": str(service_pki / "node-management.key"),
             "LUCID_MESH_JWT_KEY": str(state.jwt_key("node-management"))},
        url=f"http://{h}:{p}", ports=[p], scrape=Scrape(f"{h}:{p}", bearer_file=identity.node_metrics_token),
        before_start=issue("node-management", "ops"))

    # -- the operator console: reads the engines, acts through the governor and the node API -------------------
    p = port("console")
    node_token = state.write_secret("console-node-token", _admin_token(identity.node_jwt_secret))
    specs["console"] = ServiceSpec(
        "console", [PY, "-m", "infrafabric.cli.main", "console", "serve", "--kv", engines.kv_url,
                    "--authority-key", str(authority_pub), "--listen", f"{h}:{p}", "--mesh-kv", engines.mesh_kv_url,
                    "--node-api", specs["node-management"].url, "--node-api-token-file", str(node_token),
                    *(mq("console") + [arg for dest in ("blockchain-core", "api-gateway")
                                       for arg in ("--mq-destination", dest)] if engines.amqp_url else [])],
        Health("http", f"http://{h}:{p}/healthz"), url=f"http://{h}:{p}", ports=[p],
        before_start=lambda: [issue_swarm_credential(state, name, role)
                              for name, role in (("console-operator", "operator"), ("console-viewer", "viewer"))])

    def fresh_credential(swarm_id: str) -> Callable[[], None]:
        def before_start() -> None:
            issue_swarm_credential(state, swarm_id)  # short-lived: a new one at each start of the worker
        return before_start

    # -- the seven swarms of the phase-0 scenario ------------------------------------------------------------
    coordinator_url, chassis_url = specs["coordinator"].url, specs["chassis-pool"].url
    for swarm in topology.swarms.values():
        name = f"swarm-{swarm.swarm_id}"
        cred = state.credential(swarm.swarm_id)
        specs[name] = ServiceSpec(
            name, [PY, "-m", "infrafabric.coordinator.worker", "--service", coordinator_url, "--credential",
                   str(cred), "--capabilities", ",".join(swarm.capabilities), "--chassis", chassis_url],
            Health("log", marker='"event": "ready"'),
            before_start=fresh_credential(swarm.swarm_id))

    # every service writes the one audit log (the witness on PostgreSQL: a row lock orders the writers of
    # all processes) and signs checkpoints with the stack's witness key
    common = {"PGPASSFILE": engines.pgpass, "INFRAFABRIC_WITNESS_URL": engines.witness_url,
              "INFRAFABRIC_WITNESS_KEY_DIR": str(state.root / "pki" / "witness"),
              "INFRAFABRIC_STATE_DIR": str(state.root / "data")}
    for spec in specs.values():
        spec.env = {**common, **spec.env}

    wanted = topology.service_names()
    if only:
        unknown = sorted(set(only) - set(wanted))
        if unknown:
            from stack.topology import TopologyError

            raise TopologyError(f"--only names unknown service(s) {unknown}; known: {', '.join(wanted)}")
        wanted = [n for n in wanted if n in only]
    return [specs[n] for n in wanted]
