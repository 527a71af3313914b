"""The real-engine launchers and their fixtures: each engine serves a real client, and stops without a trace."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import grpc
import pytest

from backends.servers import (
    BinaryNotFoundError,
    EtcdCluster,
    EtcdServer,
    NatsServer,
    PostgresServer,
    RabbitMQServer,
    ServerError,
    ServerStartError,
    free_ports,
    pid_exists,
    port_is_free,
)
from backends.servers import check as check_mod
from backends.servers.probe import http_get

pytestmark = pytest.mark.timeout(120)


def _key() -> str:
    return f"/test-servers/{uuid.uuid4().hex}"


def _assert_stopped(server: object, pid: int, ports: list[int]) -> None:
    assert not pid_exists(pid), f"{server!r}: pid {pid} still exists after stop()"
    busy = [p for p in ports if not port_is_free(p)]
    assert not busy, f"{server!r}: ports {busy} still listening after stop()"


# ---------------------------------------------------------------------------------------------- ports
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(6)
    assert len(set(ports)) == 6
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    finally:
        for s in socks:
            s.close()
    with pytest.raises(ValueError):
        free_ports(0)


def _occupy(port: int) -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


@pytest.mark.etcd
@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.parametrize("factory", [EtcdServer, NatsServer, PostgresServer], ids=["etcd", "nats", "postgres"])
def test_start_retries_on_fresh_ports_when_a_chosen_port_was_taken(factory: type) -> None:
    server = factory()
    first_port = server.client_port if isinstance(server, EtcdServer) else server.port
    blocker = _occupy(first_port)  # another process grabbed the port between choice and bind
    try:
        server.start()
        try:
            now = server.client_port if isinstance(server, EtcdServer) else server.port
            assert now != first_port
            assert not port_is_free(now)
        finally:
            server.stop()
    finally:
        blocker.close()


# ---------------------------------------------------------------------------------------------- etcd
@pytest.mark.etcd
async def test_etcd_put_get_through_etcd3aio(etcd_server: EtcdServer) -> None:
    from etcd3aio import Etcd3Client

    assert etcd_server.url == f"etcd://127.0.0.1:{etcd_server.client_port}"
    assert etcd_server.endpoint == f"127.0.0.1:{etcd_server.client_port}"
    assert etcd_server.data_dir.is_dir()
    key = _key()
    async with Etcd3Client([etcd_server.endpoint]) as client:
        await client.kv.put(key, b"hello", timeout=5)
        resp = await client.kv.get(key, timeout=5)
    assert [kv.value for kv in resp.kvs] == [b"hello"]


@pytest.mark.etcd
def test_etcd_binary_is_the_real_go_binary() -> None:
    from backends.servers.etcd import find_etcd_binary

    path = find_etcd_binary()
    with open(path, "rb") as fh:
        assert fh.read(4) == b"\x7fELF", f"{path} is not a native binary (python wrapper?)"


@pytest.mark.etcd
def test_etcd_start_failure_raises_with_log_tail() -> None:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    try:
        server = EtcdServer(client_port=taken, peer_port=free_ports(1)[0], startup_timeout=10)
        with pytest.raises(ServerStartError) as info:
            server.start()
        assert info.value.error_code == "SERVER_START_FAILED"
        assert "address already in use" in info.value.message
        assert server.pid is None
        assert server._workdir is None, "temp dir must be removed after a failed start"
    finally:
        blocker.close()


@pytest.mark.etcd
@pytest.mark.chaos
async def test_etcd_cluster_put_works_while_a_follower_is_paused(etcd_cluster: EtcdCluster) -> None:
    from etcd3aio import Etcd3Client

    assert len(etcd_cluster.members) == 3
    assert etcd_cluster.url == "etcd://" + ",".join(etcd_cluster.endpoints)
    leader = etcd_cluster.leader_index()
    follower = (leader + 1) % 3
    etcd_cluster.pause(follower)
    assert etcd_cluster.members[follower].is_paused
    key = _key()
    async with Etcd3Client([etcd_cluster.members[leader].endpoint]) as client:
        await client.kv.put(key, b"v1", timeout=5)
        resp = await client.kv.get(key, timeout=5)
    assert resp.kvs[0].value == b"v1"
    etcd_cluster.resume(follower)
    etcd_cluster.wait_healthy(10)
    # The resumed follower catches up and serves the value from its own store.
    deadline = time.monotonic() + 10
    async with Etcd3Client([etcd_cluster.members[follower].endpoint]) as client:
        while True:
            resp = await client.kv.get(key, serializable=True, timeout=5)
            if resp.kvs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert resp.kvs and resp.kvs[0].value == b"v1"


@pytest.mark.etcd
@pytest.mark.chaos
async def test_etcd_cluster_new_leader_after_kill_and_member_rejoins(etcd_cluster: EtcdCluster) -> None:
    from etcd3aio import Etcd3Client

    old = etcd_cluster.leader_index()
    old_pid = etcd_cluster.members[old].pid
    assert old_pid is not None
    etcd_cluster.kill(old)
    assert not pid_exists(old_pid)
    new = etcd_cluster.leader_index(timeout=15)
    assert new != old
    key = _key()
    async with Etcd3Client([etcd_cluster.members[new].endpoint]) as client:
        await client.kv.put(key, b"after-kill", timeout=5)
    etcd_cluster.restart(old)
    etcd_cluster.wait_healthy(15)
    deadline = time.monotonic() + 10
    async with Etcd3Client([etcd_cluster.members[old].endpoint]) as client:
        while True:
            resp = await client.kv.get(key, serializable=True, timeout=5)
            if resp.kvs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    assert resp.kvs and resp.kvs[0].value == b"after-kill", "restarted member did not rejoin with its data"


@pytest.mark.etcd
@pytest.mark.security
async def test_etcd_secure_needs_token_and_tls(etcd_secure: EtcdServer) -> None:
    from etcd3aio import Etcd3Client

    assert etcd_secure.url.startswith("etcds://127.0.0.1:")
    assert etcd_secure.root_password
    tls = {
        "ca_cert": etcd_secure.ca_cert.read_bytes(),
        "cert_key": etcd_secure.client_key.read_bytes(),
        "cert_chain": etcd_secure.client_cert.read_bytes(),
    }
    key = _key()
    async with Etcd3Client([etcd_secure.endpoint], **tls) as client:
        with pytest.raises(grpc.RpcError) as no_token:
            await client.kv.put(key, b"x", timeout=5, max_attempts=1)
        assert "user name is empty" in str(no_token.value)
        with pytest.raises(grpc.RpcError) as bad_pw:
            async with client.token_refresher("root", etcd_secure.root_password + "-wrong"):
                pass
        assert "authentication failed" in str(bad_pw.value)
        async with client.token_refresher("root", etcd_secure.root_password):
            await client.kv.put(key, b"secret-ok", timeout=5)
            resp = await client.kv.get(key, timeout=5)
    assert resp.kvs[0].value == b"secret-ok"
    async with Etcd3Client([etcd_secure.endpoint]) as plain:
        with pytest.raises(Exception) as plaintext:  # noqa: PT011 - any transport error; it must not succeed
            await plain.kv.get(key, timeout=3, max_attempts=1)
    assert "UNAVAILABLE" in str(plaintext.value) or "Socket closed" in str(plaintext.value)


@pytest.mark.etcd
@pytest.mark.security
def test_etcd_secure_password_not_in_any_argv(etcd_secure: EtcdServer) -> None:
    import psutil

    pw = etcd_secure.root_password
    assert pw
    for proc in psutil.process_iter(["cmdline"]):
        assert pw not in " ".join(proc.info["cmdline"] or []), f"password visible in argv of pid {proc.pid}"


@pytest.mark.etcd
async def test_etcd_explicit_data_dir_survives_restart(tmp_path: Path) -> None:
    from etcd3aio import Etcd3Client

    data_dir = tmp_path / "etcd-data"
    server = EtcdServer(data_dir=data_dir).start()
    try:
        assert server.data_dir == data_dir
        async with Etcd3Client([server.endpoint]) as client:
            await client.kv.put("/persist", b"kept", timeout=5)
        server.stop()
        assert data_dir.is_dir(), "a caller's data dir is never removed"
        server.start()
        async with Etcd3Client([server.endpoint]) as client:
            resp = await client.kv.get("/persist", timeout=5)
        assert resp.kvs[0].value == b"kept"
    finally:
        server.stop()


@pytest.mark.etcd
def test_etcd_lifecycle_leaves_nothing_behind() -> None:
    server = EtcdServer()
    with server:
        pid = server.pid
        assert pid is not None and pid_exists(pid)
        workdir = server.workdir
        ports = [server.client_port, server.peer_port]
        assert not port_is_free(server.client_port)
    _assert_stopped(server, pid, ports)
    assert not workdir.exists(), "temp dir must be removed on stop"


# ---------------------------------------------------------------------------------------------- NATS
@pytest.mark.nats
async def test_nats_request_reply(nats_server: NatsServer) -> None:
    import nats

    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    nc = await nats.connect(nats_server.url)
    try:
        subject = f"test.servers.{uuid.uuid4().hex}"

        async def handler(msg: nats.aio.msg.Msg) -> None:
            await msg.respond(msg.data.upper())

        await nc.subscribe(subject, cb=handler)
        reply = await nc.request(subject, b"ping", timeout=5)
        assert reply.data == b"PING"
        js = nc.jetstream()
        stream = f"S{uuid.uuid4().hex[:8]}"
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.a", b"kept")
        assert ack.seq == 1
    finally:
        await nc.close()


@pytest.mark.nats
@pytest.mark.chaos
def test_nats_pause_resume_kill_and_stop() -> None:
    server = NatsServer(jetstream=False).start()
    pid = server.pid
    assert pid is not None
    try:
        server.pause()
        with pytest.raises(OSError):  # a stopped process accepts the TCP connection but never answers
            http_get(f"{server.monitor_url}/healthz", timeout=0.5)
        server.resume()
        assert http_get(f"{server.monitor_url}/healthz", timeout=2)[0] == 200
        server.kill()
        assert not pid_exists(pid)
        assert server.workdir.exists(), "kill() keeps the temp dir so the server can restart"
        server.start()
        assert server.pid != pid and http_get(f"{server.monitor_url}/healthz", timeout=2)[0] == 200
        pid = server.pid
    finally:
        server.stop()
    _assert_stopped(server, pid, [server.port, server.monitor_port])
    with pytest.raises(ServerError) as info:
        server.pause()
    assert info.value.error_code == "SERVER_NOT_RUNNING"


@pytest.mark.nats
def test_atexit_safety_net_stops_forgotten_servers() -> None:
    script = textwrap.dedent(
        """
        from backends.servers import NatsServer
        s = NatsServer(jetstream=False).start()
        print(s.pid, s.workdir, flush=True)
        # exits without stop(): the atexit hook must stop it
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    pid_s, workdir = res.stdout.split()
    assert not pid_exists(int(pid_s)), "a forgotten server outlived the interpreter"
    assert not os.path.exists(workdir)


# ---------------------------------------------------------------------------------------------- PostgreSQL
@pytest.mark.postgres
async def test_postgres_select_and_create_database(postgres_server: PostgresServer) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_server.dsn("postgres"), timeout=10)
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()
    url = postgres_server.create_database()
    assert url.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{postgres_server.port}/t_")
    db = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(postgres_server.dsn(db), timeout=10)
    try:
        assert await conn.fetchval("select current_database()") == db
        assert await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'") == 0
    finally:
        await conn.close()
    named = postgres_server.create_database("servers_named_db")
    assert named == postgres_server.sqlalchemy_url("servers_named_db")
    with pytest.raises(ServerError) as dup:
        postgres_server.create_database("servers_named_db")
    assert dup.value.error_code == "POSTGRES_SQL_FAILED"
    with pytest.raises(ServerError) as bad:
        postgres_server.create_database('x"; drop database postgres; --')
    assert bad.value.error_code == "POSTGRES_INVALID_NAME"


@pytest.mark.postgres
async def test_postgres_through_sqlalchemy(postgres_server: PostgresServer) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres_server.create_database())
    try:
        async with engine.begin() as conn:
            await conn.execute(text("create table t (id int primary key)"))
            await conn.execute(text("insert into t values (1), (2)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("select sum(id) from t"))).scalar_one() == 3
    finally:
        await engine.dispose()


@pytest.mark.postgres
def test_postgres_lifecycle_leaves_nothing_behind() -> None:
    server = PostgresServer()
    with server:
        pid = server.pid
        assert pid is not None and server.psql("select 40 + 2").strip() == "42"
        workdir = server.workdir
        with pytest.raises(ServerError) as twice:
            server.start()
        assert twice.value.error_code == "SERVER_ALREADY_RUNNING"
        assert server.pid == pid, "a refused second start must not touch the running server"
    _assert_stopped(server, pid, [server.port])
    assert not workdir.exists()


# ---------------------------------------------------------------------------------------------- RabbitMQ
@pytest.mark.rabbitmq
async def test_rabbitmq_publish_consume(rabbitmq_server: RabbitMQServer) -> None:
    import aio_pika

    assert rabbitmq_server.amqp_url == f"amqp://guest:guest@127.0.0.1:{rabbitmq_server.port}/"
    conn = await aio_pika.connect_robust(rabbitmq_server.amqp_url, timeout=10)
    async with conn:
        channel = await conn.channel()
        queue = await channel.declare_queue(f"q-{uuid.uuid4().hex}", auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(body=b"hello-rmq"), routing_key=queue.name)
        msg = await queue.get(timeout=10, fail=True)
        assert msg is not None
        await msg.ack()
        assert msg.body == b"hello-rmq"


@pytest.mark.rabbitmq
def test_rabbitmq_binds_only_loopback(rabbitmq_server: RabbitMQServer) -> None:
    import psutil

    pids = {rabbitmq_server.pid, rabbitmq_server.epmd_pid}
    root = psutil.Process(rabbitmq_server.pid)
    pids |= {c.pid for c in root.children(recursive=True)}
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert listening, "no listening sockets found for the RabbitMQ node"
    exposed = [c.laddr for c in listening if c.laddr.ip not in ("127.0.0.1", "::1")]
    assert not exposed, f"RabbitMQ listens beyond loopback: {exposed}"


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_rabbitmq_lifecycle_leaves_nothing_behind() -> None:
    import psutil

    server = RabbitMQServer()
    with server:
        pid, epmd_pid = server.pid, server.epmd_pid
        assert pid is not None and epmd_pid is not None
        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        assert children, "beam.smp should run under the start script"
        ports = [server.port, server.dist_port, server.epmd_port]
    _assert_stopped(server, pid, ports)
    assert not [c for c in children if pid_exists(c)], "beam.smp survived stop()"
    assert not pid_exists(epmd_pid), "epmd survived stop()"


# ---------------------------------------------------------------------------------------------- check
def test_check_lists_every_engine_and_fails_when_one_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    statuses = check_mod.check_engines()
    assert {s.binary for s in statuses} >= {"etcd", "nats-server", "postgres", "rabbitmq-server"}
    assert all(s.ok for s in statuses), [s for s in statuses if not s.ok]
    etcd = next(s for s in statuses if s.binary == "etcd")
    assert etcd.version and "3.5" in etcd.version
    assert check_mod.main() == 0

    def missing() -> str:
        raise BinaryNotFoundError("nats-server not found")

    monkeypatch.setattr(check_mod, "find_nats_binary", missing)
    assert check_mod.main() == 1
    assert "missing engines: nats-server" in capsys.readouterr().out
