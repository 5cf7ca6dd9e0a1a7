"""The package's import graph points one way: no cycles (``__main__`` blocks included), every command
line in the alkit/cli/ package, and an import inside a function only with its reason beside it."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "alkit"
#: Modules that import no other alkit module but each other.
BOTTOM = ("alkit.io", "alkit.checks", "alkit.rows", "alkit.stats", "alkit.metrics")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def is_cli(module: str) -> bool:
    return module == "alkit.cli" or module.startswith("alkit.cli.")


def import_graph() -> dict[str, set[str]]:
    """module → the alkit modules it imports anywhere (module level, inside functions, and under
    ``if __name__ == "__main__":``)."""
    modules = _modules()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "alkit":
                for alias in node.names:   # `from alkit import runs` imports the module alkit.experiments.runs
                    target = owner(f"{node.module}.{alias.name}") or owner(node.module)
                    if target and target != name:
                        targets.add(target)
            elif isinstance(node, ast.Import):
                targets.update(t for a in node.names if a.name.split(".")[0] == "alkit"
                               for t in [owner(a.name)] if t and t != name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt):
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if not state.get(node):
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    # Packages import their submodules (registration); a submodule importing its package's
    # registry is the same direction, so package -> submodule edges are dropped before the check.
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in import_graph().items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_layers_point_down():
    graph = import_graph()
    for module in BOTTOM:
        assert not {t for t in graph[module] if t not in BOTTOM}, (module, graph[module])
    for module, targets in graph.items():   # nothing but `python -m alkit` imports the command line
        if not is_cli(module) and module != "alkit.__main__":
            assert not [t for t in targets if is_cli(t)], module
    for module in (m for m in graph if is_cli(m) and m != "alkit.cli"):   # commands import no command
        assert not [t for t in graph[module] if is_cli(t) and t != "alkit.cli.common"], module
    assert "alkit.experiments.reproduce" not in (graph["alkit.experiments.launch"] | graph["alkit.experiments.runs"]
                                                  | graph["alkit.experiments.catalog"])


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_folders_are_the_layers():
    """alkit/data/ loads data and imports nothing above it; the core (pool, scores, probe, strategies)
    imports no data loader and no experiment; the pool imports no trainer; the report and the
    catalog import no loader; below alkit/experiments/ only the light catalog is imported."""
    graph = import_graph()
    core = ("alkit.pool", "alkit.scores", "alkit.rows", "alkit.probe", "alkit.logreg", "alkit.strategies")
    for module, targets in graph.items():
        if _within(module, "alkit.data"):
            assert all(t in BOTTOM or _within(t, "alkit.data") for t in targets), (module, targets)
        if any(_within(module, c) for c in core):
            above = [t for t in targets if not (t in BOTTOM or any(_within(t, c) for c in core))]
            assert not above, (module, above)
        if not (_within(module, "alkit.experiments") or is_cli(module)
                or module in ("alkit.__main__", "alkit.experiment")):
            assert all(t == "alkit.experiments.catalog" for t in targets if _within(t, "alkit.experiments")), module
    trainers = ("alkit.probe", "alkit.logreg", "alkit.finetune", "alkit.loop")
    assert not graph["alkit.pool"] & set(trainers), graph["alkit.pool"]
    for module in ("alkit.report", "alkit.experiments.catalog", "alkit.plots"):
        loaders = [t for t in graph[module] if _within(t, "alkit.data") or t == "alkit.experiments.loading"]
        assert not loaders, (module, loaders)


def test_the_layer_test_catches_a_loader_in_the_report(monkeypatch):
    # The rule above must be able to fail: a report importing the loading module breaks it.
    graph = import_graph()
    graph["alkit.report"] = graph["alkit.report"] | {"alkit.experiments.loading"}
    monkeypatch.setattr(sys.modules[__name__], "import_graph", lambda: graph)
    with pytest.raises(AssertionError, match="alkit.report"):
        test_the_folders_are_the_layers()


def test_every_argument_parser_lives_in_cli():
    for name, path in _modules().items():
        if is_cli(name):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                assert "argparse" not in [a.name for a in node.names], f"{path.name} imports argparse"
            if isinstance(node, ast.ImportFrom):
                assert node.module != "argparse", f"{path.name} imports from argparse"


def test_imports_inside_functions_say_why():
    """Outside alkit/cli/ (whose commands import the library lazily so that --help answers at once, as
    its docstring says), an import inside a function carries its reason on its line or the one before."""
    for name, path in _modules().items():
        if is_cli(name):
            continue
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, before = lines[node.lineno - 1], lines[node.lineno - 2]
                    assert "#" in here or before.strip().startswith("#"), f"{path}:{node.lineno}: {here.strip()}"
