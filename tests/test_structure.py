"""The package's shape: no import cycle anywhere in jaxloss/, and the kernels a leaf package.

Every ``import`` statement is read from the source (module level and inside functions alike: a deferred import
that closes a cycle is still a cycle), so the test needs no import side effects and sees code paths that a
given run would not execute.
"""

from __future__ import annotations

import ast
import pathlib

import jaxloss

PACKAGE = pathlib.Path(jaxloss.__file__).resolve().parent
# Modules with no .py source: the C++ extension built from jaxloss/_kernels/cpu_module.cc (absent where the package
# was installed without a compiler). They import nothing from jaxloss.
EXTENSIONS = {"jaxloss._kernels._cpu"}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The jaxloss modules ``path`` imports (``from . import x`` counts as importing module x where x is one)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import name`: the submodule pkg.name where it is one, else pkg itself (whose __init__
            # defines the name); the parent package of a submodule is not counted as imported by that.
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # A name imported from a package is its submodule where one exists, else the package itself.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths} | EXTENSIONS
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    graph = _graph()
    assert len(graph) > 10 and "jaxloss._kernels" in graph["jaxloss.entropy"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_kernels_are_a_leaf_package():
    """jaxloss._kernels owns every fast path and imports nothing from the rest of jaxloss."""
    for module, imported in _graph().items():
        if module.startswith("jaxloss._kernels"):
            outside = {m for m in imported if not m.startswith("jaxloss._kernels")}
            assert not outside, f"{module} imports {sorted(outside)}"
