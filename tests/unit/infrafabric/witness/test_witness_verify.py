"""Verification of an exported log with only the public key: every kind of tampering is detected and named."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from infrafabric.witness import Checkpoint, Witness, WitnessKeys, verify_export
from infrafabric.witness.canonical import entry_line
from infrafabric.witness.keys import ENTRY_DOMAIN

N = 60


@pytest.fixture(scope="module")
def logged() -> tuple[Witness, str, Checkpoint]:
    w = Witness("memory://")
    early = None
    for i in range(N):
        w.log("IF.coordinator" if i % 3 else "IF.governor", "task_claimed", {"i": i, "who": f"swarm-{i % 7}"},
              trace_id=f"trace-{i % 5}")
        if i == 39:
            early = w.latest_checkpoint()
    text = w.export_text()
    assert early is not None
    yield w, text, early
    w.close()


def entry_lines(text: str) -> tuple[list[str], list[str]]:
    lines = text.rstrip("\n").split("\n")
    return [l for l in lines if not l.startswith('{"type"')], [l for l in lines if l.startswith('{"type"')]


def join(entries: list[str], tail: list[str]) -> str:
    return "\n".join(entries + tail) + "\n"


def test_untouched_export_verifies(logged) -> None:
    w, text, early = logged
    report = verify_export(text, w.public_key, trusted_checkpoints=[early])
    assert report.ok, report.problems
    assert report.entries == N and len(report.checkpoints_verified) == 2
    full = verify_export(text, w.public_key, all_signatures=True)
    assert full.ok and full.signatures_checked == N


def test_json_document_export_verifies_and_detects_edits(logged) -> None:
    w, _, _ = logged
    doc = w.export_text("json")
    assert verify_export(doc, w.public_key).ok
    data = json.loads(doc)
    data["entries"][4]["params"]["i"] = 999
    report = verify_export(json.dumps(data), w.public_key)
    assert not report.ok and ("edited", 4) in {(p.kind, p.seq) for p in report.problems}


def test_edited_entry_is_named(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    entries[5] = entries[5].replace('"i":5', '"i":6')
    report = verify_export(join(entries, tail), w.public_key)
    assert ("edited", 5) in {(p.kind, p.seq) for p in report.problems}


def test_edit_with_recomputed_hash_is_a_forgery(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    content = entries[12][: -226] + "}"
    forged_content = content.replace('"i":12', '"i":1200')
    new_hash = hashlib.sha256(forged_content.encode()).hexdigest()
    other = WitnessKeys.generate()
    signature = other.private_key.sign(ENTRY_DOMAIN + bytes.fromhex(new_hash)).hex()
    entries[12] = entry_line(forged_content, new_hash, signature)
    report = verify_export(join(entries, tail), w.public_key)
    kinds = {(p.kind, p.seq) for p in report.problems}
    assert ("forged", 12) in kinds and "checkpoint_mismatch" in report.kinds


def test_deleted_entry_is_named(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    del entries[10]
    report = verify_export(join(entries, tail), w.public_key)
    assert ("deleted", 10) in {(p.kind, p.seq) for p in report.problems}


def test_inserted_entry_is_named(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    entries.insert(21, entries[3])
    report = verify_export(join(entries, tail), w.public_key)
    assert any(p.kind == "inserted" and p.seq == 3 and p.position == 21 for p in report.problems)


def test_reordered_entries_are_named(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    entries[7], entries[8] = entries[8], entries[7]
    report = verify_export(join(entries, tail), w.public_key)
    assert ("reordered", 7) in {(p.kind, p.seq) for p in report.problems}


def test_truncation_is_named_by_the_checkpoint(logged) -> None:
    w, text, early = logged
    entries, tail = entry_lines(text)
    report = verify_export(join(entries[:-5], tail), w.public_key)
    assert any(p.kind == "truncated" and p.seq == N - 5 for p in report.problems)
    # the attacker also strips the checkpoint: nothing anchors the size any more ...
    stripped = verify_export(join(entries[:30], []), w.public_key)
    assert "no_checkpoint" in stripped.kinds
    # ... but a checkpoint the verifier obtained earlier still exposes it
    anchored = verify_export(join(entries[:30], []), w.public_key, trusted_checkpoints=[early])
    assert "truncated" in anchored.kinds


def test_signature_field_edit_detected_even_without_per_entry_checks(logged) -> None:
    w, text, _ = logged
    entries, tail = entry_lines(text)
    line = entries[2]
    sig_start = len(line) - 2 - 128
    flipped = "1" if line[sig_start + 5] != "1" else "2"
    entries[2] = line[: sig_start + 5] + flipped + line[sig_start + 6:]
    report = verify_export(join(entries, tail), w.public_key)
    assert ("forged", 2) in {(p.kind, p.seq) for p in report.problems}


def _tamper(rng: random.Random, text: str, w: Witness) -> tuple[str, str | bytes]:
    entries, tail = entry_lines(text)
    op = rng.choice(["flip", "drop", "insert", "reorder", "truncate"])
    if op == "flip":
        data = bytearray(text.encode())
        pos = rng.randrange(len(data))
        data[pos] = (data[pos] + rng.randrange(1, 256)) % 256
        return op, bytes(data)
    if op == "drop":
        del entries[rng.randrange(len(entries))]
    elif op == "insert":
        pos = rng.randrange(len(entries) + 1)
        if rng.random() < 0.5:
            entries.insert(pos, entries[rng.randrange(len(entries))])  # replay a genuine entry
        else:  # forge a fresh entry with a plausible seq, signed by another key
            other = WitnessKeys.generate()
            src = entries[rng.randrange(len(entries))][: -226] + "}"
            content = src.replace('"severity":"INFO"', '"severity":"HIGH"')
            h = hashlib.sha256(content.encode()).hexdigest()
            entries.insert(pos, entry_line(content, h, other.private_key.sign(ENTRY_DOMAIN + bytes.fromhex(h)).hex()))
    elif op == "reorder":
        i, j = rng.sample(range(len(entries)), 2)
        entries[i], entries[j] = entries[j], entries[i]
    else:
        entries = entries[: rng.randrange(len(entries))]
    return op, join(entries, tail)


def test_one_thousand_random_tamper_trials_are_all_detected(logged) -> None:
    w, text, _ = logged
    rng = random.Random(20261122)
    seen: dict[str, int] = {}
    for trial in range(1000):
        op, tampered = _tamper(rng, text, w)
        seen[op] = seen.get(op, 0) + 1
        report = verify_export(tampered, w.public_key)
        assert not report.ok, f"trial {trial} ({op}) went undetected"
        assert report.problems and all(p.kind and p.message for p in report.problems)
    assert set(seen) == {"flip", "drop", "insert", "reorder", "truncate"} and min(seen.values()) > 150
