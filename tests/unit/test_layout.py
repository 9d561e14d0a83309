"""The package's layout: no import circle, Ray only in stress/driver/, no module over 400 lines.

The import graph is read with `ast` from the source files, every import counted, also the
ones inside functions (a lazy import that closes a circle is still a circle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "stress"
MAX_LINES = 400


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package that `path` imports, top-level names of outside packages it imports)."""
    inside, outside = set(), set()
    here = module_name(path, package)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = here.split(".")[: -node.level] if path.name != "__init__.py" else here.split(".")[: len(here.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == package.name:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != here:
                    inside.add(target)
            else:
                outside.add(target.split(".")[0])
    return inside, outside


def import_graph(package: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    paths = {module_name(p, package): p for p in package.rglob("*.py")}
    graph, external = {}, {}
    for name, path in paths.items():
        graph[name], external[name] = imports_of(path, package, set(paths))
    return graph, external


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None. Packages count as their __init__."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_circle():
    graph, _ = import_graph(PACKAGE)
    assert len(graph) > 30  # the whole package was read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_only_the_driver_imports_ray():
    _, external = import_graph(PACKAGE)
    offenders = sorted(m for m, names in external.items() if "ray" in names and not m.startswith("stress.driver"))
    assert offenders == []
    assert any("ray" in names for m, names in external.items() if m.startswith("stress.driver"))


def test_no_module_is_over_400_lines():
    sizes = {module_name(p, PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


@pytest.mark.parametrize("files, cycle", [
    # a circle closed by a lazy import inside a function
    ({"__init__.py": "", "a.py": "from pkg import b\n", "b.py": "def f():\n    from pkg.a import x\n"}, ["pkg.a", "pkg.b", "pkg.a"]),
    # a circle through a subpackage, imported as `from pkg.sub import mod`
    ({"__init__.py": "", "sub/__init__.py": "", "sub/m.py": "import pkg.top\n", "top.py": "from pkg.sub import m\n"},
     ["pkg.sub.m", "pkg.top", "pkg.sub.m"]),
    # a relative import
    ({"__init__.py": "", "a.py": "from . import b\n", "b.py": "from .a import y\n"}, ["pkg.a", "pkg.b", "pkg.a"]),
    # no circle: a chain
    ({"__init__.py": "", "a.py": "from pkg import b\n", "b.py": "from pkg import c\n", "c.py": "import os\n"}, None),
])
def test_the_cycle_check_finds_planted_circles(tmp_path, files, cycle):
    package = write_package(tmp_path, files)
    graph, _ = import_graph(package)
    assert find_cycle(graph) == cycle


def test_the_ray_check_sees_planted_imports(tmp_path):
    package = write_package(tmp_path, {"__init__.py": "", "a.py": "def f():\n    import ray.train\n", "b.py": "from ray import tune\n",
                                       "c.py": "import rayon\n"})
    _, external = import_graph(package)
    assert sorted(m for m, names in external.items() if "ray" in names) == ["pkg.a", "pkg.b"]
