"""The package layout's rules, checked on the source: no import cycle, heavy libraries only where they belong.

The import graph is read from the source with ``ast`` (every import: module level, inside functions and
under ``TYPE_CHECKING``), so a cycle that only a lazy import hides still fails here. ``python -m
tests.test_layout`` prints the graph's cycles and each module's imports of the harness.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path) -> str:
    """Dotted name of a source file of the harness (``harness/sweep/__init__.py`` -> ``harness.sweep``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> list[tuple[str, str]]:
    """(imported name, module it resolves to) for every import in ``path`` that names a harness module or a library."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from pkg import submodule` needs the submodule, not what pkg/__init__ re-exports.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            target = name
            while target and target not in modules:
                target = target.rpartition(".")[0]
            found.append((name, target or name))
    return found


def import_graph() -> dict[str, set[str]]:
    """Harness module -> the harness modules it imports (itself excluded)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {
        mod: {target for _, target in _imports(path, modules) if target in modules and target != mod}
        for mod, path in paths.items()
    }


def library_imports() -> dict[str, set[str]]:
    """Harness module -> the top-level names of the libraries it imports."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        mod: {name.split(".")[0] for name, target in _imports(path, set(paths)) if not name.startswith("harness")}
        for mod, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_harness():
    assert cycles(import_graph()) == []


def test_a_short_top_level():
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top) <= 12, top


def _owners(library: str) -> list[str]:
    return sorted(mod for mod, libs in library_imports().items() if library in libs)


def test_ray_only_in_the_sweep_driver_and_the_cluster_module():
    assert _owners("ray") == [
        "harness.cluster",
        "harness.sweep.driver",
        "harness.sweep.progress",
        "harness.sweep.resume",
        "harness.sweep.searcher",
        "harness.sweep.trainable",
    ]


def test_mlflow_only_in_tracking():
    assert all(mod.startswith("harness.tracking") for mod in _owners("mlflow")), _owners("mlflow")


def test_the_training_loop_knows_neither_ray_nor_mlflow():
    graph, libraries = import_graph(), library_imports()
    reachable, todo = set(), ["harness.training.loop"]
    while todo:
        mod = todo.pop()
        if mod not in reachable:
            reachable.add(mod)
            todo.extend(graph[mod])
    assert not {lib for mod in reachable for lib in libraries[mod]} & {"ray", "mlflow"}


def test_no_library_module_imports_the_command_line():
    entries = {"harness.demo", "harness.final_compare", "harness.replay", "harness.sweep.__main__"}
    importers = sorted(mod for mod, deps in import_graph().items() if "harness.cli" in deps)
    assert set(importers) <= entries, importers


LIGHT = ("harness.config", "harness.results", "harness.report", "harness.sweep", "harness.models", "harness.errors")


@pytest.mark.parametrize("module", LIGHT)
def test_light_layers_load_neither_torch_nor_ray_nor_mlflow(module):
    code = (
        f"import sys, {module}\n"
        "print(','.join(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_a_benchmark_loads_and_validates_without_torch():
    code = (
        "import sys\n"
        "from harness.config import load_benchmark\n"
        "bench = load_benchmark('benchmarks/smoke.yaml')\n"
        "print(bench.architectures, 'torch' in sys.modules)"
    )
    cwd = PACKAGE.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd).stdout
    assert out.strip() == "('unet', 'unetpp') False"


@pytest.mark.parametrize(
    "package", ["harness.sweep", "harness.compare", "harness.audit", "harness.stats", "harness.models"]
)
def test_every_name_a_facade_exports_resolves(package):
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


if __name__ == "__main__":
    graph = import_graph()
    for component in cycles(graph):
        print("cycle:", " <-> ".join(component))
    for mod in sorted(graph):
        print(mod, "->", ", ".join(sorted(graph[mod])) or "-")
