"""``python -m backends.servers.check``: show each real engine's binary, path and version; exit 1 if one is missing.

The Makefile runs it after installing, so a missing engine is reported before any integration test runs.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from .errors import BinaryNotFoundError
from .etcd import find_etcd_binary, find_etcdctl_binary
from .nats import find_nats_binary
from .postgres import find_postgres_bindir
from .prometheus import find_prometheus_binary
from .rabbitmq import find_epmd, find_rabbitmq_server

__all__ = ["EngineStatus", "check_engines", "main"]


@dataclass(frozen=True, slots=True)
class EngineStatus:
    engine: str
    binary: str
    path: str | None
    version: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.path is not None and self.error is None


def _version(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)  # noqa: S603
    out = (res.stdout or res.stderr).strip().splitlines()
    if res.returncode != 0 or not out:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {(res.stderr or res.stdout).strip()[:200]}")
    return out[0].strip()


def _probe(engine: str, binary: str, locate: Callable[[], str], version_args: list[str] | None) -> EngineStatus:
    try:
        path = locate()
    except BinaryNotFoundError as exc:
        return EngineStatus(engine, binary, None, None, exc.message)
    if version_args is None:
        return EngineStatus(engine, binary, path, "present")
    try:
        return EngineStatus(engine, binary, path, _version([path, *version_args]))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return EngineStatus(engine, binary, path, None, str(exc))


def _rabbitmq_version() -> str | None:
    from pathlib import Path

    target = Path(find_rabbitmq_server()).resolve()  # .../rabbitmq_server-3.10.8/sbin/rabbitmq-server
    name = target.parent.parent.name
    return name.split("-", 1)[1] if "-" in name else None


def check_engines() -> list[EngineStatus]:
    """Probe every engine the integration suites need."""
    statuses = [
        _probe("etcd", "etcd", find_etcd_binary, ["--version"]),
        _probe("etcd", "etcdctl", find_etcdctl_binary, ["version"]),
        _probe("nats", "nats-server", find_nats_binary, ["--version"]),
        _probe("postgres", "postgres", lambda: str(find_postgres_bindir() / "postgres"), ["--version"]),
        _probe("postgres", "initdb", lambda: str(find_postgres_bindir() / "initdb"), ["--version"]),
        _probe("rabbitmq", "rabbitmq-server", find_rabbitmq_server, None),
        _probe("rabbitmq", "epmd", find_epmd, None),
        _probe("prometheus", "prometheus", find_prometheus_binary, ["--version"]),
    ]
    for i, st in enumerate(statuses):
        if st.binary == "rabbitmq-server" and st.ok:
            statuses[i] = EngineStatus(st.engine, st.binary, st.path, _rabbitmq_version() or "present")
    return statuses


def main() -> int:
    statuses = check_engines()
    table = Table(title="Real engines for integration tests")
    for col in ("engine", "binary", "path", "version"):
        table.add_column(col, overflow="fold")
    for st in statuses:
        version = st.version if st.ok else f"[red]MISSING: {st.error}[/red]"
        table.add_row(st.engine, st.binary, st.path or "-", version or "-")
    console = Console()
    console.print(table)
    missing = [s.binary for s in statuses if not s.ok]
    if missing:
        console.print(f"[red]missing engines: {', '.join(missing)}[/red]")
        return 1
    console.print("[green]all engines present[/green]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
