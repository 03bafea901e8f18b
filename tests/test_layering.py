"""Imports only go down, and no module imports one that imports it back.

Every module of the five packages is parsed with ``ast``: module-level imports and those inside
functions, relative ones resolved.  ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg``.  Running a package's ``__init__`` on the way to a submodule is not counted as
an edge (Python's own order of execution, not a dependency this code chose).

The floors, lowest first (docs/architecture.md draws the same):

    experts_registry < router < aggregators
      < service.core < service.workers < service.scheduler < service.backends
      < service.pipeline < service.http
      < benchmarks (the evaluation suite) < benchmarks.perf (the performance harness)
      < service.cli (the command line: it composes everything, ``conclave bench`` included)

A module may import its own floor and any floor below; a module in no floor fails the test (put it in
a room: a new top-level module in ``service/`` has to choose one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("experts_registry", "router", "aggregators", "service", "benchmarks")
FLOORS = (
    "experts_registry",
    "router",
    "aggregators",
    "service.core",
    "service.workers",
    "service.scheduler",
    "service.backends",
    "service.pipeline",
    "service.http",
    "benchmarks",
    "benchmarks.perf",
    "service.cli",
)
PACKAGE_ROOTS = {"service": "service.core"}   # service/__init__.py: a docstring, at the bottom of its package


def module_files(root: Path = ROOT) -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


def _known(name: str, mods) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(mod: str, path: Path, mods) -> set[str]:
    """The modules of the five packages that ``mod`` imports, anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        found.update(t for t in (_known(n, mods) for n in names) if t and t != mod)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = module_files(root)
    return {mod: imports_of(mod, path, mods) for mod, path in mods.items()}


def floor_of(mod: str) -> int:
    mod = PACKAGE_ROOTS.get(mod, mod)
    best = max((f for f in FLOORS if mod == f or mod.startswith(f + ".")), key=len, default=None)
    if best is None:
        raise LookupError(f"{mod} is in no floor: move it into a room (see FLOORS in tests/test_layering.py)")
    return FLOORS.index(best)


def upward_imports(graph) -> list[str]:
    return [f"{a} ({FLOORS[floor_of(a)]}) imports {b} ({FLOORS[floor_of(b)]}), a higher floor"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if floor_of(b) > floor_of(a)]


def cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_is_in_a_floor():
    missing = []
    for mod in module_files():
        try:
            floor_of(mod)
        except LookupError as exc:
            missing.append(str(exc))
    assert not missing, "\n".join(missing)


def test_no_upward_imports():
    bad = upward_imports(import_graph())
    assert not bad, "imports must only go down:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "modules that import each other back:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("source, expect", [
    ("def f():\n    from service.http.app import create_app\n", "upward"),
    ("from ..pipeline import gateway\n", "upward"),
    ("from . import fake\n", "cycle"),
])
def test_a_planted_violation_is_caught(tmp_path, source, expect):
    """The checks fail on a copy of the tree with one bad import added to service/workers/base.py."""
    for path in module_files().values():
        dest = tmp_path / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    base = tmp_path / "service" / "workers" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\n" + source, encoding="utf-8")
    graph = import_graph(tmp_path)
    if expect == "upward":
        assert any(b.startswith("service.workers.base ") for b in upward_imports(graph))
    else:
        assert ["service.workers.base", "service.workers.fake"] in cycles(graph)
