"""The shape of the tree: one import name, layers that depend one way, no import cycles.

Every import counts, also one inside a function: deferring an import hides a cycle from the
interpreter, not from the reader who has to understand both modules at once. Imports under
``if TYPE_CHECKING:`` are annotations only and do not count. Read with ``ast``; nothing is
imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "pipeline")
SOURCES = (ROOT / "src" / "legx", ROOT / "methods", ROOT / "pipeline", ROOT / "scripts", ROOT / "tests")


def _module_name(path: Path) -> str:
    """The installed name of a module of methods/ or pipeline/ (both live under ``legx``)."""
    parts = ["legx", *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports anywhere (TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                visit([child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)])

    visit(tree.body)
    return {name for name in found if name in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            # Importing a package's submodule imports the package first; that edge is not a cycle.
            if node.startswith(target + "."):
                continue
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
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


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "a.x": {"a"}}) is None


def test_no_module_imports_itself_through_others():
    assert _cycle(_graph()) is None


def test_methods_depend_on_no_pipeline_and_no_ray():
    offenders = {}
    for path in (ROOT / "methods").rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        bad = names & {"pipeline", "ray"}
        if any(name.startswith("legx.pipeline") for name in _imported_names(path)):
            bad.add("legx.pipeline")
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_analysis_and_cli_are_not_imported_by_the_engine():
    graph = _graph()
    upward = {name: sorted(target for target in targets if target.startswith(("legx.pipeline.analysis", "legx.pipeline.cli")))
              for name, targets in graph.items() if name.startswith("legx.pipeline.engine")}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_everything_imports_legx_through_its_one_name():
    """``import methods`` would work from the repository root and nowhere else: a second copy of
    each module, and a wheel that fails on first import. Code, scripts and tests all say legx."""
    offenders = {}
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            bare = sorted(name for name in _imported_names(path) if name.split(".")[0] in PACKAGES)
            if bare:
                offenders[str(path.relative_to(ROOT))] = bare
    assert offenders == {}
