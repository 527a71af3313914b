"""Stop what a dead supervisor left behind: every process whose working directory is inside the state
directory (services run in it, engines in their own directory under it, RabbitMQ's epmd inherits it).

Why by working directory: services and engines run in sessions of their own, so a supervisor killed with
SIGKILL takes none of them down; their pids in ``status.json`` may be stale or reused, while a process
working inside this state directory is this stack's, whoever started it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

__all__ = ["processes_in", "reap"]


def processes_in(root: Path) -> list[psutil.Process]:
    root = root.resolve()
    found = []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == os.getpid():
            continue
        try:
            cwd = Path(proc.cwd()).resolve()
        except (psutil.Error, OSError):
            continue
        if cwd == root or root in cwd.parents:
            found.append(proc)
    return found


def reap(root: Path, timeout: float = 15.0) -> list[int]:
    """SIGTERM every process working in ``root`` (and its group), SIGKILL what is left after ``timeout``;
    returns the pids that were found."""
    procs = processes_in(root)
    for proc in procs:
        for send in (lambda p: os.killpg(p.pid, signal.SIGTERM), lambda p: p.terminate()):
            try:
                send(proc)
            except (ProcessLookupError, PermissionError, psutil.Error, OSError):
                continue
    deadline = time.monotonic() + timeout
    alive = procs
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in procs]
