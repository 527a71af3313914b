"""`make demo`'s main job runs end to end on the embedded default and exits 0 with its summary."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_infrafabric_demo_runs_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "INFRAFABRIC_STATE_DIR": str(tmp_path), "COLUMNS": "160"}
    proc = subprocess.run([sys.executable, "-m", "infrafabric.demo"], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "checks passed" in proc.stdout
    assert "FAILED" not in proc.stdout
    assert '"type":"checkpoint"' in proc.stdout.replace("\n", "")


def test_lucid_demo_runs_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "INFRAFABRIC_STATE_DIR": str(tmp_path), "COLUMNS": "160"}
    proc = subprocess.run([sys.executable, "-m", "lucid.demo"], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all 9 checks passed" in proc.stdout
