"""A writer process SIGKILLed mid-append leaves a log that verifies and holds every acknowledged entry."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from infrafabric.witness import Witness

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from infrafabric.witness import Witness
    url, key_dir, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    w = Witness(url, key_dir, max_batch=512)
    n = 0
    while True:
        for _ in range(300):
            last = w.log("IF.coordinator", "task_claimed", {"round": tag, "n": n, "pad": "x" * 200})
            n += 1
        w.flush()                                   # durable from here on: acknowledge
        print("ACK", n, last, flush=True)
        for _ in range(300):                        # keep appending while the parent decides to kill
            w.log("IF.coordinator", "task_claimed", {"round": tag, "n": n, "pad": "y" * 200})
            n += 1
    """
)


def _kill_mid_append(url: str, key_dir: Path, tag: str, acks_before_kill: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, str(key_dir), tag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    acked, last_id = 0, ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while seen < acks_before_kill:
            line = proc.stdout.readline()
            assert line, f"child died: {proc.stderr.read() if proc.stderr else ''}"
            _, count, last_id = line.split()
            acked, seen = int(count), seen + 1
            assert time.monotonic() < deadline
        os.kill(proc.pid, signal.SIGKILL)  # the child is busy appending the next entries right now
    finally:
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return acked, last_id


def _check(url: str, key_dir: Path, tag: str, acked: int, last_id: str) -> int:
    w = Witness(url, key_dir)
    try:
        report = w.verify(all_signatures=False)
        assert report.ok, report.problems[:5]
        mine = w.query(operation="task_claimed")
        rounds = [e for e in mine if e["params"]["round"] == tag]
        assert len(rounds) >= acked, "an acknowledged entry was lost"
        assert [e["params"]["n"] for e in rounds] == list(range(len(rounds))), "gap in the killed writer's entries"
        assert rounds[acked - 1]["id"] == last_id
        assert w.latest_checkpoint().size == report.entries  # the last batch committed with its checkpoint
        return report.entries
    finally:
        w.close()


@pytest.mark.chaos
@pytest.mark.slow
def test_sigkill_mid_append_sqlite(tmp_path: Path) -> None:
    url, key_dir = f"sqlite:///{tmp_path / 'crash.db'}", tmp_path / "keys"
    rng = random.Random(7)
    size = 0
    for round_no in range(3):  # the same log survives repeated kills and keeps growing as one chain
        acked, last_id = _kill_mid_append(url, key_dir, f"r{round_no}", rng.randint(2, 6))
        new_size = _check(url, key_dir, f"r{round_no}", acked, last_id)
        assert new_size > size
        size = new_size


@pytest.mark.chaos
@pytest.mark.postgres
@pytest.mark.slow
def test_sigkill_mid_append_postgres(postgres_server, tmp_path: Path) -> None:
    url, key_dir = postgres_server.create_database(), tmp_path / "keys"
    acked, last_id = _kill_mid_append(url, key_dir, "pg", 3)
    _check(url, key_dir, "pg", acked, last_id)


EXITING = textwrap.dedent(
    """
    import sys
    from infrafabric.witness import configure, log_operation
    configure(url=sys.argv[1], key_dir=sys.argv[2])
    for i in range(3000):
        log_operation("IF.coordinator", "task_claimed", {"i": i})
    # no flush, no close: a normal interpreter exit must still make every entry durable
    """
)


@pytest.mark.chaos
def test_normal_exit_without_flush_loses_nothing(tmp_path: Path) -> None:
    url, key_dir = f"sqlite:///{tmp_path / 'exit.db'}", tmp_path / "keys"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", EXITING, url, str(key_dir)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    w = Witness(url, key_dir)
    try:
        assert [e["params"]["i"] for e in w.query()] == list(range(3000))
        assert w.verify().ok
    finally:
        w.close()


@pytest.mark.chaos
@pytest.mark.postgres
@pytest.mark.slow
def test_database_crash_and_restart_loses_nothing(tmp_path: Path) -> None:
    """PostgreSQL is SIGKILLed under a live witness: appends queue up, flush reports the outage, and
    after the restart every entry is committed exactly once, in order, in one verifying chain."""
    from backends.servers.postgres import PostgresServer
    from infrafabric.witness import WitnessError

    server = PostgresServer().start()  # private server: the shared fixture must not be killed
    w: Witness | None = None
    try:
        url = server.create_database("witness_chaos")
        w = Witness(url, tmp_path / "keys")
        for i in range(300):
            w.log("IF.governor", "budget_changed", {"i": i})
        w.flush()
        server.kill()
        for i in range(300, 600):  # accepted while the database is down: log() never blocks
            w.log("IF.governor", "budget_changed", {"i": i})
        with pytest.raises(WitnessError):
            w.flush(timeout=2)
        assert w.pending > 0
        server.start()
        w.flush(timeout=60)
        entries = w.query()
        assert [e["params"]["i"] for e in entries] == list(range(600))
        assert w.verify(all_signatures=True).ok
    finally:
        if w is not None:
            w.close(timeout=10)
        server.stop()
