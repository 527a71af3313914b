"""IF.witness under attack by someone with write access to the database (or an export) but not the key.

Each attack is what an outside party did to the log on main: rewrite an old entry, recompute the chain
and the head row and let the platform carry on logging; cut the tail together with its checkpoints
(roll the database back to an older, genuinely signed state); put wrong-typed values into any column of
any row; add unsigned fields or duplicate keys to an export; ask for a proof of an edited entry; verify
with nothing but the public key. Real SQLite files and a real PostgreSQL; the attacker writes with SQL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from infrafabric.cli.witness import app as witness_app
from infrafabric.witness import Witness, WitnessProofError, WitnessStorageError, load_public_key, verify_export
from infrafabric.witness.canonical import content_text
from infrafabric.witness.keys import PUBLIC_KEY_FILE
from infrafabric.witness.merkle import CompactRange, leaf_hash
from infrafabric.witness.publish import PublishedCheckpoint, default_published_file
from infrafabric.witness.store.sql import normalise_sql_url
from infrafabric.witness.verify_store import verify_url

pytestmark = pytest.mark.security
runner = CliRunner()
COLUMNS = ("seq", "id", "timestamp", "component", "operation", "params", "severity", "trace_id", "prev_hash",
           "content_hash", "signature", "sig_seq")


# ---------------------------------------------------------------------- the attacker's tools (SQL only)
async def _rewrite_without_key(url: str, seq: int, params: dict[str, Any], forge_extra: int = 0) -> None:
    """Edit entry ``seq``'s params, re-chain every later entry, optionally append forged rows, and rewrite
    the head row (size, hash, tree edge) to match: everything but a signature, which needs the key."""
    engine = create_async_engine(normalise_sql_url(url))
    try:
        async with engine.begin() as conn:
            rows = [list(r) for r in (await conn.execute(text(
                f"SELECT {', '.join(COLUMNS)} FROM witness_entries ORDER BY seq"))).all()]
            rows[seq][5] = json.dumps(params, sort_keys=True, separators=(",", ":"))
            for extra in range(forge_extra):
                last = rows[-1]
                rows.append([last[0] + 1, f"forged{extra:026d}", last[2], "IF.optimise", "cost_tracked",
                             '{"cost":"0.01"}', "INFO", None, "", "", last[10], last[0] + 1])
            prev = rows[seq - 1][9] if seq else "0" * 64
            for row in rows[seq:]:
                row[8] = prev
                body = content_text(seq=row[0], entry_id=row[1], timestamp=row[2], component=row[3],
                                    operation=row[4], params_json=row[5], severity=row[6], trace_id=row[7],
                                    prev_hash=row[8], sig_seq=row[11])
                row[9] = prev = hashlib.sha256(body.encode()).hexdigest()
            await conn.execute(text("DELETE FROM witness_entries WHERE seq >= :s"), {"s": seq})
            await conn.execute(text(f"INSERT INTO witness_entries ({', '.join(COLUMNS)}) VALUES "
                                    f"({', '.join(':' + c for c in COLUMNS)})"),
                               [dict(zip(COLUMNS, r)) for r in rows[seq:]])
            edge = CompactRange()
            edge.extend([leaf_hash(bytes.fromhex(r[9]) + bytes.fromhex(r[10])) for r in rows])
            await conn.execute(text("UPDATE witness_head SET size = :n, head_hash = :h, frontier = :f WHERE id = 1"),
                               {"n": len(rows), "h": rows[-1][9], "f": edge.to_text()})
    finally:
        await engine.dispose()


def _count(url: str) -> int:
    async def run() -> int:
        engine = create_async_engine(normalise_sql_url(url))
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(text("SELECT count(*) FROM witness_entries"))).scalar_one())
        finally:
            await engine.dispose()
    return asyncio.run(run())


@pytest.fixture(params=["sqlite-process", "sqlite-thread", pytest.param("postgres", marks=pytest.mark.postgres)])
def log_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(url, writer): the default SQLite writer process, the writer thread, and PostgreSQL."""
    if request.param.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'attacked.db'}", request.param.split("-")[1]
    import uuid

    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"witness_attack_{uuid.uuid4().hex[:10]}"), "thread"


def _abandon(w: Witness) -> None:
    """Close a witness whose writer refuses its entries: close reports the refusal, fast, and stops."""
    with pytest.raises(WitnessStorageError):
        w.close(timeout=30)
    assert not w._thread.is_alive()


def _populate(url: str, key_dir: Path, writer: str, n: int = 600) -> Witness:
    w = Witness(url, key_dir, writer=writer)
    for i in range(n):
        w.log("IF.governor", "budget_changed", {"i": i, "limit": "10.00"})
    w.flush()
    return w


# ---------------------------------------------------------------------- item 5: a key-less rewrite
@pytest.mark.parametrize("forge_extra", [0, 5])
def test_a_rewritten_head_is_never_signed_over_by_the_running_writer(log_url, tmp_path: Path, forge_extra: int) -> None:
    url, writer = log_url
    w = _populate(url, tmp_path / "keys", writer)
    try:
        asyncio.run(_rewrite_without_key(url, 10, {"i": 10, "limit": "99999.00"}, forge_extra))
        rewritten = _count(url)
        for i in range(10):  # the platform carries on
            w.log("IF.governor", "budget_changed", {"after": i})
        with pytest.raises(WitnessStorageError) as caught:
            w.flush(timeout=30)
        assert caught.value.error_code == "WITNESS_HEAD_REWRITTEN"
        assert _count(url) == rewritten  # nothing was appended (or signed) after the rewrite
        report = w.verify()
        assert not report.ok and "forged" in report.kinds, report.problems[:3]
    finally:
        _abandon(w)
    public = load_public_key(tmp_path / "keys" / PUBLIC_KEY_FILE)
    assert not verify_url(url, public).ok
    assert not verify_url(url, public, all_signatures=False).ok  # even trusting checkpoints: roots differ


def test_a_rewritten_head_is_refused_by_a_writer_started_afterwards(log_url, tmp_path: Path) -> None:
    url, writer = log_url
    _populate(url, tmp_path / "keys", writer).close()
    asyncio.run(_rewrite_without_key(url, 3, {"i": 3, "limit": "0.00"}, forge_extra=2))
    for publish in (None, ()):  # with the published anchor, and with publishing switched off
        w = Witness(url, tmp_path / "keys", writer=writer, publish=publish)
        try:
            w.log("IF.governor", "budget_changed", {"after": 1})
            with pytest.raises(WitnessStorageError) as caught:
                w.flush(timeout=30)
            assert caught.value.error_code == "WITNESS_HEAD_REWRITTEN"
            exported = w.export_text()
        finally:
            _abandon(w)
        public = load_public_key(tmp_path / "keys" / PUBLIC_KEY_FILE)
        assert not verify_export(exported, public).ok
        result = runner.invoke(witness_app, ["verify", "--url", url, "--key-dir", str(tmp_path / "keys")])
        assert result.exit_code == 1, result.output


# ---------------------------------------------------------------------- item 6: tail cut with its checkpoints
def test_a_log_rolled_back_to_an_older_signed_state_is_refused_and_reported(tmp_path: Path) -> None:
    db, keys = tmp_path / "log.db", tmp_path / "keys"
    url = f"sqlite:///{db}"
    w = _populate(url, keys, "process", n=300)
    w.close()
    for suffix in ("", "-wal", "-shm"):  # the attacker keeps a copy of the database as it was
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", tmp_path / f"old.db{suffix}")
    w = _populate(url, keys, "process", n=200)
    published = w.published_checkpoint()
    assert published is not None and published.checkpoint.size == 500
    kept = tmp_path / "kept.json"  # what the README tells the operator to keep elsewhere
    kept.write_text(published.to_json())
    w.close()
    for suffix in ("", "-wal", "-shm"):
        target = Path(f"{db}{suffix}")
        if (tmp_path / f"old.db{suffix}").exists():
            shutil.copy(tmp_path / f"old.db{suffix}", target)
        elif target.exists():
            target.unlink()
    opts = ["--url", url, "--key-dir", str(keys)]
    result = runner.invoke(witness_app, ["verify", *opts, "--json"])
    assert result.exit_code == 1
    assert "truncated" in {p["kind"] for p in json.loads(result.output)["problems"]}
    result = runner.invoke(witness_app, ["consistency", *opts, "--from", str(kept)])
    assert result.exit_code == 1 and not json.loads(result.output)["consistent"]
    w = Witness(url, keys)
    try:
        w.log("IF.governor", "budget_changed", {"after": "rollback"})
        with pytest.raises(WitnessStorageError) as caught:
            w.flush(timeout=30)
        assert caught.value.error_code == "WITNESS_LOG_ROLLED_BACK"
    finally:
        _abandon(w)
    assert _count(url) == 300


def test_consistency_command_proves_an_honest_log_extends_a_kept_checkpoint(tmp_path: Path) -> None:
    url, keys = f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "keys"
    w = _populate(url, keys, "process", n=77)
    kept = tmp_path / "kept.json"
    kept.write_text(w.published_checkpoint().to_json())
    for i in range(500):
        w.log("IF.governor", "budget_changed", {"more": i})
    w.close()
    result = runner.invoke(witness_app, ["consistency", "--url", url, "--key-dir", str(keys), "--from", str(kept)])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["consistent"] and (answer["first"], answer["second"]) == (77, 577) and answer["proof"]
    published = PublishedCheckpoint.from_json(default_published_file(keys, url).read_text())
    assert published.checkpoint.size == 577  # close() published the last checkpoint


def test_a_tampered_published_checkpoint_stops_the_writer_from_starting(tmp_path: Path) -> None:
    url, keys = f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "keys"
    _populate(url, keys, "process", n=20).close()
    path = default_published_file(keys, url)
    genuine = json.loads(path.read_text())
    for forged in ({**genuine, "size": genuine["size"] - 5}, {**genuine, "note": "unsigned"},
                   path.read_text().replace('"size"', '"size":1,"size"', 1)):
        path.write_text(forged if isinstance(forged, str) else json.dumps(forged))
        with pytest.raises(WitnessStorageError) as caught:
            Witness(url, keys)
        assert caught.value.error_code == "WITNESS_PUBLISHED_INVALID"
        public = load_public_key(keys / PUBLIC_KEY_FILE)
        from infrafabric.witness.publish import publishers_for
        from infrafabric.witness.keys import key_id_of

        report = verify_url(url, public, publishers=publishers_for(None, keys, key_id_of(public), url))
        assert "checkpoint_invalid" in report.kinds


# ---------------------------------------------------------------------- item 7: every column of every row
ENTRY_VALUES = ["abc", -1, 1.5, b"\x00\x01"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("template")
    w = Witness(f"sqlite:///{base / 'log.db'}", base / "keys", writer="thread", entries_per_signature=4)
    for i in range(20):
        w.log("IF.coordinator", "task_claimed", {"i": i}, trace_id="t-1" if i % 2 else None)
    w.close()
    return base / "log.db", base / "keys"


def _corrupted(template: tuple[Path, Path], tmp_path: Path, statement: str, value: Any) -> tuple[str, Path]:
    db, keys = template
    target = tmp_path / "log.db"
    shutil.copy(db, target)
    with sqlite3.connect(target) as con:
        con.execute(statement, (value,))
    return f"sqlite:///{target}", keys


# seq is SQLite's rowid: the engine itself refuses anything but an integer there
ENTRY_CASES = [pytest.param(c, v, id=f"{c}-{k}") for c in COLUMNS
               for k, v in zip(("text", "int", "real", "blob"), ENTRY_VALUES) if c != "seq" or k == "int"]


@pytest.mark.parametrize(("column", "value"), ENTRY_CASES)
def test_every_entry_column_corrupted_is_a_named_finding(template, tmp_path: Path, column: str, value: Any) -> None:
    url, keys = _corrupted(template, tmp_path, f"UPDATE witness_entries SET {column} = ? WHERE seq = 7", value)
    public = load_public_key(keys / PUBLIC_KEY_FILE)
    report = verify_url(url, public)  # public key only; never a traceback
    assert not report.ok and report.problems
    assert all(p.kind in ("malformed", "edited", "forged", "chain_broken", "checkpoint_mismatch", "deleted",
                          "inserted", "reordered", "unverified", "head_mismatch") for p in report.problems)
    result = runner.invoke(witness_app, ["verify", "--url", url, "--public-key", str(keys / PUBLIC_KEY_FILE),
                                         "--key-dir", str(tmp_path / "no-keys-here"), "--json"])
    assert result.exit_code == 1, result.output
    w = Witness(url, keys, writer="thread", publish=())
    try:
        with pytest.raises(WitnessProofError):  # no proof is handed out for a damaged entry (or log)
            w.inclusion_proof(7 if column not in ("seq",) else 8)
    finally:
        w.close()


@pytest.mark.parametrize("value", ["abc", -1, 1.5, b"\x00"], ids=["text", "int", "real", "blob"])
@pytest.mark.parametrize("column", ["size", "root", "timestamp", "key_id", "signature"])
def test_every_checkpoint_column_corrupted_is_a_named_finding(template, tmp_path: Path, column: str, value: Any) -> None:
    url, keys = _corrupted(template, tmp_path,
                           f"UPDATE witness_checkpoints SET {column} = ? WHERE size = (SELECT max(size) FROM witness_checkpoints)",
                           value)
    report = verify_url(url, load_public_key(keys / PUBLIC_KEY_FILE))
    assert not report.ok
    assert report.kinds & {"checkpoint_invalid", "checkpoint_mismatch", "truncated"}, report.problems


@pytest.mark.parametrize("value", ["abc", -1, 1.5, b"\x00"], ids=["text", "int", "real", "blob"])
@pytest.mark.parametrize("column", ["size", "head_hash", "frontier"])
def test_every_head_column_corrupted_is_found_and_stops_the_writer(template, tmp_path: Path, column: str, value: Any) -> None:
    url, keys = _corrupted(template, tmp_path, f"UPDATE witness_head SET {column} = ? WHERE id = 1", value)
    report = verify_url(url, load_public_key(keys / PUBLIC_KEY_FILE))
    assert "head_mismatch" in report.kinds, report.problems
    w = Witness(url, keys, writer="thread", publish=())
    try:
        w.log("IF.coordinator", "after", {})
        with pytest.raises(WitnessStorageError) as caught:
            w.flush(timeout=30)
        assert caught.value.error_code in ("WITNESS_HEAD_REWRITTEN", "WITNESS_LOG_ROLLED_BACK")
    finally:
        _abandon(w)


def test_the_public_key_stored_in_the_log_is_never_trusted(template, tmp_path: Path) -> None:
    from infrafabric.witness import WitnessKeys

    other = WitnessKeys.generate()
    url, keys = _corrupted(template, tmp_path, "UPDATE witness_head SET public_key = ? WHERE id = 1", other.public_pem)
    assert verify_url(url, load_public_key(keys / PUBLIC_KEY_FILE)).ok  # the verifier brings its own key
    assert not verify_url(url, other.public_key).ok


def test_verification_needs_only_the_public_key(template, tmp_path: Path) -> None:
    db, keys = template
    public_only = tmp_path / "public-only"
    public_only.mkdir()
    shutil.copy(keys / PUBLIC_KEY_FILE, public_only / PUBLIC_KEY_FILE)
    result = runner.invoke(witness_app, ["verify", "--url", f"sqlite:///{db}", "--key-dir", str(public_only)])
    assert result.exit_code == 0, result.output
    assert not (public_only / "private_key.pem").exists() and len(list(public_only.iterdir())) == 1


# ---------------------------------------------------------------------- item 7: strict exports
@pytest.fixture(scope="module")
def json_export(template) -> tuple[dict[str, Any], Any]:
    db, keys = template
    w = Witness(f"sqlite:///{db}", keys, writer="thread", publish=())
    try:
        return json.loads(w.export_text("json")), w.public_key
    finally:
        w.close()


def test_an_honest_json_export_verifies(json_export) -> None:
    doc, public = json_export
    assert verify_export(json.dumps(doc, indent=1), public).ok


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.integers(0, 19), name=st.text(min_size=1, max_size=12), value=st.text(max_size=12) | st.integers())
def test_an_unsigned_field_in_any_entry_is_a_finding(json_export, where: int, name: str, value: Any) -> None:
    doc, public = json_export
    entry = doc["entries"][where]
    if name in entry:
        return  # not an added field: edits of signed fields are covered elsewhere
    forged = {**doc, "entries": [*doc["entries"][:where], {**entry, name: value}, *doc["entries"][where + 1:]]}
    report = verify_export(json.dumps(forged), public)
    assert not report.ok and "malformed" in report.kinds


def test_refund_field_duplicate_keys_and_document_extras_are_findings(json_export) -> None:
    doc, public = json_export
    text_ = json.dumps({**doc, "entries": [{**doc["entries"][0], "refund": "100000.00"}, *doc["entries"][1:]]})
    assert "refund" in str(verify_export(text_, public).problems)
    honest = json.dumps(doc)
    first_params = json.dumps(doc["entries"][0]["params"], separators=(", ", ": "))
    # a second "params" before the genuine one: a lenient parser keeps the last, a reader may see the first
    duplicated = honest.replace('"params": ' + first_params, '"params": {"i": 999}, "params": ' + first_params, 1)
    assert duplicated != honest
    assert not verify_export(duplicated, public).ok
    assert not verify_export(json.dumps({**doc, "approved_by": "cfo"}), public).ok
    cp = doc["checkpoint"]
    assert "checkpoint_invalid" in verify_export(json.dumps({**doc, "checkpoint": {**cp, "x": 1}}), public).kinds


def test_a_jsonl_checkpoint_line_with_an_extra_field_is_a_finding(template) -> None:
    db, keys = template
    w = Witness(f"sqlite:///{db}", keys, writer="thread", publish=())
    try:
        lines = w.export_text().rstrip("\n").split("\n")
    finally:
        w.close()
    lines[-1] = lines[-1][:-1] + ',"refund":"100000.00"}'
    report = verify_export("\n".join(lines) + "\n", w.public_key)
    assert "checkpoint_invalid" in report.kinds


# ---------------------------------------------------------------------- item 7: proofs from re-hashed content
def test_prove_refuses_an_entry_edited_with_or_without_its_hash(template, tmp_path: Path) -> None:
    url, keys = _corrupted(template, tmp_path, "UPDATE witness_entries SET params = ? WHERE seq = 5", '{"i":500}')
    w = Witness(url, keys, writer="thread", publish=())
    try:
        with pytest.raises(WitnessProofError) as caught:
            w.inclusion_proof(5)
        assert caught.value.error_code == "WITNESS_ENTRY_EDITED"
        assert w.inclusion_proof(4)["checkpoint"] is not None  # the untouched entries still prove
    finally:
        w.close()
    # now the attacker also fixes the stored content hash (not the chain): the leaf is re-hashed, the
    # stored tree then no longer matches the signed checkpoint, so no proof is given for any entry
    with sqlite3.connect(tmp_path / "log.db") as con:
        row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM witness_entries WHERE seq = 5").fetchone()
        body = content_text(seq=row[0], entry_id=row[1], timestamp=row[2], component=row[3], operation=row[4],
                            params_json=row[5], severity=row[6], trace_id=row[7], prev_hash=row[8], sig_seq=row[11])
        con.execute("UPDATE witness_entries SET content_hash = ? WHERE seq = 5",
                    (hashlib.sha256(body.encode()).hexdigest(),))
    w = Witness(url, keys, writer="thread", publish=())
    try:
        for seq in (5, 0, 19):
            with pytest.raises(WitnessProofError):
                w.inclusion_proof(seq)
    finally:
        w.close()


def test_an_honest_proof_carries_the_signed_checkpoint(template, tmp_path: Path) -> None:
    url, keys = _corrupted(template, tmp_path, "UPDATE witness_entries SET severity = severity WHERE seq = ?", 0)
    w = Witness(url, keys, writer="thread", publish=())
    try:
        proof = w.inclusion_proof(5)
        assert proof["checkpoint"] is not None and proof["checkpoint"]["root"] == proof["root"]
    finally:
        w.close()


def test_checkpoints_published_to_the_key_value_store_catch_a_rollback(kv_url: str, tmp_path: Path) -> None:
    """The platform's KV store (embedded SQLite/memory or a real etcd) as the place outside the database."""
    from infrafabric.witness.publish import KVPublisher, kv_key_for, log_location

    db, keys = tmp_path / "log.db", tmp_path / "keys"
    url = f"sqlite:///{db}"
    w = Witness(url, keys, publish=[kv_url])
    for i in range(50):
        w.log("IF.governor", "budget_changed", {"i": i})
    w.flush()
    shutil.copy(db, tmp_path / "old.db")  # a copy taken after a checkpointed flush of 50 entries
    for i in range(30):
        w.log("IF.governor", "budget_changed", {"more": i})
    w.close()

    async def read() -> PublishedCheckpoint | None:
        publisher = KVPublisher(kv_url, kv_key_for(w.key_id, log_location(url)))
        try:
            return await publisher.read()
        finally:
            await publisher.close()

    record = asyncio.run(read())
    assert record is not None and record.checkpoint.size == 80 and record.checkpoint.verify(w.public_key)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", db)
    w = Witness(url, keys, publish=[kv_url])
    try:
        w.log("IF.governor", "budget_changed", {"after": "rollback"})
        with pytest.raises(WitnessStorageError) as caught:
            w.flush(timeout=30)
        assert caught.value.error_code == "WITNESS_LOG_ROLLED_BACK"
        assert "truncated" in w.verify().kinds
    finally:
        _abandon(w)


def test_prove_needs_only_the_public_key_and_refuses_an_edited_entry(template, tmp_path: Path) -> None:
    db, keys = template
    public_only = tmp_path / "public-only"
    public_only.mkdir()
    shutil.copy(keys / PUBLIC_KEY_FILE, public_only / PUBLIC_KEY_FILE)
    result = runner.invoke(witness_app, ["prove", "5", "--url", f"sqlite:///{db}", "--key-dir", str(public_only)])
    assert result.exit_code == 0, result.output
    proof = json.loads(result.output)
    assert proof["leaf_index"] == 5 and proof["checkpoint"]["root"] == proof["root"]
    url, _ = _corrupted(template, tmp_path, "UPDATE witness_entries SET params = ? WHERE seq = 5", '{"i":500}')
    result = runner.invoke(witness_app, ["prove", "5", "--url", url, "--key-dir", str(public_only)])
    assert result.exit_code == 2 and "WITNESS_ENTRY_EDITED" in result.output
