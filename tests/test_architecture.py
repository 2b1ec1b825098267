"""Dependencies point down: data never imports models or training, models never import data,
and no two bench modules import each other at load time.

The imports are read from the source (ast), so a function-level import counts as well as a
top-level one for the layer rules; cycles are looked for among top-level imports only (those
run when a module loads; a function-level import is how a registry finds its plug-ins).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# importer prefix -> prefixes it must not import (at any level)
FORBIDDEN = {
    "bench.datasets": (
        "bench.models",
        "bench.training",
        "bench.leaderboard",
        "bench.sweep",
        "bench.cli",
    ),
    "bench.models": ("bench.datasets", "bench.training", "bench.cli"),
    "bench.contract": ("bench.",),
}
# importer prefix -> the only bench prefixes it may import: reading raw files sits below the
# adapters, their registry and the recipes, so none of them can become its dependency.
ONLY = {
    "bench.datasets.io": ("bench.datasets.io", "bench.datasets.schema", "bench.errors"),
    # the one registry type sits below models, data sets and protocols alike
    "bench.registry": ("bench.errors",),
}


def bench_modules(root: Path = BENCH) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_within(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(prefix.rstrip(".") + ".")


def module_imports(
    name: str, source: str, known: set[str], package: bool = False
) -> list[tuple[str, bool]]:
    """(imported bench module, at top level?) for every import statement in `source`.

    `from a.b import c` names module a.b.c when that is a module, else a.b; relative
    imports resolve against `name` (a package's own name when `package`).
    """
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - child.level + (1 if package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append((sub if sub in known else base, top))
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, top and not inner)

    visit(ast.parse(source), True)
    return [(target, top) for target, top in found if _is_within(target, "bench")]


def import_graph(modules: dict[str, Path]) -> dict[str, list[tuple[str, bool]]]:
    known = set(modules)
    return {
        name: module_imports(name, path.read_text(), known, path.name == "__init__.py")
        for name, path in modules.items()
    }


def layer_violations(graph: dict[str, list[tuple[str, bool]]]) -> list[str]:
    banned = {
        f"{importer} imports {target}"
        for importer, imports in graph.items()
        for target, _top in imports
        for layer, forbidden in FORBIDDEN.items()
        if _is_within(importer, layer) and any(_is_within(target, b) for b in forbidden)
    }
    outside = {
        f"{importer} imports {target}"
        for importer, imports in graph.items()
        for target, _top in imports
        for layer, allowed in ONLY.items()
        if _is_within(importer, layer) and not any(_is_within(target, a) for a in allowed)
    }
    return sorted(banned | outside)


def load_time_edges(
    graph: dict[str, list[tuple[str, bool]]], *, function_level: bool = False
) -> dict[str, set[str]]:
    """Top-level imports, plus the packages they load on the way (`import a.b.c` runs
    a/__init__ and a/b/__init__), except the importer's own packages, already loading.
    With `function_level`, imports inside functions count too."""
    edges: dict[str, set[str]] = {name: set() for name in graph}
    for importer, imports in graph.items():
        for target, top in imports:
            if not (top or function_level):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                step = ".".join(parts[:i])
                if step in graph and step != importer and not _is_within(importer, step):
                    edges[importer].add(step)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


@pytest.fixture(scope="module")
def graph():
    return import_graph(bench_modules())


def test_walker_sees_the_package(graph):
    # The rules below are only as good as the walk: it must see the known edges.
    assert {"bench.cli", "bench.contract", "bench.datasets.datamodule"} <= set(graph)
    assert ("bench.contract", True) in graph["bench.datasets.datamodule"]
    assert ("bench.datasets.protocols.counts", True) in graph["bench.datasets.prepare"]
    assert ("bench.training.run", False) in graph["bench.cli"]  # inside a command
    # the registries find their plug-ins by package name (bench.registry), not by import
    assert ("bench.registry", True) in graph["bench.datasets.registry"]


def test_data_and_models_import_only_downwards(graph):
    assert layer_violations(graph) == []


def test_no_import_cycle_at_load_time(graph):
    assert cycles(load_time_edges(graph)) == []


def test_data_modules_form_no_cycle_even_through_function_level_imports(graph):
    # A function-level import hides a knot rather than untying it (readers.py and
    # datasets/registry.py once needed each other so); in bench.datasets there is none.
    data = {name: imports for name, imports in graph.items() if _is_within(name, "bench.datasets")}
    assert cycles(load_time_edges(data, function_level=True)) == []


def test_reading_is_a_package_of_small_modules(graph):
    # readers.py (fields, sniffing, three file kinds, diagnostics, the adapter base) is gone:
    # each concern is a module of bench.datasets.io, and the adapter bases live together.
    assert "bench.datasets.readers" not in graph
    assert not (BENCH / "datasets" / "readers.py").exists()
    io = {name for name in graph if _is_within(name, "bench.datasets.io")}
    assert {f"bench.datasets.io.{m}" for m in ("fields", "text", "csv", "parquet")} <= io
    assert ("bench.datasets.adapters.base", True) in graph["bench.datasets.registry"]


def test_protocol_base_holds_no_steps(graph):
    # protocols/base.py is the class, parameters, registry and hash; it reaches the recipe
    # modules only through the package, at call time (the registry finding its plug-ins).
    base = graph["bench.datasets.protocols.base"]
    assert [t for t, top in base if _is_within(t, "bench.datasets") and top] == []
    assert [t for t, _ in base if t.startswith("bench.datasets.protocols.")] == []


def test_rules_catch_what_they_forbid():
    known = {"bench.models.base", "bench.datasets.x", "bench.datasets.y", "bench.models"}
    source = "import os\ndef f():\n    from bench.models.base import DataSpec\n"
    fake = {
        "bench.datasets.x": module_imports("bench.datasets.x", source, known),
        "bench.datasets.y": module_imports(
            "bench.datasets.y", "from . import x\nfrom .x import y\n", known
        ),
        "bench.models.base": [("bench.datasets.y", True)],
        "bench.models": [("bench.models.base", True)],
    }
    assert fake["bench.datasets.x"] == [("bench.models.base", False)]
    assert fake["bench.datasets.y"] == [("bench.datasets.x", True)] * 2
    fake["bench.datasets.io.z"] = module_imports(
        "bench.datasets.io.z",
        "from bench.datasets.schema import canonical\n"
        "def f():\n    from bench.datasets.registry import Adapter\n",
        known,
    )
    assert layer_violations(fake) == [
        "bench.datasets.io.z imports bench.datasets.registry",
        "bench.datasets.x imports bench.models.base",
        "bench.models.base imports bench.datasets.y",
    ]
    del fake["bench.datasets.io.z"]
    # models.base -> datasets.y -> datasets.x -> (function level, not at load time) models.base
    assert cycles(load_time_edges(fake)) == []
    assert cycles(load_time_edges(fake, function_level=True)) == [
        ["bench.datasets.x", "bench.datasets.y", "bench.models", "bench.models.base"]
    ]
    fake["bench.datasets.x"] = [("bench.models.base", True)]
    # loading models.base from datasets.x runs bench/models/__init__ too
    assert cycles(load_time_edges(fake)) == [
        ["bench.datasets.x", "bench.datasets.y", "bench.models", "bench.models.base"]
    ]
