"""Keys and signatures: forgeries refused, wrong keys fail, private key file 0600, secrets never exported."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from infrafabric.witness import (
    Checkpoint,
    Witness,
    WitnessKeyError,
    WitnessKeys,
    load_or_create_keys,
    load_public_key,
    verify_export,
)
from infrafabric.witness.canonical import entry_line
from infrafabric.witness.keys import ENTRY_DOMAIN, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE

pytestmark = pytest.mark.security


def _export(make_witness, n: int = 20) -> tuple[Witness, str]:
    w = make_witness()
    for i in range(n):
        w.log("IF.governor", "budget_changed", {"i": i, "limit": "10.00"})
    return w, w.export_text()


def test_key_files_are_created_with_safe_permissions(tmp_path: Path) -> None:
    keys = load_or_create_keys(tmp_path / "k")
    private = tmp_path / "k" / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) & 0o077 == 0
    assert load_public_key(tmp_path / "k" / PUBLIC_KEY_FILE).public_bytes_raw() == keys.public_key.public_bytes_raw()
    assert load_or_create_keys(tmp_path / "k").key_id == keys.key_id  # stable across loads
    assert "PRIVATE" not in repr(keys) and keys.key_id in repr(keys)


def test_group_readable_private_key_is_refused(tmp_path: Path) -> None:
    load_or_create_keys(tmp_path / "k")
    os.chmod(tmp_path / "k" / PRIVATE_KEY_FILE, 0o644)
    with pytest.raises(WitnessKeyError) as info:
        load_or_create_keys(tmp_path / "k")
    assert info.value.error_code == "WITNESS_KEY_PERMISSIONS"


def test_log_verifies_only_under_its_own_public_key(make_witness) -> None:
    w, text = _export(make_witness)
    assert verify_export(text, w.public_key).ok
    other = WitnessKeys.generate().public_key
    report = verify_export(text, other)
    assert not report.ok and {"checkpoint_invalid", "forged"} <= report.kinds
    assert verify_export(text, other, all_signatures=True).signatures_checked == 20


def test_forged_entries_signed_by_another_key_are_refused(make_witness) -> None:
    w, text = _export(make_witness)
    attacker = WitnessKeys.generate()
    lines = text.rstrip("\n").split("\n")
    # re-sign every entry and the checkpoint with the attacker's key after editing one entry
    forged: list[str] = []
    prev = "0" * 64
    from infrafabric.witness.merkle import leaf_hash, root_of

    leaves = []
    for line in lines[:-1]:
        content = line[:-226] + "}"
        content = content.replace('"limit":"10.00"', '"limit":"99999"').replace(line[line.index('"prev_hash":"') + 13: line.index('"prev_hash":"') + 77], prev)
        h = hashlib.sha256(content.encode()).hexdigest()
        sig = attacker.private_key.sign(ENTRY_DOMAIN + bytes.fromhex(h))
        forged.append(entry_line(content, h, sig.hex()))
        leaves.append(leaf_hash(bytes.fromhex(h) + sig))
        prev = h
    cp = Checkpoint.create(attacker, len(leaves), root_of(leaves), "2026-01-01T00:00:00.000000Z")
    forged_text = "\n".join(forged + [cp.to_json()]) + "\n"
    # self-consistent under the attacker's key when the checkpoint is trusted for what it covers ...
    assert verify_export(forged_text, attacker.public_key, all_signatures=False).ok
    # ... but the default checks every signature, and these name closers signed for other hashes
    assert "forged" in verify_export(forged_text, attacker.public_key).kinds
    report = verify_export(forged_text, w.public_key)  # ... but not under the witness key
    assert not report.ok
    assert "checkpoint_invalid" in report.kinds and "forged" in report.kinds
    # and a checkpoint signed by the attacker is never accepted for the real key
    assert not cp.verify(w.public_key)


def test_checkpoint_fields_are_bound_by_the_signature(make_witness) -> None:
    w, _ = _export(make_witness)
    cp = w.latest_checkpoint()
    assert cp.verify(w.public_key)
    for change in ({"size": cp.size + 1}, {"root": "0" * 64}, {"timestamp": "2030-01-01T00:00:00.000000Z"}):
        assert not Checkpoint(**{**cp.__dict__, **change}).verify(w.public_key)


def test_exports_never_contain_the_private_key(make_witness, tmp_path: Path) -> None:
    w, text = _export(make_witness)
    private_pem = (tmp_path / "witness-keys" / PRIVATE_KEY_FILE).read_text()
    body = "".join(private_pem.strip().splitlines()[1:-1])
    for fmt in ("jsonl", "json", "csv"):
        out = w.export_text(fmt)
        assert body not in out and "PRIVATE KEY" not in out
