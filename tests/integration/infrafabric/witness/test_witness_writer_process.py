"""The SQLite writer process of a witness: what it is given, and what survives its death.

The process seals and commits; the parent keeps the queue. Whatever happens to the process (SIGKILL
with batches in flight, an exit between COMMIT and its answer, an error it reports), every entry the
parent acknowledged is stored once, in order, in a chain that verifies, and the witness goes on with
a new process.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization

from infrafabric.witness import Witness, WitnessInputError, WitnessStorageError
from infrafabric.witness.merkle import CompactRange
from infrafabric.witness import writer_process

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def _witness(tmp_path: Path, **options: object) -> Witness:
    return Witness(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "keys", **options)  # type: ignore[arg-type]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _assert_exactly_once_in_order(w: Witness, n: int) -> None:
    entries = w.query(operation="op")
    assert [e["params"]["i"] for e in entries] == list(range(n)), "an entry is missing, doubled or out of order"
    assert len({e["id"] for e in entries}) == n
    report = w.verify(all_signatures=True)
    assert report.ok, report.problems[:3]


def test_sqlite_logs_are_written_by_a_process_that_never_sees_the_key_in_argv_or_env(tmp_path: Path) -> None:
    w = _witness(tmp_path)
    try:
        assert w.writer == "process"
        assert w.writer_pid is None  # started with the first batch
        w.log("IF.x", "op", {"i": 0})
        w.flush()
        pid = w.writer_pid
        assert pid is not None and pid != os.getpid()
        child = psutil.Process(pid)
        assert "infrafabric.witness.writer_child" in child.cmdline()
        key = w._keys.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                serialization.NoEncryption())
        exposed = " ".join(child.cmdline()) + " ".join(f"{k}={v}" for k, v in child.environ().items())
        assert key.hex() not in exposed and key.hex().upper() not in exposed
        assert not [f for f in child.open_files() if "keys" in f.path]  # the key file is not opened there
    finally:
        w.close()
    _wait_for(lambda: _gone(pid))  # close ends the process


def test_writer_modes_are_chosen_by_store_argument_and_environment(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with Witness("memory://") as w:
        assert w.writer == "thread"  # nothing to gain from a process without a file
    with pytest.raises(WitnessInputError) as info:
        Witness("memory://", writer="process")
    assert info.value.error_code == "WITNESS_INVALID_CONFIG"
    with pytest.raises(WitnessInputError) as info:
        _witness(tmp_path, writer="fork")
    assert info.value.error_code == "WITNESS_INVALID_CONFIG"
    monkeypatch.setenv("INFRAFABRIC_WITNESS_WRITER", "thread")
    w = _witness(tmp_path)
    try:
        assert w.writer == "thread"
        w.log("IF.x", "op", {"i": 0})
        w.flush()
        assert w.writer_pid is None
    finally:
        w.close()
    w = _witness(tmp_path, writer="process")  # the argument wins over the environment
    try:
        assert w.writer == "process"
    finally:
        w.close()


def test_sigkill_of_the_writer_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    w = _witness(tmp_path, max_batch=512)
    n = 30_000
    acknowledged: list[int] = []
    pids: set[int] = set()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for i in range(n):
                w.log("IF.x", "op", {"i": i})
                if i % 3000 == 2999:
                    acknowledged.append(w.flush(timeout=60))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    try:
        producer = threading.Thread(target=produce)
        producer.start()
        for _ in range(3):  # kill whichever writer process is running, three times, mid-stream
            _wait_for(lambda: w.writer_pid is not None and w.writer_pid not in pids, timeout=30)
            pid = w.writer_pid
            assert pid is not None
            pids.add(pid)
            time.sleep(0.05)  # let it take some batches
            os.kill(pid, signal.SIGKILL)
        producer.join(120)
        assert not errors, errors
        assert acknowledged == sorted(acknowledged) and acknowledged[-1] >= n
        assert w.flush() == n
        assert w.writer_pid not in pids  # a new process took over
        _assert_exactly_once_in_order(w, n)
    finally:
        w.close()


def test_exit_between_commit_and_answer_is_reconciled_from_the_database(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Each writer process exits right after its second commit, before answering it: the parent must learn
    from the database that the batch is there, and must not send it again."""
    monkeypatch.setattr(writer_process, "CHILD_MODULE", "tests.fixtures.crashing_witness_writer")  # every one
    w = _witness(tmp_path, max_batch=100)
    pids: set[int] = set()
    try:
        for i in range(2000):
            w.log("IF.x", "op", {"i": i})
            if w.writer_pid is not None:
                pids.add(w.writer_pid)
            if i % 250 == 249:
                assert w.flush(timeout=60) == i + 1
        assert w.flush(timeout=60) == 2000
        assert len(pids) >= 2  # processes did exit mid-stream and were replaced
        _assert_exactly_once_in_order(w, 2000)
    finally:
        w.close()


def test_an_error_of_the_writer_process_reaches_flush_with_its_code(tmp_path: Path) -> None:
    """A rolled-back database (rows removed behind the witness's back): the writer process refuses to write
    a second history over acknowledged entries, and flush says why with the error code."""
    w = _witness(tmp_path)
    try:
        for i in range(100):
            w.log("IF.x", "op", {"i": i})
        w.flush()
        kept = w.entries()[:50]
        edge = CompactRange()
        for entry in kept:
            edge.append(entry.leaf())
        with sqlite3.connect(tmp_path / "w.db") as con:  # what a restore of an older backup looks like
            con.execute("DELETE FROM witness_entries WHERE seq >= 50")
            con.execute("UPDATE witness_head SET size = 50, head_hash = ?, frontier = ?",
                        (kept[-1].content_hash, edge.to_text()))
        w.log("IF.x", "op", {"i": 100})
        with pytest.raises(WitnessStorageError) as info:
            w.flush(timeout=2)
        assert info.value.error_code == "WITNESS_LOG_ROLLED_BACK"
        with sqlite3.connect(tmp_path / "w.db") as con:
            assert con.execute("SELECT count(*) FROM witness_entries").fetchone()[0] == 50  # nothing written
        with pytest.raises(WitnessStorageError):
            w.close(timeout=0.5)
        w._thread.join(10)
        assert not w._thread.is_alive()  # the writer gave up once close was requested
    finally:
        w.close()


PARENT = textwrap.dedent(
    """
    import sys, time
    from infrafabric.witness import Witness
    w = Witness(sys.argv[1], sys.argv[2])
    for i in range(1000):
        w.log("IF.x", "op", {"i": i})
    w.flush()
    print(w.writer_pid, flush=True)
    while True:
        for i in range(200):
            w.log("IF.x", "op", {"i": i})
        time.sleep(0.01)
    """
)


def test_a_killed_parent_leaves_no_writer_process_behind(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, f"sqlite:///{tmp_path / 'w.db'}", str(tmp_path / "keys")],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        _wait_for(lambda: _gone(pid), timeout=15)  # its input ends: it commits what it has and exits
    finally:
        if parent.poll() is None:
            parent.kill()
        if parent.stdout:
            parent.stdout.close()
    w = Witness(f"sqlite:///{tmp_path / 'w.db'}", tmp_path / "keys")
    try:
        assert w.size() >= 1000
        assert w.verify().ok
    finally:
        w.close()
