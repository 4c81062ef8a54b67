"""Dependents judged again when what they depend on changes: a plugin removed, disabled or
unloaded, or reloaded into another version, leaves each running plugin that depends on it
judged as a fresh start would judge it. One whose dependencies are no longer met goes to
`error` naming the dependency (missing, disabled, or outside its declared range), its workers
stopped, and so in turn the plugins depending on it; once they are met again (the dependency
back, or reloaded into the range) it starts again by itself, its code read anew (judged for
approval as any new version). Plugins put in `error` for their dependencies at start come back
the same way when what they miss is installed later."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .dependencies import resolve
from .lifecycle import SERVING, Plugin
from .manifest import Manifest

if TYPE_CHECKING:
    from .registry import Registry

_PHRASES = {"error": "in error", "pending": "waiting for approval", "loading": "still loading",
            "discovered": "not loaded yet", "loaded": "not started yet"}  # else the state's name


def dependency_error(reg: Registry, record: Plugin, manifest: Manifest) -> str | None:
    """Why ``manifest``'s dependencies are not met by the plugins serving now (the highest
    version of each, as at start), or None."""
    serving = reg.newest(r for r in reg.records if r.manifest is not None and r.state in SERVING
                         and r.id != record.id)
    others = {pid: r.manifest for pid, r in serving.items() if r.manifest is not None}
    _, errors = resolve({**others, record.id: manifest}, unavailable(reg, {*others, record.id}))
    return errors.get(record.id)


def unavailable(reg: Registry, taken: set[str]) -> dict[str, str]:
    """The plugins installed but not among ``taken``, each with its state as an error names it."""
    return {r.id: _phrase(r) for r in reg.records if r.id not in taken}


def _phrase(record: Plugin) -> str:
    """``record``'s state as a dependent's error names it; one in error for its own reason (it
    failed to load or start) with that reason, which is the author's to fix."""
    if record.state == "error" and record.error and not record.awaits_dependencies:
        return f"in error: {record.error}"
    return _PHRASES.get(record.state, record.state)


def wait_for_dependencies(record: Plugin, why: str) -> None:
    """``record`` cannot start for its dependencies: `error` until they are met (``rejudge``)."""
    record.set_state("error", why)
    record.awaits_dependencies = True


async def rejudge(reg: Registry, changed: Iterable[str]) -> None:
    """The plugins ``changed`` stopped serving, or serve another version, or serve again: each
    plugin depending on one of them is judged again (``dependency_error``), and those it stops
    or starts are, in turn, changed for the plugins depending on them."""
    todo = list(dict.fromkeys(changed))
    needed = {d for r in reg.records if r.manifest is not None for d in r.manifest.dependencies}
    while todo:
        pid = todo.pop(0)
        if pid not in needed:
            continue
        for r in list(reg.records):
            if r.manifest is None or pid not in r.manifest.dependencies or r not in reg.records:
                continue
            why = dependency_error(reg, r, r.manifest)
            if r.state in SERVING and why is not None:
                pool, r.pool = r.pool, None
                wait_for_dependencies(r, why)  # first: a call while the pool drains is told why
                if pool is not None and reg._tg is not None:
                    reg._tg.start_soon(pool.stop)  # drains in the background (its calls finish), as a swap's
                elif pool is not None:
                    await pool.stop()
                todo.append(r.id)
            elif r.state == "error" and r.awaits_dependencies and why is None:
                await reg.reload_record(r)  # its code read anew, as an enable would; its own dependents follow


__all__ = ["dependency_error", "rejudge", "unavailable", "wait_for_dependencies"]
