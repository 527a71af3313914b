"""Root conftest: a private state directory for the run, and every fixture module of tests/fixtures/."""

from __future__ import annotations

import os
import tempfile

# Audit logs, keys and CLI state of this test run live in a temporary directory, never in $HOME.
_STATE = tempfile.mkdtemp(prefix="if-test-state-")
os.environ.setdefault("INFRAFABRIC_STATE_DIR", _STATE)
os.environ.setdefault("INFRAFABRIC_HOME", _STATE)

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.kv_fixtures",
    "tests.fixtures.coordinator_fixtures",
    "tests.fixtures.governor_fixtures",
    "tests.fixtures.witness_fixtures",
    "tests.fixtures.chassis_fixtures",
    "tests.fixtures.node_fixtures",
    "tests.fixtures.mesh_fixtures",
    "tests.fixtures.mq_fixtures",
    "tests.fixtures.stack_fixtures",
]
