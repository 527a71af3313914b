"""ManagedProcess: one real engine process on 127.0.0.1 with its own temp dir, log file and clean stop.

Every launcher (etcd, NATS, PostgreSQL, RabbitMQ) derives from it, so all share the same guarantees:
the process runs in its own session (signals reach the whole process group, children included), readiness
is polled against a deadline, a failed start raises ServerStartError with the log tail, and an atexit
safety net stops whatever a crashed test left running.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

from .errors import ServerError, ServerStartError

__all__ = ["ManagedProcess", "ServerError", "ServerStartError", "pid_exists"]

# Strong references on purpose: a running server whose handle was dropped must still be stopped at exit.
_LIVE: set[ManagedProcess] = set()
_LIVE_LOCK = threading.Lock()


_PORT_CONFLICT = re.compile(r"address already in use|eaddrinuse", re.IGNORECASE)


def pid_exists(pid: int) -> bool:
    """True when ``pid`` is a live process; a zombie (dead, waiting for its parent to reap it) counts as gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def _descendants(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _wait_gone(pids: list[int], timeout: float) -> None:
    """Wait for processes that are not our direct children (e.g. beam.smp under a shell wrapper) to vanish."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_exists(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if pid_exists(p)]
    for p in alive:  # they were in our process group; a last direct SIGKILL for the stragglers
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _stop_all_live() -> None:
    """atexit safety net: stop every launcher still running (tests that crashed before their teardown)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.stop(timeout=5.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit, nothing to report to
            pass


atexit.register(_stop_all_live)


class ManagedProcess:
    """Base class of the launchers. Subclasses fill ``_command`` and ``_is_ready`` (and maybe the hooks)."""

    #: Short engine name used for the temp dir prefix, the log file name and error messages.
    name: str = "server"
    #: Signal for a graceful stop (PostgreSQL wants SIGINT: SIGTERM waits for clients to disconnect).
    stop_signal: int = signal.SIGTERM
    #: Seconds between two readiness probes.
    poll_interval: float = 0.02

    def __init__(self, *, startup_timeout: float = 30.0, workdir: str | os.PathLike[str] | None = None) -> None:
        self.startup_timeout = startup_timeout
        self._owns_workdir = workdir is None
        self._workdir: Path | None = Path(workdir) if workdir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._paused = False

    # ----------------------------------------------------------------- properties
    @property
    def workdir(self) -> Path:
        """The launcher's temp dir (created on first use, removed by ``stop()`` when we created it)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"if-{self.name}-"))
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    # ----------------------------------------------------------------- subclass hooks
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        """Environment of the process; None inherits ours."""
        return None

    def _popen_kwargs(self) -> dict[str, Any]:
        """Extra Popen arguments (PostgreSQL sets user/group)."""
        return {}

    def _prepare(self) -> None:
        """Runs before every launch (e.g. initdb once, config files)."""

    def _after_start(self) -> None:
        """Runs once the process is ready (e.g. enable auth)."""

    def _after_stop(self) -> None:
        """Runs after the process group is gone (e.g. stop epmd)."""

    # ----------------------------------------------------------------- lifecycle
    def log_tail(self, lines: int = 40) -> str:
        """Last ``lines`` lines of the log, for error messages."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def launch(self) -> None:
        """Start the process without waiting for readiness (clusters launch all members, then wait)."""
        if self.is_running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})", error_code="SERVER_ALREADY_RUNNING")
        self._prepare()
        cmd = self._command()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=str(self.workdir),
                start_new_session=True,
                **self._popen_kwargs(),
            )
        except OSError as exc:
            self._log_file.close()
            self._log_file = None
            raise ServerStartError(f"{self.name}: cannot execute {cmd[0]}: {exc}") from exc
        self._paused = False
        with _LIVE_LOCK:
            _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll readiness until the deadline; on failure kill the process and raise ServerStartError."""
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        while True:
            proc = self._proc
            if proc is None:
                raise ServerStartError(f"{self.name} was not launched")
            code = proc.poll()
            if code is not None:
                self._reap()
                raise ServerStartError(
                    f"{self.name} exited with code {code} before it was ready; log tail:\n{self.log_tail()}"
                )
            try:
                if self._is_ready():
                    return
            except Exception:  # noqa: BLE001 - any probe error means "not ready yet"
                pass
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                self.kill()
                raise ServerStartError(
                    f"{self.name} was not ready after {self.startup_timeout if timeout is None else timeout:.1f}s;"
                    f" log tail:\n{tail}"
                )
            time.sleep(self.poll_interval)

    #: How often start() retries with fresh ports when another process grabbed a chosen port meanwhile.
    port_retries: int = 3

    def start(self) -> Self:
        """Launch, wait until ready, run the post-start hook. Returns self for chaining.

        Free ports are only free when chosen: another test process may bind one before the engine does. Then
        the start is retried on fresh ports (when the subclass chose them itself, see ``_reassign_ports``).
        """
        if self.is_running:
            raise ServerError(f"{self.name} is already running (pid {self.pid})", error_code="SERVER_ALREADY_RUNNING")
        attempt = 0
        while True:
            attempt += 1
            try:
                self.launch()
                self.wait_ready()
                self._after_start()
                return self
            except ServerStartError as exc:
                conflict = _PORT_CONFLICT.search(exc.message) is not None
                self.stop(cleanup=False)
                if conflict and attempt < self.port_retries and self._reassign_ports():
                    continue
                self.stop(cleanup=self._owns_workdir)
                raise
            except BaseException:
                self.stop(cleanup=self._owns_workdir)
                raise

    def _reassign_ports(self) -> bool:
        """Pick fresh free ports after a bind conflict; False when the caller fixed the ports."""
        return False

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        """Forget the finished process, kill stragglers of its group, close the log."""
        if self._proc is not None:
            # Children (e.g. beam.smp under the rabbitmq shell wrapper) may outlive the group leader.
            self._signal_group(signal.SIGKILL)
            self._proc = None
        self._paused = False
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def stop(self, timeout: float = 10.0, *, cleanup: bool = True) -> None:
        """Graceful stop of the whole process group (SIGKILL after ``timeout``); removes the temp dir."""
        proc = self._proc
        if proc is not None:
            descendants = _descendants(proc.pid)
            if self._paused:
                self._signal_group(signal.SIGCONT)
            if proc.poll() is None:
                self._signal_group(self.stop_signal)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal_group(signal.SIGKILL)
                    proc.wait(5.0)
            self._reap()
            _wait_gone(descendants, 5.0)
        try:
            self._after_stop()
        finally:
            if cleanup and self._owns_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def kill(self) -> None:
        """SIGKILL the process group (a crash); the temp dir stays so the server can be restarted."""
        proc = self._proc
        if proc is None:
            return
        descendants = _descendants(proc.pid)
        self._signal_group(signal.SIGKILL)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass
        self._reap()
        _wait_gone(descendants, 5.0)

    def pause(self) -> None:
        """SIGSTOP the process group (a hung server that still holds its sockets)."""
        if not self.is_running:
            raise ServerError(f"{self.name} is not running", error_code="SERVER_NOT_RUNNING")
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process group."""
        if not self.is_running:
            raise ServerError(f"{self.name} is not running", error_code="SERVER_NOT_RUNNING")
        self._signal_group(signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else ("running" if self.is_running else "stopped")
        return f"<{type(self).__name__} pid={self.pid} {state}>"
