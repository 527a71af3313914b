"""``infrafabric chassis ...`` commands (the Typer app the main CLI mounts)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from infrafabric.cli.chassis import app

pytestmark = pytest.mark.wasm
runner = CliRunner()


def test_modules_lists_the_examples():
    result = runner.invoke(app, ["modules"])
    assert result.exit_code == 0 and "reference" in result.output and "minimal" in result.output


def test_run_executes_a_task_in_the_sandbox():
    result = runner.invoke(app, ["run", '{"action": "wordcount", "text": "one two three"}'])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[: result.stdout.rindex("}") + 1]) == {"status": "success", "words": 3}


def test_run_reports_a_refused_attack_with_its_error_code():
    result = runner.invoke(app, ["run", '{"action": "allocate_512mb"}', "--memory-mb", "16"])
    assert result.exit_code == 1
    assert "IF_ERR_CHASSIS_MEMORY_LIMIT" in result.output


def test_run_rejects_bad_json():
    result = runner.invoke(app, ["run", "{not json"])
    assert result.exit_code != 0


def test_check_url():
    ok = runner.invoke(app, ["check-url", "https://api.openai.com/v1/chat", "--allow", "https://api.openai.com/v1/"])
    bad = runner.invoke(app, ["check-url", "https://api.openai.com@evil.com/v1/", "--allow", "https://api.openai.com/v1/"])
    assert ok.exit_code == 0 and "allowed" in ok.output
    assert bad.exit_code == 1 and "refused" in bad.output


def test_attacks_showcase_refuses_every_attack():
    result = runner.invoke(app, ["attacks"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert result.output.count("refused") >= 7
    assert "IF_ERR_CHASSIS_MEMORY_LIMIT" in result.output and "IF_ERR_CHASSIS_CPU_LIMIT" in result.output
