"""The package's shape, read from its source with ``ast`` (issue 16): PluginHost is a facade only
the entry points import, no module grows past ~500 lines (worker.py, the one dense core module,
excepted), and the modules import each other without a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

HOST = Path(__file__).resolve().parents[1] / "host"
MAX_LINES = 520
LONGER_ALLOWED = {"host.worker"}
FACADE = "host.plugin_host"
FACADE_USERS = {"host", "host.sync", "host.server", "host.cli", "host.cli_serve", "host.__main__", "host.testing"}  # entry points


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(HOST.rglob("*.py")):
        parts = path.relative_to(HOST.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The host modules ``name`` imports, at any level (TYPE_CHECKING blocks excepted: they
    are not imported at run time)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "host")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "host":
                continue
            for alias in node.names:  # ``from . import x`` may name a module
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_only_the_entry_points_import_the_facade():
    users = {name for name, deps in graph().items() if FACADE in deps}
    assert users <= FACADE_USERS, f"{sorted(users - FACADE_USERS)} import {FACADE}: give them a callback instead"


def test_no_module_is_over_the_line_budget():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONGER_ALLOWED}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_modules_import_each_other_without_a_cycle():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if dep == "host" or node == "host":  # the package's __init__ re-exports everything
                continue
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"
