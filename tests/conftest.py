"""Root conftest: loads every fixture module of tests/fixtures/ (one per area)."""

pytest_plugins = [
    "tests.fixtures.servers",
    "tests.fixtures.kv_fixtures",
    "tests.fixtures.coordinator_fixtures",
    "tests.fixtures.governor_fixtures",
    "tests.fixtures.witness_fixtures",
    "tests.fixtures.chassis_fixtures",
    "tests.fixtures.node_fixtures",
    "tests.fixtures.mesh_fixtures",
]
