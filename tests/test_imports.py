"""The package's import graph has no cycle: every `import` of one irmas_lib module by another, at the
top of a file or inside a function (a function-level import hides a cycle from Python, not from us)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "irmas_lib"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """irmas_lib/models/basic.py -> "irmas_lib.models.basic"; irmas_lib/models/__init__.py -> "irmas_lib.models"."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{module name: its file} for every .py file of the package."""
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The package modules one file imports anywhere in it (top level, functions, classes, conditionals)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                base = name.split(".")[:len(name.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import name` imports the module pkg.name when there is one, else pkg itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules and "." in target:  # irmas_lib.x.attr -> irmas_lib.x
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package modules it imports}."""
    modules = package_modules(package)
    return {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (depth-first search, modules in sorted order)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == "open":
                return path[path.index(neighbour):] + [neighbour]
            if neighbour not in state:
                cycle = visit(neighbour)
                if cycle:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "irmas_lib.metrics" in graph and "irmas_lib.models.basic" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_evaluation_never_imports_plots():
    graph = import_graph()
    assert "irmas_lib.plots" not in graph["irmas_lib.evaluation"]
    assert "irmas_lib.metrics" in graph["irmas_lib.plots"] and "irmas_lib.metrics" in graph["irmas_lib.evaluation"]


def test_the_checker_finds_cycles_at_any_depth_of_a_file(tmp_path):
    """A function-level import that closes a cycle is found and named; relative imports count too."""
    package = tmp_path / "irmas_lib"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from irmas_lib.b import thing\n")
    (package / "b.py").write_text("def f():\n    from irmas_lib.sub import c\n    return c\nthing = 1\n")
    (package / "sub" / "c.py").write_text("import numpy\n\n\nclass C:\n    def g(self):\n        from .. import a\n")
    graph = import_graph(package)
    assert graph["irmas_lib.b"] == {"irmas_lib.sub.c"} and graph["irmas_lib.sub.c"] == {"irmas_lib.a"}
    assert find_cycle(graph) == ["irmas_lib.a", "irmas_lib.b", "irmas_lib.sub.c", "irmas_lib.a"]
    (package / "sub" / "c.py").write_text("import numpy\n")
    assert find_cycle(import_graph(package)) is None
