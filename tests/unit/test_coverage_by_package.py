"""The per-package coverage table groups files by their package under src/ and sums exactly."""

from __future__ import annotations

from qa.coverage_by_package import by_package, package_of


def test_files_are_grouped_by_package_and_summed() -> None:
    report = {"files": {
        "src/infrafabric/coordinator/core.py": {"summary": {"num_statements": 10, "covered_lines": 9}},
        "src/infrafabric/coordinator/service.py": {"summary": {"num_statements": 30, "covered_lines": 15}},
        "/abs/src/stack/cli.py": {"summary": {"num_statements": 5, "covered_lines": 5}},
        "src/backends/metrics.py": {"summary": {"num_statements": 4, "covered_lines": 0}},
    }}
    assert package_of("/work/x/src/lucid/node/api/app.py") == "lucid/node"
    assert by_package(report) == {"backends": (4, 0), "infrafabric/coordinator": (40, 24), "stack": (5, 5)}
