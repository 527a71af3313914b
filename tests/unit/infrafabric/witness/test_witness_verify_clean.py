"""The clean-log fast path of verification gives the full analysis's report, or steps aside.

Small blocks (8 entries) make the span splitting, the forked workers and the Merkle block roots run
on logs of a few dozen entries.
"""

from __future__ import annotations

import os
import random
import signal

import pytest

from infrafabric.witness import Witness, verify_export
from infrafabric.witness import verify_clean
from infrafabric.witness.merkle import root_of
from infrafabric.witness.verify_clean import verify_clean_text

from .test_witness_verify import _tamper, entry_lines, join


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_clean, "BLOCK", 8)


def _log(n: int, group: int) -> tuple[Witness, str, list]:
    w = Witness("memory://", entries_per_signature=group)
    early = []
    for i in range(n):
        w.log("IF.chassis" if i % 2 else "IF.governor", "op", {"i": i, "note": "x" * (i % 13)},
              trace_id=None if i % 4 else f"t-{i}")
        if i in (n // 3, n // 2):
            early.append(w.latest_checkpoint())  # flushed: the log is cut into several batches
    return w, w.export_text(), early


@pytest.fixture(scope="module", params=[(67, 1), (70, 5), (64, 16), (131, 256)], ids=lambda p: f"n{p[0]}-g{p[1]}")
def log(request: pytest.FixtureRequest):
    w, text, early = _log(*request.param)
    yield w, text, early
    w.close()


def _both(text: str, w: Witness, **kw) -> tuple[dict, dict]:
    fast = verify_export(text, w.public_key, **kw)
    full = verify_export(text, w.public_key, fast_path=False, **kw)
    return fast.to_dict(), full.to_dict()


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("all_signatures", [False, True])
def test_clean_report_is_the_full_report(log, workers: int, all_signatures: bool) -> None:
    w, text, early = log
    for trusted in ([], early):
        report = verify_clean_text(text, w.public_key, trusted, all_signatures=all_signatures, workers=workers)
        assert report is not None, "an intact log must be proved intact by the fast path"
        full = verify_export(text, w.public_key, trusted_checkpoints=trusted, all_signatures=all_signatures,
                             fast_path=False)
        assert report.to_dict() == full.to_dict()
        assert report.ok and report.entries == full.entries


def test_tampered_logs_are_left_to_the_full_analysis(log) -> None:
    w, text, early = log
    rng = random.Random(7)
    for trial in range(60):
        _, tampered = _tamper(rng, text, w)
        tampered = tampered.decode("utf-8", "replace") if isinstance(tampered, bytes) else tampered
        assert verify_clean_text(tampered, w.public_key, early, workers=3) is None, f"trial {trial}"
        fast, full = _both(tampered, w, trusted_checkpoints=early)
        assert fast == full and not fast["ok"]


def test_a_member_with_another_groups_signature_is_not_clean() -> None:
    w, text, _ = _log(40, 8)
    entries, tail = entry_lines(text)
    swapped = entries[:]
    swapped[0] = swapped[0][:-130] + entries[-1][-130:]
    assert verify_clean_text(join(swapped, tail), w.public_key, workers=2) is None
    assert not verify_export(join(swapped, tail), w.public_key).ok
    w.close()


def test_no_checkpoint_or_empty_log_is_not_clean(log) -> None:
    w, text, _ = log
    entries, _ = entry_lines(text)
    assert verify_clean_text(join(entries, []), w.public_key) is None
    assert verify_clean_text("", w.public_key) is None
    assert verify_export(join(entries, []), w.public_key).kinds == {"no_checkpoint"}


@pytest.mark.parametrize("n", [1, 7, 8, 9, 16, 17, 63, 64, 65, 200])
def test_block_roots_give_the_root_of_all_leaves(n: int) -> None:
    leaves = [os.urandom(32) for _ in range(n)]
    chunks = []
    lo = 0
    for hi in sorted({*random.Random(n).sample(range(0, n + 1, 8), k=min(3, n // 8 + 1)), n} - {0}):
        part = leaves[lo:hi]
        tops = [root_of(part[i : i + 8]) for i in range(0, len(part), 8)]
        chunks.append(verify_clean._Chunk(lo, hi, [], b"".join(part), tops))
        lo = hi
    assert verify_clean._root(chunks) == root_of(leaves)


def test_line_start_finds_every_line() -> None:
    rng = random.Random(3)
    lines = ["x" * rng.randrange(1, 40) for _ in range(500)]
    text = "\n".join(lines)
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    for k in range(0, 500, 7):
        assert verify_clean._line_start(text, k, len(text), 500) == starts[k]


def _misbehaving_child(monkeypatch: pytest.MonkeyPatch, how: str) -> list[int]:
    parent = os.getpid()
    real = verify_clean._clean_chunk
    forks: list[int] = []
    real_fork = verify_clean._fork_chunk

    def fork(text, span):
        forks.append(span.lo)
        return real_fork(text, span)

    def chunk(text, span):
        if os.getpid() != parent:
            if how == "die":
                os._exit(3)
            if how == "stall":
                signal.pause()
            if how == "garbage":
                return "not a chunk"
        return real(text, span)

    monkeypatch.setattr(verify_clean, "_fork_chunk", fork)
    monkeypatch.setattr(verify_clean, "_clean_chunk", chunk)
    monkeypatch.setattr(verify_clean, "CHILD_PATIENCE_MIN", 0.5)
    return forks


@pytest.mark.parametrize("how", ["none", "die", "stall", "garbage"])
def test_children_that_fail_leave_the_same_answer(log, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    w, text, early = log
    expected = verify_export(text, w.public_key, trusted_checkpoints=early, fast_path=False).to_dict()
    forks = _misbehaving_child(monkeypatch, how)
    report = verify_clean_text(text, w.public_key, early, workers=3)
    assert forks, "the log should have been split over forked workers"
    assert report is not None and report.to_dict() == expected
