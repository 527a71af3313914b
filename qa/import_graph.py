"""The import graph between the platform's components, read from the source (every import statement,
those inside functions too), so a cycle between two components is found without running anything.

A component is a package one level below a system: ``infrafabric.coordinator``, ``lucid.service_mesh.
discovery``, ``lucid.node.api``; a module directly in a system (``infrafabric.errors``) is its own shared
vocabulary and not part of any component."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SYSTEMS = ("backends", "infrafabric", "lucid.service_mesh", "lucid.node", "stack")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def component_of(module: str) -> str | None:
    for system in sorted(SYSTEMS, key=len, reverse=True):
        if module == system or module.startswith(system + "."):
            rest = module[len(system) + 1:].split(".") if module != system else []
            return f"{system}.{rest[0]}" if len(rest) >= 2 else None
    return None


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def component_graph(src: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(src.rglob("*.py")):
        if ".egg-info" in str(path):
            continue
        module = module_name(path, src)
        mine = component_of(module)
        if mine is None:
            continue
        for target in imports_of(path, module):
            theirs = component_of(target)
            if theirs is not None and theirs != mine:
                graph[mine].add(theirs)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs of components each reaching the other (directly or through others), each pair once."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {c: reach(c) for c in list(graph)}
    return sorted({tuple(sorted((a, b))) for a in reachable for b in reachable[a]
                   if a != b and a in reachable.get(b, set())})


def module_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a package's ``__init__`` counts as the package)."""
    paths = {module_name(p, src): p for p in sorted(src.rglob("*.py")) if ".egg-info" not in str(p)}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in paths.items():
        for target in imports_of(path, module):
            if target in paths and target != module:
                graph[module].add(target)
    return graph


def module_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (strongly connected, Tarjan), packages' ``__init__`` re-exports
    left out: a package importing its own modules is how a package is built, not a cycle."""
    graph = {m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")} for m, ts in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # iterative depth would be nicer; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


if __name__ == "__main__":
    src = Path(__file__).resolve().parents[1] / "src"
    for a, b in cycles(component_graph(src)):
        print(f"{a} <-> {b}")
    for group in module_cycles(module_graph(src)):
        print("modules:", " <-> ".join(group))
