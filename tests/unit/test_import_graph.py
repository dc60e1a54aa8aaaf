"""The import graph of ``beam_rtbf``: no cycles between modules, no import from a lower layer into a higher one.

Every module is parsed with ``ast`` (nothing is imported); module-level and
function-level imports both count (a function-level import is still a
dependency, only a later one), imports under ``if TYPE_CHECKING:`` do not. Importing
``a.b.c`` makes an edge to ``a.b.c`` only: the packages Python imports on the
way are not edges (they would make every package a cycle with its children).

``LAYERS`` is the architecture, lowest first; a module may import its own
layer and the layers below it. A module belongs to the longest entry that is
it or a package above it (so ``beam_rtbf.parse.dedupe`` may sit higher than the
rest of ``beam_rtbf.parse``); the root package ``beam_rtbf`` matches itself
only. A new module must be placed in the table before this test passes.

``KNOWN_UPWARD`` and ``KNOWN_CYCLES`` list the violations that are being fixed
elsewhere, each with who fixes it; an entry that no longer occurs fails the test
too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = "beam_rtbf"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / PACKAGE

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Data contracts and leaf helpers: import nothing of the project but each other.
    (
        "core",
        (
            "beam_rtbf",
            "beam_rtbf.identifiers",
            "beam_rtbf.records",
            "beam_rtbf.redact",
            "beam_rtbf.metrics",
            "beam_rtbf.runner_names",
            "beam_rtbf.bundling",
            "beam_rtbf.varint",  # base-128 integers (KPL aggregates, Parquet footers)
            "beam_rtbf.job_servers",  # Beam's Flink/Spark job servers, fetched into a cache
            "beam_rtbf.testing",  # loopback servers for tests and benchmarks
        ),
    ),
    # Reading, parsing and writing data; the registry. No Beam graph decisions here.
    ("io", ("beam_rtbf.parse", "beam_rtbf.registry", "beam_rtbf.sources", "beam_rtbf.sinks")),
    # The pipeline's steps and the local runner that executes them.
    (
        "steps",
        (
            "beam_rtbf.parse.dedupe",  # a keyed-state step; hashes ids as the filter does (filter.deletion_set)
            "beam_rtbf.filter",
            "beam_rtbf.analytics",
            "beam_rtbf.archive",
            "beam_rtbf.manifests",
            "beam_rtbf.local_runner",
            "beam_rtbf.generate",
            "beam_rtbf.purge.api_sink",  # a sink step (the downstream erasure API); options check its URL
        ),
    ),
    # Job configuration: options, profiles, the typed job spec.
    ("config", ("beam_rtbf.options", "beam_rtbf.profiles", "beam_rtbf.flags", "beam_rtbf.jobspec", "beam_rtbf.prism")),
    # The steps every job shares around its graph (runner, ledger, run, wait) and its figures.
    ("job", ("beam_rtbf.job", "beam_rtbf.stopping", "beam_rtbf.summary", "beam_rtbf.flink_local")),
    # The purge graph; it must not import the run graph.
    ("purge", ("beam_rtbf.purge",)),
    # The run graph.
    ("run", ("beam_rtbf.pipeline",)),
    # One driver for run and purge.
    ("driver", ("beam_rtbf.driver",)),
    # The read-only dashboard: reads outputs, the registry and receipts; runs no job.
    ("dashboard", ("beam_rtbf.dashboard",)),
    ("cli", ("beam_rtbf.cli",)),
]

# (importer, imported) -> who removes it. Delete the entry with the import.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

# Strongly connected components (as sets of modules) -> who breaks the cycle.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


# -- the graph ----------------------------------------------------------------------------------------


def module_files(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (``__init__`` is the package)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth, except those only run for type checkers."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]))
        else:
            yield from _imports(node)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The module ``name`` is, or the nearest package above it that is one of ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_edges(modules: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """importer -> {imported module of ours: first line}."""
    edges: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        out = edges.setdefault(name, {})
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:  # ``from pkg import module`` names a module; else a name in ``base``
                    targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
            for target in targets:
                imported = _known(target, modules) if target.split(".")[0] == name.split(".")[0] else None
                if imported and imported != name:
                    out.setdefault(imported, node.lineno)
    return edges


def cycles(edges: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]], root: str = PACKAGE) -> int | None:
    """Index in ``layers`` of the longest entry that is ``module`` or a package above it."""
    best: tuple[int, int] | None = None  # (entry length, layer)
    for position, (_, entries) in enumerate(layers):
        for entry in entries:
            if module == entry or (entry != root and module.startswith(entry + ".")):
                if best is None or len(entry) > best[0]:
                    best = (len(entry), position)
    return None if best is None else best[1]


def upward_imports(
    edges: Mapping[str, Mapping[str, int]], layers: list[tuple[str, tuple[str, ...]]], root: str = PACKAGE
) -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of a higher layer's module."""
    found = []
    for importer, imported_lines in sorted(edges.items()):
        own = layer_of(importer, layers, root)
        for imported, line in sorted(imported_lines.items()):
            theirs = layer_of(imported, layers, root)
            if own is not None and theirs is not None and theirs > own:
                found.append((importer, imported, line))
    return found


# -- the checks on beam_rtbf ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Path]:
    return module_files(PACKAGE_DIR, PACKAGE)


@pytest.fixture(scope="module")
def edges(modules) -> dict[str, dict[str, int]]:
    return import_edges(modules)


def test_the_graph_covers_the_package(modules, edges):
    assert {"beam_rtbf", "beam_rtbf.records", "beam_rtbf.cli", "beam_rtbf.parse.session_batch"} <= set(modules)
    assert "beam_rtbf.records" in edges["beam_rtbf.parse.session_batch"]
    assert "beam_rtbf.parse.session_batch" in edges["beam_rtbf.parse.sessions"]


def test_every_module_has_a_layer(modules):
    unplaced = sorted(m for m in modules if layer_of(m, LAYERS) is None)
    assert not unplaced, f"modules with no entry in LAYERS (add them where they belong): {unplaced}"


def test_no_import_cycles(modules, edges):
    found = {frozenset(component): component for component in cycles(edges)}
    new = [
        " -> ".join(component) + "\n    " + _cycle_edges(component, edges, modules)
        for key, component in sorted(found.items(), key=lambda kv: kv[1])
        if key not in KNOWN_CYCLES
    ]
    gone = [sorted(key) for key in KNOWN_CYCLES if key not in found]
    assert not new, "import cycles (strongly connected components):\n  " + "\n  ".join(new)
    assert not gone, f"KNOWN_CYCLES entries that no longer occur (delete them): {gone}"


def test_no_upward_imports(modules, edges):
    found = upward_imports(edges, LAYERS)
    names = [name for name, _ in LAYERS]
    new = [
        f"{importer} ({names[layer_of(importer, LAYERS)]}) imports {imported} "
        f"({names[layer_of(imported, LAYERS)]}) at {modules[importer].relative_to(PACKAGE_DIR.parent)}:{line}"
        for importer, imported, line in found
        if (importer, imported) not in KNOWN_UPWARD
    ]
    gone = [pair for pair in KNOWN_UPWARD if pair not in {(a, b) for a, b, _ in found}]
    assert not new, "imports from a lower layer into a higher one:\n  " + "\n  ".join(new)
    assert not gone, f"KNOWN_UPWARD entries that no longer occur (delete them): {gone}"


def _cycle_edges(component: list[str], edges: Mapping[str, Mapping[str, int]], modules: Mapping[str, Path]) -> str:
    members = set(component)
    return "; ".join(
        f"{a} imports {b} ({modules[a].relative_to(PACKAGE_DIR.parent)}:{line})"
        for a in component
        for b, line in sorted(edges[a].items())
        if b in members
    )


# -- the checker itself, on a package made up for the purpose ------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return import_edges(module_files(root, "pkg"))


def test_checker_finds_function_level_cycles_and_ignores_type_checking_imports(tmp_path):
    edges = _package(
        tmp_path,
        {
            "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import high\n",
            "high.py": "from pkg import low\n",
            "a.py": "import json\nfrom pkg.b import thing\n",
            "b.py": "def f():\n    from . import a\n    return a\nthing = 1\n",
            "sub/__init__.py": "from .leaf import x\n",
            "sub/leaf.py": "x = 1\nimport pkg.sub\n",
        },
    )
    assert edges["pkg.low"] == {}
    assert edges["pkg.high"] == {"pkg.low": 1}
    assert edges["pkg.a"] == {"pkg.b": 2}
    assert edges["pkg.b"] == {"pkg.a": 2}
    assert cycles(edges) == [["pkg.a", "pkg.b"], ["pkg.sub", "pkg.sub.leaf"]]


def test_checker_finds_upward_imports_by_the_longest_layer_entry(tmp_path):
    edges = _package(
        tmp_path,
        {
            "base.py": "from pkg import top\n",
            "mid/__init__.py": "",
            "mid/ok.py": "from pkg import base\n",
            "mid/special.py": "from pkg import top\n",
            "top.py": "from pkg.mid import ok, special\n",
        },
    )
    layers = [("low", ("pkg", "pkg.base")), ("mid", ("pkg.mid",)), ("high", ("pkg.top", "pkg.mid.special"))]
    assert layer_of("pkg.mid.special", layers, "pkg") == 2
    assert layer_of("pkg.mid.ok", layers, "pkg") == 1
    assert layer_of("pkg.unplaced", layers, "pkg") is None
    assert upward_imports(edges, layers, "pkg") == [("pkg.base", "pkg.top", 1)]
