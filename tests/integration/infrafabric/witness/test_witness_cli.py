"""``infrafabric witness ...`` and ``infrafabric optimise ...`` commands against a real SQLite log."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infrafabric.cli.optimise import app as optimise_app
from infrafabric.cli.witness import app as witness_app
from infrafabric.optimise import CostTracker
from infrafabric.witness import Witness

runner = CliRunner()


@pytest.fixture
def populated(tmp_path: Path) -> tuple[list[str], Path]:
    url, key_dir = f"sqlite:///{tmp_path / 'cli.db'}", tmp_path / "keys"
    w = Witness(url, key_dir)
    for i in range(12):
        w.log("IF.coordinator" if i % 2 else "IF.governor", "task_claimed" if i % 2 else "help_requested",
              {"i": i}, trace_id="trace-cli" if i < 4 else None)
    t = CostTracker(w)
    t.track("swarm-a", "review", "1.25", component="IF.governor", model="haiku", trace_id="trace-cli")
    t.track("swarm-b", "build", "0.75", component="IF.chassis", model="sonnet")
    w.close()
    return ["--url", url, "--key-dir", str(key_dir)], tmp_path


def test_verify_ok_and_tampered_db_fails_naming_the_entry(populated) -> None:
    opts, tmp = populated
    result = runner.invoke(witness_app, ["verify", *opts])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "14 entries" in result.output
    import sqlite3

    con = sqlite3.connect(tmp / "cli.db")
    con.execute("UPDATE witness_entries SET params = '{\"i\":99}' WHERE seq = 3")
    con.commit()
    con.close()
    result = runner.invoke(witness_app, ["verify", *opts, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert {"kind": "edited", "seq": 3} in [{"kind": p["kind"], "seq": p["seq"]} for p in report["problems"]]


def test_export_then_verify_file_with_public_key_only(populated) -> None:
    opts, tmp = populated
    out = tmp / "log.jsonl"
    result = runner.invoke(witness_app, ["export", *opts, "--format", "jsonl", "--output", str(out)])
    assert result.exit_code == 0, result.output
    pub = tmp / "keys" / "public_key.pem"
    ok = runner.invoke(witness_app, ["verify", "--file", str(out), "--public-key", str(pub)])
    assert ok.exit_code == 0, ok.output
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # drop entry 5
    bad = runner.invoke(witness_app, ["verify", "--file", str(out), "--public-key", str(pub), "--json"])
    assert bad.exit_code == 1
    assert any(p["kind"] == "deleted" and p["seq"] == 5 for p in json.loads(bad.output)["problems"])


def test_export_json_and_csv(populated) -> None:
    opts, tmp = populated
    doc = runner.invoke(witness_app, ["export", *opts, "--format", "json"])
    assert doc.exit_code == 0
    data = json.loads(doc.output)
    assert len(data["entries"]) == 14 and data["checkpoint"]["size"] == 14
    out = runner.invoke(witness_app, ["export", *opts, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert len(rows) == 14 and rows[0]["seq"] == "0" and json.loads(rows[0]["params"]) == {"i": 0}


def test_query_filters_and_formats(populated) -> None:
    opts, _ = populated
    result = runner.invoke(witness_app, ["query", *opts, "--component", "IF.coordinator", "--format", "json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [r["params"]["i"] for r in rows] == [1, 3, 5, 7, 9, 11]
    table = runner.invoke(witness_app, ["query", *opts, "--operation", "help_requested", "--limit", "2"])
    assert table.exit_code == 0
    assert '{"i": 0}' in table.output and '{"i": 2}' in table.output
    assert '{"i": 1}' not in table.output and '{"i": 4}' not in table.output  # filtered, limited
    bad = runner.invoke(witness_app, ["query", *opts, "--since", "not-a-time"])
    assert bad.exit_code == 2


def test_trace_summarises_components_and_cost(populated) -> None:
    opts, _ = populated
    result = runner.invoke(witness_app, ["trace", "trace-cli", *opts, "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["operations"] == 5 and info["total_cost"] == "1.25"
    assert info["components"] == ["IF.coordinator", "IF.governor", "IF.optimise"]
    missing = runner.invoke(witness_app, ["trace", "nope", *opts])
    assert missing.exit_code == 1


def test_checkpoint_and_prove(populated) -> None:
    opts, _ = populated
    cp = json.loads(runner.invoke(witness_app, ["checkpoint", *opts]).output)
    assert cp["size"] == 14 and cp["type"] == "checkpoint"
    proof = json.loads(runner.invoke(witness_app, ["prove", "3", *opts]).output)
    assert proof["root"] == cp["root"] and proof["tree_size"] == 14


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(witness_app, ["verify", "--url", f"sqlite:///{tmp_path / 'none.db'}", "--key-dir", str(tmp_path)])
    assert result.exit_code == 2 and not (tmp_path / "none.db").exists()


def test_optimise_report_and_budget(populated) -> None:
    opts, _ = populated
    result = runner.invoke(optimise_app, ["report", *opts, "--group-by", "model", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"key": "haiku", "cost": "1.25", "operations": 1, "share": "62.50"},
        {"key": "sonnet", "cost": "0.75", "operations": 1, "share": "37.50"},
    ]
    table = runner.invoke(optimise_app, ["report", *opts])
    assert table.exit_code == 0 and "swarm-a" in table.output
    csv_out = runner.invoke(optimise_app, ["report", *opts, "--group-by", "component", "--format", "csv"])
    assert list(csv.DictReader(io.StringIO(csv_out.output)))[0]["key"] in ("IF.governor", "IF.chassis")
    set_result = runner.invoke(optimise_app, ["budget", *opts, "--set", "2.50", "--period", "total", "--format", "json"])
    assert set_result.exit_code == 0, set_result.output
    (status,) = json.loads(set_result.output)
    assert status["limit"] == "2.50" and status["spent"] == "2.00" and status["alerts"] == [50, 80]
    again = runner.invoke(optimise_app, ["budget", *opts])  # persisted in the audited log
    assert again.exit_code == 0 and "2.50" in again.output
    bad = runner.invoke(optimise_app, ["budget", *opts, "--set", "-3"])
    assert bad.exit_code == 2


def test_wrong_key_dir_is_refused_without_creating_keys(populated, tmp_path: Path) -> None:
    opts, _ = populated
    empty = tmp_path / "no-keys"
    result = runner.invoke(witness_app, ["query", opts[0], opts[1], "--key-dir", str(empty)])
    assert result.exit_code == 2 and "WITNESS_KEY_MISSING" in result.output
    assert not empty.exists()
