"""The package layout keeps its arrows: no import cycle among the project's modules, and the lower layers
never import the upper ones (README, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hpo", "objectives", "metrics", "storage", "dashboards")
#: What each package may import from the others (data flows hpo -> objectives -> metrics and
#: hpo -> storage -> dashboards; dashboards reads studies through hpo's trial helpers).
ALLOWED = {
    "metrics": set(),
    "objectives": {"metrics"},
    "storage": set(),
    "dashboards": {"hpo", "storage", "metrics", "objectives"},
    "hpo": {"objectives", "metrics", "storage", "dashboards"},
}


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports, at the top or inside functions."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                found = owner(target)
                if found is not None and found != name and not name.startswith(found + "."):
                    graph[name].add(found)
    return graph


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = _import_graph()
    names = sorted(graph)
    index = {name: i for i, name in enumerate(names)}
    rows = [index[a] for a in names for _ in graph[a]]
    cols = [index[b] for a in names for b in graph[a]]
    adjacency = csr_matrix(([1] * len(rows), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    cycles = [[n for n in names if labels[index[n]] == label] for label in set(labels.tolist())]
    assert [c for c in cycles if len(c) > 1] == []
    assert len(names) > 40  # the walk found the project


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_the_layers_below_it(package: str) -> None:
    graph = _import_graph()
    wrong = sorted((module, target) for module, targets in graph.items() if module.split(".")[0] == package
                   for target in targets
                   if target.split(".")[0] != package and target.split(".")[0] not in ALLOWED[package])
    assert wrong == []
