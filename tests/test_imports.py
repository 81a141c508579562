"""molmo_lite's modules import each other one way: the graph of their imports has no cycle.

Every ``import`` and ``from ... import`` counts, at module level and inside functions alike (a lazy import only moves
the circle to call time), relative imports resolved against the importing module's package. A package's __init__ is
the package itself. ``from molmo_lite.x import y`` is an edge to molmo_lite.x.y when that is a module, else to
molmo_lite.x. Importing a submodule also runs its parents' __init__ files; those implicit edges are not counted (a
package whose __init__ imports its own submodules would otherwise always be a circle), only the written ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "molmo_lite"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package (``pkg/__init__.py`` -> ``pkg``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from .{name}`` (``level`` dots) written in ``module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _owning_module(name: str, modules: dict) -> str | None:
    """The longest prefix of ``name`` that is one of the package's modules (``molmo_lite.model.MolmoLite`` ->
    ``molmo_lite.model``), or None for a name outside the package."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict) -> dict[str, int]:
    """{imported module of the package: line of the first import} for every import statement in the file."""
    is_package = path.name == "__init__.py"
    found: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        target = _owning_module(name, modules)
        if target is not None and target != module:
            found.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, is_package, node.level, node.module) if node.level else node.module
            for alias in node.names:  # a submodule imported by name is an edge to it, anything else to ``base``
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """{module: {module it imports: line}} among the package's own modules."""
    modules = module_files(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, dict[str, int]], within: set[str] | None = None) -> list[str] | None:
    """One cycle of the graph (restricted to the modules ``within``, if given) as [a, b, ..., a], or None: a
    depth-first search, modules in sorted order."""
    nodes = set(graph) if within is None else within
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(n for n in graph.get(node, {}) if n in nodes):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(nodes):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def circles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The groups of modules that import each other, directly or not (strongly connected components of two or more
    modules), so that one run names every circle and not only the first."""
    reach = {node: set() for node in graph}
    for node in graph:  # the graph is small (tens of modules): a search from each node is enough
        todo = list(graph[node])
        while todo:
            nxt = todo.pop()
            if nxt not in reach[node]:
                reach[node].add(nxt)
                todo.extend(graph.get(nxt, {}))
    groups: list[set[str]] = []
    for node in sorted(graph):
        group = {node} | {other for other in reach[node] if node in reach.get(other, set())}
        if len(group) > 1 and group not in groups:
            groups.append(group)
    return groups


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, int]], root: Path = ROOT) -> str:
    """``a (a.py:12) -> b (b.py:40) -> a``: each module with the line of its import of the next."""
    files = module_files(root)
    steps = [f"{a} ({files[a].relative_to(root.parent)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(steps + [cycle[-1]])


def test_the_package_imports_have_no_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["molmo_lite.model"], "the graph should hold the package's modules and edges"
    found = [f"{describe_cycle(find_cycle(graph, group), graph)}   [circle of {len(group)}: {', '.join(sorted(group))}]"
             for group in circles(graph)]
    for cycle in found:
        print("import cycle:", cycle)
    assert not found, "import cycles (each module with the line of its import of the next):\n" + "\n".join(found)


def test_the_graph_sees_relative_function_level_and_submodule_imports(tmp_path):
    """The parser itself, on a made-up package: a lazy relative import inside a function closes a circle, and
    ``from pkg import sub`` is an edge to the submodule."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import g\n    return g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..a import b\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.a"] == {"pkg.b": 2}
    assert graph["pkg.b"] == {"pkg.sub.c": 2}
    assert graph["pkg.sub.c"] == {"pkg.a": 2}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    assert circles(graph) == [{"pkg.a", "pkg.b", "pkg.sub.c"}]
    (pkg / "sub" / "c.py").write_text("from pkg import sub\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.sub.c"] == {"pkg.sub": 1}
    assert find_cycle(graph) is None and circles(graph) == []
