"""The layering holds: no two components import each other, and no two modules do (read from the source,
imports inside functions and TYPE_CHECKING blocks included). Named here are the cycles a review found and
that were broken; the checker itself is tested on small trees so it cannot pass by finding nothing."""

from __future__ import annotations

from pathlib import Path

from qa.import_graph import component_graph, cycles, module_cycles, module_graph

SRC = Path(__file__).resolve().parents[3] / "src"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_checker_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "infrafabric/__init__.py": "", "infrafabric/a/__init__.py": "", "infrafabric/b/__init__.py": "",
        "infrafabric/a/x.py": "from infrafabric.b.y import f\n",
        "infrafabric/b/y.py": "def f():\n    from ..a import x\n",
    })
    assert cycles(component_graph(src)) == [("infrafabric.a", "infrafabric.b")]
    assert module_cycles(module_graph(src)) == [["infrafabric.a.x", "infrafabric.b.y"]]


def test_the_checker_does_not_count_a_package_building_itself(tmp_path: Path) -> None:
    src = _tree(tmp_path, {
        "infrafabric/__init__.py": "", "infrafabric/a/__init__.py": "from .x import f\n",
        "infrafabric/a/x.py": "from infrafabric.errors import E\ndef f(): ...\n", "infrafabric/errors.py": "",
    })
    assert cycles(component_graph(src)) == [] and module_cycles(module_graph(src)) == []


def test_no_component_imports_another_that_imports_it() -> None:
    graph = component_graph(SRC)
    assert "infrafabric.coordinator" in graph and "lucid.node.api" in graph  # the walk read the tree
    assert cycles(graph) == []


def test_no_two_modules_import_each_other() -> None:
    found = module_cycles(module_graph(SRC))
    assert found == [], found


def test_the_cycles_the_review_named_stay_broken() -> None:
    graph = module_graph(SRC)
    assert "infrafabric.governor.governor" not in graph["infrafabric.governor.profile"]
    assert not any(m.startswith("infrafabric.governor") for m in graph["infrafabric.coordinator.coordinator"])
    assert not any(m.startswith("infrafabric.governor") for m in graph["infrafabric.coordinator.client"])
    assert "lucid.node.api.errors" not in graph["lucid.node.api.observability"] or \
        "lucid.node.api.observability" not in graph["lucid.node.api.errors"]
    for module in ("lucid.service_mesh.discovery.model", "lucid.service_mesh.security.cert_manager",
                   "lucid.service_mesh.security.auth_provider"):
        assert not any(m.startswith("lucid.service_mesh.policy") for m in graph[module]), module
