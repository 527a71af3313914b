"""The stack's supervisor: one daemon process that owns the engines and every service of this host.

It starts the engines, makes the identities once, starts each service (dependencies first, each healthy
before the next), writes Prometheus's configuration and starts it, then watches: a service that exits is
restarted with exponential backoff (0.5 s doubling to 30 s; reset after 60 s of good health) and every
restart is logged. ``status.json`` in the state directory is rewritten every second; ``SIGTERM`` stops
services in reverse order, then Prometheus, then the engines, and removes the pid file.

``python -m stack.supervisor --state DIR [--topology FILE] [--only NAME ...]`` (``ifstack up`` runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from backends.servers.base import pid_exists
from backends.servers.probe import http_get
from backends.servers.prometheus import PrometheusServer
from stack.catalog import ServiceSpec, build_catalog
from stack.engines import Engines, start_engines
from stack.identity import ensure_identity
from stack.prometheus_config import write_prometheus_config
from stack.state import StackState
from stack.topology import Topology, load_topology

__all__ = ["Supervisor"]

BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_RESET = 0.5, 30.0, 60.0
START_TIMEOUT = 60.0


@dataclass
class Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_offset: int = 0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST
    next_start: float = 0.0
    healthy: bool = False
    last_exit: int | None = None
    log: IO[bytes] | None = field(default=None, repr=False)


def _tls_context(files: tuple[Path, Path, Path] | None) -> ssl.SSLContext | None:
    if files is None:
        return None
    ca, cert, key = files
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # a loopback address, not a name; the chain is still verified
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


class Supervisor:
    def __init__(self, state: StackState, topology: Topology, only: list[str] | None = None) -> None:
        self.state, self.topology, self.only = state, topology, only
        self.engines = Engines()
        self.running: dict[str, Running] = {}
        self.prometheus: PrometheusServer | None = None
        self.phase = "starting"
        self.error: str | None = None
        self._stop = False
        self._events = open(state.root / "events.log", "a", buffering=1)  # noqa: SIM115 - for the daemon's life

    # -- logging and status ---------------------------------------------------------------------------
    def event(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}"
        self._events.write(line + "\n")
        print(line, flush=True)

    def write_status(self) -> None:
        status = {
            "supervisor_pid": os.getpid(), "phase": self.phase, "error": self.error, "updated": time.time(),
            "engines": {"kv": self.engines.kv_url, "mesh_kv": self.engines.mesh_kv_url, "bus": self.engines.bus_url,
                        "amqp": self.engines.amqp_url,
                        "node_db": self.engines.node_db_url,
                        "processes": [{"name": n, "url": u, "pid": p} for n, u, p in self.engines.rows()]},
            "prometheus": self.prometheus.url if self.prometheus is not None else None,
            "services": [{"name": r.spec.name, "pid": r.proc.pid if r.proc is not None else None, "url": r.spec.url,
                          "ports": r.spec.ports, "healthy": r.healthy, "restarts": r.restarts,
                          "last_exit": r.last_exit, "log": str(self.state.log(r.spec.name))}
                         for r in self.running.values()],
        }
        tmp = self.state.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=1))
        os.replace(tmp, self.state.status_file)

    # -- services -------------------------------------------------------------------------------------
    def _launch(self, r: Running) -> None:
        if r.spec.before_start is not None:
            r.spec.before_start()
        path = self.state.log(r.spec.name)
        if r.log is None:
            r.log = open(path, "ab")  # noqa: SIM115 - closed in stop
        r.log_offset = path.stat().st_size
        r.proc = subprocess.Popen(  # noqa: S603 - argv from the catalog, no shell
            r.spec.argv, stdin=subprocess.DEVNULL, stdout=r.log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **r.spec.env}, cwd=str(self.state.root),
            start_new_session=True)
        r.started_at = time.monotonic()
        r.healthy = False

    def _probe(self, r: Running) -> bool:
        h = r.spec.health
        if r.proc is None or r.proc.poll() is not None:
            return False
        try:
            if h.kind == "log":
                with open(self.state.log(r.spec.name), "rb") as fh:
                    fh.seek(r.log_offset)
                    return h.marker.encode() in fh.read()
            status, _ = http_get(h.url, timeout=1.0, context=_tls_context(h.tls))
            return status == 200
        except (OSError, ssl.SSLError):
            return False

    def _wait_healthy(self, rs: list[Running], timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        pending = list(rs)
        while pending and not self._stop:
            for r in list(pending):
                if r.proc is not None and r.proc.poll() is not None:
                    tail = self.state.log(r.spec.name).read_bytes()[r.log_offset:][-2000:].decode("utf-8", "replace")
                    raise RuntimeError(f"{r.spec.name} exited with code {r.proc.returncode} while starting:\n{tail}")
                if self._probe(r):
                    r.healthy = True
                    pending.remove(r)
                    self.event(f"service {r.spec.name} healthy (pid {r.proc.pid if r.proc else '-'}, "
                               f"{time.monotonic() - r.started_at:.1f} s)")
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not healthy after {timeout:.0f} s: {', '.join(r.spec.name for r in pending)}")
            time.sleep(0.1)

    def _stop_service(self, r: Running, timeout: float = 10.0) -> None:
        proc = r.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5.0)
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # stragglers of its process group
            except (ProcessLookupError, PermissionError):
                pass
        r.proc = None
        r.healthy = False
        if r.log is not None:
            r.log.close()
            r.log = None

    # -- bootstrap ------------------------------------------------------------------------------------
    def _register_swarm_profiles(self) -> None:
        """Each swarm of the topology gets its governor profile once (a resumed stack keeps its budgets)."""
        from backends.kv import open_kv
        from infrafabric.governor import IFGovernor, SwarmProfile

        async def register() -> int:
            async with open_kv(self.engines.kv_url) as store:
                governor = IFGovernor(kv=store, audit=None)
                await governor.load()
                added = 0
                for s in self.topology.swarms.values():
                    if s.swarm_id not in governor.swarm_registry:
                        governor.register_swarm(SwarmProfile(s.swarm_id, list(s.capabilities), s.cost, 1.0, s.budget))
                        added += 1
                await governor.flush()
                await governor.close()
                return added

        added = asyncio.run(register())
        self.event(f"governor profiles: {added} registered, {len(self.topology.swarms) - added} kept")

    # -- main -----------------------------------------------------------------------------------------
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.state.pid_file.write_text(str(os.getpid()))
        try:
            self._start_all()
            self.phase = "running"
            self.write_status()
            self.event("stack running")
            self._watch()
        except Exception as exc:  # noqa: BLE001 - reported in status.json for `up`, then everything stops
            self.error = f"{type(exc).__name__}: {exc}"
            self.phase = "failed"
            self.event(f"start failed: {self.error}")
        finally:
            self._stop_all()
            self.state.pid_file.unlink(missing_ok=True)
        return 1 if self.error else 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = True

    def _start_all(self) -> None:
        self.engines = start_engines(self.topology, self.state, log=self.event)
        self.write_status()
        identity = ensure_identity(self.state)
        if self.topology.swarms:
            self._register_swarm_profiles()
        specs = build_catalog(self.topology, self.state, self.engines, identity, self.only)
        self.running = {s.name: Running(s) for s in specs}
        core = [r for r in self.running.values() if not r.spec.name.startswith("swarm-")]
        for r in core:
            if self._stop:
                return
            self._launch(r)
            self._wait_healthy([r])
            self.write_status()
        swarms = [r for r in self.running.values() if r.spec.name.startswith("swarm-")]
        for r in swarms:
            self._launch(r)
        self._wait_healthy(swarms)
        conf = self.topology.engines.get("prometheus")
        if conf is None or not conf.url:
            config = write_prometheus_config(self.state.root / "prometheus.json", specs)
            self.prometheus = PrometheusServer(config, workdir=self.state.engine_dir("prometheus"),
                                               port=self.state.port("prometheus", conf.port if conf else 0))
            self.prometheus.start()
            self.event(f"prometheus ready on {self.prometheus.url}")

    def _watch(self) -> None:
        last_status = 0.0
        while not self._stop:
            now = time.monotonic()
            for r in self.running.values():
                if r.proc is not None and r.proc.poll() is not None:
                    r.last_exit = r.proc.returncode
                    r.proc = None
                    r.healthy = False
                    r.backoff = BACKOFF_FIRST if now - r.started_at > HEALTHY_RESET else min(r.backoff * 2,
                                                                                             BACKOFF_MAX)
                    r.next_start = now + r.backoff
                    self.event(f"service {r.spec.name} exited with code {r.last_exit}; restart in {r.backoff:.1f} s")
                elif r.proc is None and now >= r.next_start:
                    r.restarts += 1
                    self._launch(r)
                    self.event(f"service {r.spec.name} restarted (restart {r.restarts}, pid {r.proc.pid})")  # type: ignore[union-attr]
            if now - last_status >= 1.0:
                for r in self.running.values():
                    r.healthy = self._probe(r)
                self.write_status()
                last_status = now
            time.sleep(0.1)

    def _stop_all(self) -> None:
        self.phase = "stopping" if self.phase != "failed" else "failed"
        for r in reversed(list(self.running.values())):
            self._stop_service(r)
        if self.prometheus is not None:
            self.prometheus.stop(cleanup=False)
            self.prometheus = None
        self.engines.stop()
        if self.phase != "failed":
            self.phase = "stopped"
        self.write_status()
        self.event(f"stack {self.phase}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", required=True)
    parser.add_argument("--topology")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    state = StackState(args.state)
    if state.pid_file.exists() and pid_exists(int(state.pid_file.read_text() or 0)):
        sys.exit(f"a supervisor already runs on {state.root} (pid {state.pid_file.read_text()})")
    sys.exit(Supervisor(state, load_topology(args.topology), args.only or None).run())


if __name__ == "__main__":
    main()
