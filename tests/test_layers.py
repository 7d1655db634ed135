"""Layering of the package: a lower layer never imports a higher one, and there are no import cycles.

Every ``import`` counts, at module level or inside a function. Layers, bottom to top, as in the design:
leaves (errors, atomic, paths, config_io, metrics, sampling, markdown, lazy) → models, constitution → data
→ classifiers, activations → probes → guard → serve, evaluation (and the demo) → cli.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "constitutional_guard"
SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, int] = {
    "": 0,  # the package root (``__version__``)
    "errors": 0,
    "atomic": 0,
    "paths": 0,
    "config_io": 0,
    "metrics": 0,
    "sampling": 0,
    "markdown": 0,
    "lazy": 0,
    "models": 1,
    "constitution": 1,
    "data": 2,
    "classifiers": 3,
    "activations": 3,
    "probes": 4,
    "guard": 5,
    "serve": 6,
    "evaluation": 6,
    "demo": 6,
    "demo_shipped": 6,
    "cli": 7,
}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    source: str
    """Importing module, e.g. ``constitutional_guard.probes.sweep``."""
    target: str
    """Imported module, e.g. ``constitutional_guard.metrics``."""
    implicit: bool = False
    """The package ``__init__`` that importing one of its modules runs first (same layer as the module)."""


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def collect_imports(src: Path = SRC, package: str = PACKAGE) -> tuple[set[str], list[Import]]:
    """All modules of ``package`` under ``src`` and every import of one of them (any nesting depth)."""
    files = sorted((src / package).rglob("*.py"))
    modules = {module_name(f, src) for f in files}
    imports: list[Import] = []
    for path in files:
        name = module_name(path, src)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one
                targets = [
                    f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin for alias in node.names
                ]
            for target in targets:
                if target != package and not target.startswith(package + "."):
                    continue
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                imports.append(Import(path, node.lineno, name, target))
                # importing ``pkg.sub.mod`` first runs ``pkg/sub/__init__.py`` unless it is already running
                parent = target.rsplit(".", 1)[0]
                while parent != package and not (name + ".").startswith(parent + "."):
                    imports.append(Import(path, node.lineno, name, parent, implicit=True))
                    parent = parent.rsplit(".", 1)[0]
    return modules, list(dict.fromkeys(imports))  # one entry per imported module, not per imported name


def unit(module: str) -> str:
    """The top-level module or subpackage a module belongs to (``""`` for the package root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(imports: list[Import], layers: dict[str, int]) -> list[str]:
    problems = []
    for imp in imports:
        if imp.implicit:
            continue
        low, high = unit(imp.source), unit(imp.target)
        if layers[low] < layers[high]:
            problems.append(
                f"{imp.path}:{imp.line}: {imp.source} (layer {layers[low]}, {low!r}) imports {imp.target} "
                f"(layer {layers[high]}, {high!r}), a higher layer"
            )
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def describe_cycle(component: list[str], imports: list[Import], key) -> str:
    members = set(component)
    sites = sorted(
        {
            f"  {imp.path}:{imp.line}: {imp.source} imports {imp.target}"
            for imp in imports
            if key(imp.source) in members and key(imp.target) in members and key(imp.source) != key(imp.target)
        }
    )
    return " <-> ".join(component) + "\n" + "\n".join(sites)


def package_graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if unit(imp.source) != unit(imp.target):
            edges[unit(imp.source)].add(unit(imp.target))
    return edges


def module_graph(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        if imp.source != imp.target:
            edges[imp.source].add(imp.target)
    return edges


@pytest.fixture(scope="module")
def graph() -> tuple[set[str], list[Import]]:
    return collect_imports()


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    missing = sorted({unit(m) for m in modules} - set(LAYERS))
    assert not missing, f"no layer assigned to {missing}: add them to LAYERS in tests/test_layers.py"


def test_no_upward_imports(graph):
    _, imports = graph
    assert imports, "no package imports found: the parser is broken"
    problems = upward_imports(imports, LAYERS)
    assert not problems, "lower layers import higher ones:\n" + "\n".join(problems)


def test_no_cycles_between_packages(graph):
    _, imports = graph
    found = cycles(package_graph(imports))
    assert not found, "import cycles between packages:\n" + "\n".join(describe_cycle(c, imports, unit) for c in found)


def test_no_cycles_between_modules(graph):
    _, imports = graph
    found = cycles(module_graph(imports))
    assert not found, "import cycles between modules:\n" + "\n".join(
        describe_cycle(c, imports, lambda m: m) for c in found
    )


def test_checker_sees_the_package_init_that_an_import_runs(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub.leaf import x\n")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from pkg import a\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    _, imports = collect_imports(tmp_path, "pkg")
    assert cycles(module_graph(imports)) == [["pkg.a", "pkg.sub", "pkg.sub.b"]]


def test_checker_catches_an_upward_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "low").mkdir(parents=True)
    (pkg / "high").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "high" / "__init__.py").write_text("from pkg.low import thing\n")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "thing.py").write_text("def f():\n    from ..high import helper\n")
    (pkg / "high" / "helper.py").write_text("")
    _, imports = collect_imports(tmp_path, "pkg")
    problems = upward_imports(imports, {"": 0, "low": 0, "high": 1})
    assert len(problems) == 1
    assert "pkg/low/thing.py:2" in problems[0]
    assert "pkg.high.helper" in problems[0]
    assert cycles(package_graph(imports)) == [["high", "low"]]
