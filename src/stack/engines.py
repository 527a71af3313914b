"""Start the stack's engines with the project's own launchers, on the state directory (so ``up`` resumes).

An engine the topology names by URL is used, not started. The deployed form is secured: etcd speaks TLS
and knows each client by its certificate (an account per role, each limited to its prefixes); NATS speaks
TLS and needs its user's password; RabbitMQ and PostgreSQL need a password per service.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.servers import EtcdCluster, EtcdServer, NatsServer, PostgresServer, RabbitMQServer
from backends.servers.etcd import EtcdUser
from backends.servers.nats import NatsUser
from backends.servers.tls import ensure_tls_bundle
from backends.servers.base import ManagedProcess
from stack.state import StackState
from stack.topology import Topology, TopologyError

__all__ = ["Engines", "start_engines"]


@dataclass
class Engines:
    kv_url: str = ""  # the control plane's account (every key)
    mesh_kv_url: str = ""  # the mesh's account (its registry prefix only)
    bus_url: str = ""
    amqp_url: str = ""  # the broker's address for a service account: amqp://<service>@host:port/
    node_db_url: str = ""
    witness_url: str = ""
    pgpass: str = ""  # libpq password file (0600): each service role's password, never in a URL or argv
    started: list[ManagedProcess] = field(default_factory=list)  # in start order

    def rows(self) -> list[tuple[str, str, int | None]]:
        return [(p.name, getattr(p, "url", "") or "", p.pid) for p in self.started]

    def stop(self) -> None:
        for proc in reversed(self.started):
            proc.stop(timeout=20.0)
        self.started.clear()


def _etcd(topology: Topology, state: StackState, engines: Engines) -> None:
    conf = topology.engines.get("etcd")
    if conf is not None and conf.url:
        engines.kv_url = engines.mesh_kv_url = conf.url
        return
    members = conf.members if conf is not None else 1
    token = state.secret("etcd-cluster-token", 9)
    names = [f"m{i}" for i in range(members)]
    ports = [(state.port(f"etcd.{n}.client"), state.port(f"etcd.{n}.peer")) for n in names]
    initial = ",".join(f"{n}=http://127.0.0.1:{ports[i][1]}" for i, n in enumerate(names))
    # clients over TLS and known by their certificate (etcd maps its CN to the user): a process needs the
    # key of an account's certificate, not only the address and a guessable password. Kept in the state's
    # pki, renewed at a start when it has less than 30 days left. ``stack-admin`` is no etcd user: it only
    # lets the stack's own etcdctl (root, by password) through the TLS handshake.
    tls = ensure_tls_bundle(state.root / "pki" / "etcd", client_cn="stack-admin", clients=tuple(ETCD_ACCOUNTS))
    servers = [EtcdServer(member_name=n, client_port=ports[i][0], peer_port=ports[i][1], initial_cluster=initial,
                          cluster_token=token, fast_timers=False, unsafe_no_fsync=False, tls=True,
                          client_cert_auth=True, client_cn="stack-admin", tls_bundle=tls,
                          workdir=state.engine_dir(f"etcd-{n}"), startup_timeout=60.0)
               for i, n in enumerate(names)]
    deadline = time.monotonic() + 60.0
    for server in servers:
        server.launch()
        engines.started.append(server)
        if members > 1:
            EtcdCluster.wait_peer_serving(server, deadline)  # the cluster's own start rule
    for server in servers:
        server.wait_ready(max(0.5, deadline - time.monotonic()))
    marker = state.engine_dir(f"etcd-{names[0]}") / "auth.enabled"
    if not marker.exists():  # once per cluster: users and roles live in its data from then on
        for name, prefixes in ETCD_ACCOUNTS.items():  # no password: the account's certificate is its login
            servers[0].add_user(EtcdUser(name, None, readwrite=prefixes))
        servers[0].enable_auth(state.secret("etcd-root"))
        marker.write_text("enabled\n")
    endpoints = "etcds://" + ",".join(s.endpoint for s in servers)

    def account(name: str) -> str:
        cert, key = tls.clients[name]
        return f"{endpoints}?ca={tls.ca_cert}&cert={cert}&key={key}"

    engines.kv_url, engines.mesh_kv_url = account("control-plane"), account("mesh")


def _nats(topology: Topology, state: StackState, engines: Engines) -> None:
    conf = topology.engines.get("nats")
    if conf is not None and conf.url:
        engines.bus_url = conf.url
        return
    users = [NatsUser("control-plane", state.secret("nats-control-plane"), (">",), (">",))]
    # TLS with the stack's own CA (pki/nats, renewed like etcd's): pushes and events carry task payloads
    server = NatsServer(workdir=state.engine_dir("nats"), port=state.port("nats.client"),
                        monitor_port=state.port("nats.monitor"), users=users, tls=True,
                        tls_bundle=ensure_tls_bundle(state.root / "pki" / "nats", client_cn="stack-admin"))
    engines.started.append(server.start())
    engines.bus_url = f"{server.url}&user=control-plane&password_file={state.secret_file('nats-control-plane')}"


#: Services with a message-queue account (the payout anchors: api-gateway -> blockchain-core).
MQ_ACCOUNTS = ("api-gateway", "blockchain-core")
MQ_OBSERVERS = ("console",)


def _rabbitmq(topology: Topology, state: StackState, engines: Engines) -> None:
    conf = topology.engines.get("rabbitmq")
    if conf is not None and conf.url:
        engines.amqp_url = conf.url
        return
    server = RabbitMQServer(workdir=state.engine_dir("rabbitmq"),
                            ports=(state.port("rabbitmq.amqp"), state.port("rabbitmq.dist"),
                                   state.port("rabbitmq.epmd")))
    engines.started.append(server.start())
    for service in MQ_ACCOUNTS:  # one broker account per service: it reads only its own queue
        marker = state.engine_dir("rabbitmq") / f"{service}.created"
        if not marker.exists():
            server.add_service_user(service, state.secret(f"rabbitmq-{service}"))
            marker.write_text("created\n")
    for observer in MQ_OBSERVERS:  # accounts that may only look (queue depths), never send or receive
        marker = state.engine_dir("rabbitmq") / f"{observer}.created"
        if not marker.exists():
            server.add_observer_user(observer, state.secret(f"rabbitmq-{observer}"))
            marker.write_text("created\n")
    engines.amqp_url = f"amqp://127.0.0.1:{server.port}/"


#: etcd accounts of the stack and the key prefixes each may read and write: the control plane (coordinator,
#: governor, chassis pool, model gateway, operators' tools) everything; the mesh (discovery, workloads, the
#: node API's registration) only the registry. Swarms get none: they reach the control plane over HTTP.
ETCD_ACCOUNTS = {"control-plane": ("/",), "mesh": ("/lucid/mesh/",)}

#: Database roles of the stack: each owns one database no other role may connect to.
DATABASES = ("node_management", "witness")


def _postgres(topology: Topology, state: StackState, engines: Engines) -> None:
    conf = topology.engines.get("postgres")
    passwords = {db: state.secret(f"postgres-{db.replace('_', '-')}") for db in DATABASES}
    if conf is not None and conf.url:
        engines.node_db_url = conf.url  # the witness then lives in the same external server's "witness" db
        host_port = conf.url.split("@", 1)[-1].split("/", 1)[0]
    else:
        _check_reachable_by_postgres(state.engine_dir("postgres"))
        server = PostgresServer(secured=True, workdir=state.engine_dir("postgres"), port=state.port("postgres"))
        engines.started.append(server.start())
        for db in DATABASES:
            marker = state.engine_dir("postgres") / f"{db}.created"
            if not marker.exists():
                server.create_service_database(db, passwords[db])
                marker.write_text("created\n")
        host_port = f"127.0.0.1:{server.port}"
        engines.node_db_url = f"postgresql+asyncpg://node_management@{host_port}/node_management"
    engines.witness_url = f"postgresql://witness@{host_port}/witness"
    host, _, port = host_port.partition(":")
    lines = "".join(f"{host}:{port or 5432}:{db}:{db}:{passwords[db]}\n" for db in DATABASES)
    engines.pgpass = str(state.write_secret("pgpass", lines))


def _check_reachable_by_postgres(directory: Path) -> None:
    """As root, PostgreSQL runs as the ``postgres`` user: every parent of its data must let others traverse."""
    if os.geteuid() != 0:
        return
    for parent in directory.parents:  # the directory itself is handed to postgres by the launcher
        if not parent.stat().st_mode & 0o001:
            raise TopologyError(f"{parent} is not traversable by the postgres user (mode "
                                f"{oct(parent.stat().st_mode & 0o777)}): use a state directory whose parents "
                                "allow it (e.g. under /var/lib or /srv), or chmod o+x the parent")


def start_engines(topology: Topology, state: StackState, log: Any = print) -> Engines:
    """Start (or find) etcd, NATS, RabbitMQ and PostgreSQL; on a failure stop what this call started."""
    engines = Engines()
    try:
        for name, start in (("etcd", _etcd), ("nats", _nats), ("postgres", _postgres), ("rabbitmq", _rabbitmq)):
            t0 = time.monotonic()
            start(topology, state, engines)
            log(f"engine {name} ready in {time.monotonic() - t0:.1f} s")
    except BaseException:
        engines.stop()
        raise
    return engines
