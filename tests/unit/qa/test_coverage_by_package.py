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


def test_the_gate_refuses_a_phase0_package_at_the_seed_goal_and_a_low_total() -> None:
    from qa.coverage_by_package import gate_failures

    healthy = {"infrafabric/coordinator": (1000, 910), "infrafabric/governor": (1000, 950),
               "infrafabric/chassis": (1000, 930), "lucid/node": (1000, 950)}
    assert gate_failures(healthy) == []
    at_goal = {**healthy, "infrafabric/chassis": (1000, 900)}  # the seed asks more than 90 %
    assert [f.split()[0] for f in gate_failures(at_goal)] == ["infrafabric/chassis"]
    missing = {k: v for k, v in healthy.items() if k != "infrafabric/governor"}
    assert gate_failures(missing)[0].startswith("infrafabric/governor")
    low_total = {**healthy, "lucid/node": (10000, 8000)}
    assert gate_failures(low_total) == ["total 83.0% is below the floor of 91%"]


def test_main_with_the_gate_exits_non_zero_when_a_floor_fails(tmp_path) -> None:
    import json

    from qa.coverage_by_package import main

    files = {f"src/infrafabric/{p}/a.py": {"summary": {"num_statements": 100, "covered_lines": n}}
             for p, n in (("coordinator", 95), ("governor", 95), ("chassis", 89))}
    report = tmp_path / "coverage.json"
    report.write_text(json.dumps({"files": files}))
    assert main([str(report)]) == 0  # without the gate it only reports
    assert main([str(report), "--gate"]) == 1
