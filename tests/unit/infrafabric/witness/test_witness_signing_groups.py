"""Entries signed in groups: one Ed25519 signature covers the closing entry's hash, and through the
hash chain every member of the group. These tests fail when a group rule of the verifier is dropped."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
from pathlib import Path

import pytest

from infrafabric.witness import Witness, verify_export
from infrafabric.witness.canonical import entry_line, split_entry_line
from infrafabric.witness.errors import WitnessInputError, WitnessStorageError

N = 60
GROUP = 4


def _entries(text: str) -> tuple[list[str], list[str]]:
    lines = text.rstrip("\n").split("\n")
    return [l for l in lines if not l.startswith('{"type"')], [l for l in lines if l.startswith('{"type"')]


def _join(entries: list[str], tail: list[str]) -> str:
    return "\n".join(entries + tail) + "\n"


def _fields(line: str) -> tuple[dict, str, str]:
    parts = split_entry_line(line)
    assert parts is not None
    content, content_hash, signature = parts
    return json.loads(content), content_hash, signature


@pytest.fixture(scope="module")
def grouped() -> tuple[Witness, str]:
    w = Witness("memory://", entries_per_signature=GROUP)
    for i in range(N):
        w.log("IF.coordinator", "task_claimed", {"i": i})
    text = w.export_text()
    yield w, text
    w.close()


def _a_member_of_a_group_of_two_or_more(text: str) -> int:
    entries, _ = _entries(text)
    for line in entries:
        data, _, _ = _fields(line)
        if data["sig_seq"] > data["seq"]:
            return data["seq"]
    raise AssertionError("every group had one entry: the batching never grouped")


def test_groups_are_contiguous_bounded_and_share_the_closing_signature(grouped) -> None:
    w, text = grouped
    entries, _ = _entries(text)
    rows = [_fields(line) for line in entries]
    by_seq = {data["seq"]: (data, h, sig) for data, h, sig in rows}
    closers = set()
    for data, _, sig in rows:
        seq, closes = data["seq"], data["sig_seq"]
        assert seq <= closes < seq + GROUP
        closer, closer_hash, closer_sig = by_seq[closes]
        assert closer["sig_seq"] == closes and closer_sig == sig
        closers.add(closes)
    assert len(closers) >= N // GROUP  # at most GROUP entries per signature
    assert len(closers) < N  # ... and fewer signatures than entries
    _a_member_of_a_group_of_two_or_more(text)
    report = verify_export(text, w.public_key, all_signatures=True)
    assert report.ok, report.problems
    assert report.signatures_checked == N


def test_entries_per_signature_one_signs_every_entry() -> None:
    with Witness("memory://", entries_per_signature=1) as w:
        for i in range(20):
            w.log("IF.chassis", "swarm_loaded", {"i": i})
        rows = [_fields(line) for line in _entries(w.export_text())[0]]
        assert all(data["sig_seq"] == data["seq"] for data, _, _ in rows)
        assert len({sig for _, _, sig in rows}) == 20
        assert w.verify(all_signatures=True).ok


@pytest.mark.parametrize("bad", [0, -1, "4", 2.5, None])
def test_entries_per_signature_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(WitnessInputError) as err:
        Witness("memory://", entries_per_signature=bad)
    assert err.value.error_code == "WITNESS_INVALID_CONFIG"


def test_flipped_signature_of_one_member_names_that_member(grouped) -> None:
    w, text = grouped
    target = _a_member_of_a_group_of_two_or_more(text)
    entries, tail = _entries(text)
    line = entries[target]
    pos = len(line) - 2 - 128 + 7
    entries[target] = line[:pos] + ("1" if line[pos] != "1" else "2") + line[pos + 1:]
    report = verify_export(_join(entries, tail), w.public_key)
    forged = {p.seq for p in report.problems if p.kind == "forged"}
    assert forged == {target}


def test_truncation_inside_a_group_is_seen_without_any_checkpoint(grouped) -> None:
    w, text = grouped
    target = _a_member_of_a_group_of_two_or_more(text)
    entries, _ = _entries(text)
    # the attacker cuts the log just before the member's closing entry and strips every checkpoint
    closes = _fields(entries[target])[0]["sig_seq"]
    report = verify_export(_join(entries[:closes], []), w.public_key)
    assert any(p.kind == "truncated" and p.seq is not None and p.seq <= target for p in report.problems)


def test_an_entry_cannot_borrow_an_earlier_groups_signature(grouped) -> None:
    """An appended entry that names an earlier closer (sig_seq < seq) and copies its signature is forged."""
    w, text = grouped
    entries, _ = _entries(text)
    last, last_hash, last_sig = _fields(entries[-1])
    fake = dict(last, seq=last["seq"] + 1, prev_hash=last_hash, id="ffffffffffff" + "0" * 20,
                params={"i": "injected"}, sig_seq=last["seq"])
    content = json.dumps(fake, sort_keys=True, separators=(",", ":"))
    forged_line = entry_line(content, hashlib.sha256(content.encode()).hexdigest(), last_sig)
    report = verify_export(_join(entries + [forged_line], []), w.public_key)
    assert ("forged", last["seq"] + 1) in {(p.kind, p.seq) for p in report.problems}


def test_damaged_closer_leaves_its_members_unverified(grouped) -> None:
    w, text = grouped
    target = _a_member_of_a_group_of_two_or_more(text)
    entries, tail = _entries(text)
    closes = _fields(entries[target])[0]["sig_seq"]
    entries[closes] = entries[closes].replace('"task_claimed"', '"task_claimeD"')
    report = verify_export(_join(entries, tail), w.public_key, all_signatures=True)
    kinds = {(p.kind, p.seq) for p in report.problems}
    assert ("edited", closes) in kinds
    assert any(p.kind == "unverified" and p.seq is not None and p.seq <= target for p in report.problems)


def test_three_hundred_random_tamper_trials_on_grouped_signatures(grouped) -> None:
    w, text = grouped
    rng = random.Random(7)
    for trial in range(300):
        entries, tail = _entries(text)
        op = rng.choice(["flip", "drop", "reorder", "truncate"])
        if op == "flip":
            data = bytearray(text.encode())
            pos = rng.randrange(len(data))
            data[pos] = (data[pos] + rng.randrange(1, 256)) % 256
            tampered: str | bytes = bytes(data)
        elif op == "drop":
            del entries[rng.randrange(len(entries))]
            tampered = _join(entries, tail)
        elif op == "reorder":
            i, j = rng.sample(range(len(entries)), 2)
            entries[i], entries[j] = entries[j], entries[i]
            tampered = _join(entries, tail)
        else:
            tampered = _join(entries[: rng.randrange(len(entries))], tail)
        assert not verify_export(tampered, w.public_key).ok, f"trial {trial} ({op}) went undetected"


def test_a_log_written_by_the_old_entry_format_is_refused_clearly(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE witness_entries (seq INTEGER PRIMARY KEY, id TEXT, timestamp TEXT, component TEXT,"
                " operation TEXT, params TEXT, severity TEXT, trace_id TEXT, prev_hash TEXT, content_hash TEXT,"
                " signature TEXT)")
    con.commit()
    con.close()
    with pytest.raises(WitnessStorageError) as err:
        Witness(f"sqlite:///{db}", tmp_path / "keys")
    assert err.value.error_code == "WITNESS_SCHEMA_MISMATCH"
