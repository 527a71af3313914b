"""Several writers, one chain: 8 threads × 10,000 entries, and separate processes sharing one log."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from infrafabric.witness import Witness

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())

WRITER = textwrap.dedent(
    """
    import sys
    from infrafabric.witness import Witness
    url, key_dir, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    w = Witness(url, key_dir)
    for i in range(count):
        w.log("IF.coordinator", "task_claimed", {"writer": tag, "i": i})
        if i % 1000 == 999:
            w.flush()
    w.close()
    print("done", tag, flush=True)
    """
)


def _check_one_chain(w: Witness, writers: list[str], per_writer: int) -> None:
    entries = w.query()
    total = len(writers) * per_writer
    assert [e["seq"] for e in entries] == list(range(total))
    keys = [(e["params"]["writer"], e["params"]["i"]) for e in entries]
    assert len(set(keys)) == total, "duplicates"
    assert set(keys) == {(t, i) for t in writers for i in range(per_writer)}, "lost entries"
    for tag in writers:  # each writer's own entries keep their order
        mine = [i for t, i in keys if t == tag]
        assert mine == sorted(mine)
    report = w.verify()
    assert report.ok, report.problems[:5]
    assert report.checkpoints_verified[0].size == total


@pytest.mark.slow
def test_eight_threads_ten_thousand_entries_each(make_witness) -> None:
    w = make_witness()
    writers = [f"t{i}" for i in range(8)]

    def run(tag: str) -> None:
        for i in range(10_000):
            w.log("IF.coordinator", "task_claimed", {"writer": tag, "i": i})

    threads = [threading.Thread(target=run, args=(t,)) for t in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.flush()
    _check_one_chain(w, writers, 10_000)


def _run_processes(url: str, key_dir: Path, writers: list[str], count: int) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(key_dir), tag, str(count)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for tag in writers]
    deadline = time.monotonic() + 120
    for p in procs:
        out, err = p.communicate(timeout=max(deadline - time.monotonic(), 1))
        assert p.returncode == 0, err[-2000:]
        assert out.startswith("done")


@pytest.mark.slow
def test_separate_processes_share_one_sqlite_chain(tmp_path: Path, make_witness) -> None:
    url, key_dir = f"sqlite:///{tmp_path / 'shared.db'}", tmp_path / "keys"
    writers = [f"p{i}" for i in range(8)]
    _run_processes(url, key_dir, writers, 2_500)
    _check_one_chain(make_witness(url, key_dir), writers, 2_500)


@pytest.mark.slow
@pytest.mark.postgres
def test_separate_processes_share_one_postgres_chain(postgres_server, tmp_path: Path, make_witness) -> None:
    url, key_dir = postgres_server.create_database(), tmp_path / "keys"
    writers = [f"p{i}" for i in range(4)]
    _run_processes(url, key_dir, writers, 1_500)
    _check_one_chain(make_witness(url, key_dir), writers, 1_500)
