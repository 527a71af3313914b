"""Real Prometheus launcher (Debian's ``prometheus`` package): one server on loopback scraping a config file.

The configuration is written by the caller (the stack writes one job per service); the launcher only owns
the process, its TSDB directory and readiness (``/-/ready``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .base import ManagedProcess
from .errors import BinaryNotFoundError
from .ports import free_port
from .probe import http_get

__all__ = ["PrometheusServer", "find_prometheus_binary"]


def find_prometheus_binary() -> str:
    found = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin:/usr/local/bin")
    if not found:
        raise BinaryNotFoundError("prometheus not found (apt-get install prometheus)")
    return found


class PrometheusServer(ManagedProcess):
    """Prometheus on 127.0.0.1 with ``config_file``; TSDB under the work dir. ``reload()`` re-reads the file."""

    name = "prometheus"

    def __init__(self, config_file: str | os.PathLike[str], *, workdir: str | os.PathLike[str] | None = None,
                 port: int | None = None, startup_timeout: float = 30.0) -> None:
        super().__init__(startup_timeout=startup_timeout, workdir=workdir)
        self.config_file = Path(config_file)
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        return [find_prometheus_binary(), f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle", "--storage.tsdb.retention.time=7d"]

    def _reassign_ports(self) -> bool:
        if self._fixed_port:
            return False
        self.port = free_port()
        return True

    def _is_ready(self) -> bool:
        status, _ = http_get(f"{self.url}/-/ready", timeout=0.5)
        return status == 200
