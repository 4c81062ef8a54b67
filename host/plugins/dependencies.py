"""Dependencies between plugins: semver ranges, cycles (named), and a load order."""

from __future__ import annotations

from collections.abc import Mapping

import semantic_version as sv

from .manifest import Manifest


def resolve(manifests: dict[str, Manifest], unavailable: Mapping[str, str] | None = None,
            ) -> tuple[list[list[str]], dict[str, str]]:
    """Load order as levels (each level's plugins depend only on earlier levels) and, per
    plugin that cannot load, why: a missing or incompatible dependency, a cycle, or a
    dependency that itself cannot load. ``unavailable``: plugins installed but with no usable
    manifest (failed to load), by id, and why."""
    errors: dict[str, str] = {}
    for pid, m in manifests.items():
        for dep, rng in m.dependencies.items():
            other = manifests.get(dep)
            if other is None and unavailable and dep in unavailable:
                errors[pid] = f"dependency {dep!r} ({rng}) cannot load: {unavailable[dep]}"
            elif other is None:
                errors[pid] = f"dependency {dep!r} ({rng}) is not installed"
            elif not sv.NpmSpec(rng).match(other.semver):
                errors[pid] = f"dependency {dep!r} needs {rng}, installed is {other.version}"
            if pid in errors:
                break
    for cycle in _cycles(manifests):
        text = " -> ".join([*cycle, cycle[0]])
        for pid in cycle:
            errors.setdefault(pid, f"dependency cycle: {text}")
    # A plugin whose dependency cannot load cannot load either.
    changed = True
    while changed:
        changed = False
        for pid, m in manifests.items():
            if pid in errors:
                continue
            bad = next((d for d in m.dependencies if d in errors), None)
            if bad is not None:
                errors[pid] = f"dependency {bad!r} cannot load: {errors[bad]}"
                changed = True
    levels: list[list[str]] = []
    placed: set[str] = set()
    pending = sorted(p for p in manifests if p not in errors)
    while pending:
        level = [p for p in pending if all(d in placed for d in manifests[p].dependencies)]
        if not level:  # unreachable: cycles were removed above
            break
        levels.append(level)
        placed.update(level)
        pending = [p for p in pending if p not in placed]
    return levels, errors


def _cycles(manifests: dict[str, Manifest]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search, each reported once."""
    seen: set[frozenset[str]] = set()
    out: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(manifests[node].dependencies):
            if dep not in manifests:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    out.append(cycle)
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(manifests):
        if node not in state:
            visit(node)
    return out
