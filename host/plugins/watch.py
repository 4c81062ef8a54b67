"""What a rescan does with the plugin files: new plugins loaded, changed ones reloaded, removed
ones stopped, once their files have been quiet for ``[reload] settle`` seconds.

Editors and deploy tools do not write a plugin in one step: vim renames the old file away
(``mod.ts~``) before it writes the new one, ``cp`` truncates a file and then writes it, a
``git checkout`` or a copy of a directory writes its files one after the other. A rescan that
looked in between read a truncated or half-copied module (swapped in as a broken or partial
version), or found no entry module and stopped the plugin as "removed from disk": its workers
stopped, and the version that came next, if broken, had no working one to fall back on. So a
rescan that finds a plugin changed, gone or new looks again until those files stop changing
(``settle`` seconds without a change, at most ``interval`` seconds in all: a file written without
end is then taken as it is). A rescan that finds nothing changed costs what it did: a stat per file.
A plugin whose stat changed but whose files hold what its serving version was read from (a save
without a change, ``touch``) is not reloaded: the digest of their content (reload.content) says so."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .discovery import PluginSource, in_vanished_dir, left_out_once, taken_by
from .lifecycle import SERVING, STARTING, Plugin
from .reload import content, fingerprint, quiet

if TYPE_CHECKING:
    from .registry import Registry

IDLE = frozenset({"disabled", "stopped", *STARTING})  # not reloaded: off, or still loading (a later rescan)


async def _unchanged(record: Plugin) -> bool:
    """Whether every file of the serving version holds what it held when that version was read
    (its content digest): a save without a change, a ``touch``, the same file copied or renamed
    into place again change the stat, not the code, and restarted the workers for nothing (not
    when a newer version failed or waits for approval: a reload of what is on disk settles that)."""
    return (record.state in SERVING and record.digest is not None and record.reload_error is None
            and record.pending_manifest is None
            and await anyio.to_thread.run_sync(content, record.source.root) == record.digest)


def _changed(record: Plugin, seen: dict[Path, tuple] | None = None) -> bool:
    """Whether ``record``'s module is gone or its fingerprint moved; ``seen``: the fingerprint
    taken is kept there by root, so that the caller need not walk the files again."""
    if record.source.gone():
        return True
    if record.state in IDLE:
        return False
    fp = fingerprint(record.source.root)
    if seen is not None:
        seen[record.source.root] = fp
    return fp != record.fingerprint


async def settle_files(reg: Registry, files: bool) -> dict[Path, tuple | None]:
    """Before the registry's lock (a reload or a config change never waits behind a copy in
    progress): wait until the plugins found changed, gone or new are quiet; their roots, each
    with its quiet fingerprint (None: still changing past ``interval``, taken as it is)."""
    if not files:
        return {}
    known = {r.source.module for r in reg.records}
    records = list(reg.records)  # stat'ed in a thread: 100,000 files take 0.5 s
    roots = await anyio.to_thread.run_sync(lambda: [r.source.root for r in records if _changed(r)])
    roots += [s.root for s in reg.discover() if s.module not in known]
    if not roots:
        return {}
    calm = await quiet(roots, reg.config.reload.settle, reg.config.reload.interval)
    return await anyio.to_thread.run_sync(lambda: {root: fingerprint(root) if calm else None for root in roots})


async def scan_files(reg: Registry, files: bool, settled: dict[Path, tuple | None]) -> None:
    """Load the new plugins, reload the changed ones and stop the removed ones, as ``settle_files``
    found them quiet; those changed since it looked (the shared state's own files, written under the
    lock, or a copy begun meanwhile) are waited for here; ``files`` false: only the usage-script
    stations new in the shared state."""
    known = {r.source.module for r in reg.records}
    taken = {(r.source.id, r.source.version_hint): r.source for r in reg.records}

    def duplicate(s: PluginSource) -> bool:  # a link swapped to a new release is the same plugin moved
        held = taken.get((s.id, s.version_hint))
        return held is not None and held.module.exists() and (s.entry is None or s.entry != held.entry)

    def new() -> list[PluginSource]:
        fresh = [s for s in reg.discover() if s.module not in known and (files or s.id in reg.station_scripts())]
        for s in [s for s in fresh if duplicate(s)]:
            left_out_once(s.module, taken_by(s, taken[s.id, s.version_hint].module))  # before: both served
            fresh.remove(s)
        return fresh

    fresh = new()
    records = list(reg.records)  # stat'ed in a thread: 100,000 files take 0.5 s
    seen: dict[Path, tuple] = {}
    changed = await anyio.to_thread.run_sync(lambda: [r for r in records if _changed(r, seen)]) if files else []
    roots = {r.source.root for r in changed} | ({s.root for s in fresh} if files else set())
    late = await anyio.to_thread.run_sync(lambda: [
        root for root in roots
        if root not in settled or settled[root] not in (None, seen[root] if root in seen else fingerprint(root))])
    if late:
        await quiet(late, reg.config.reload.settle, reg.config.reload.interval)
        fresh = new()
    progress = bool(fresh)
    for r in changed:
        if r not in reg.records:
            continue
        if r.source.gone() and (moved := await anyio.to_thread.run_sync(r.source.moved)) is not None:
            r.source = moved  # a link swapped to a new release: reloaded, not stopped and loaded anew
            known.add(moved.module)
            fresh = [s for s in fresh if s.module != moved.module]
            progress |= await reg.reload_record(r, await anyio.to_thread.run_sync(fingerprint, moved.root))
            continue
        if r.source.gone():
            if not in_vanished_dir(r.source, reg.config.plugin_dirs):  # its whole directory: kept
                await reg.stop_record(r, "stopped", "removed from disk", forget=True)
        elif r.state not in IDLE and (fp := await anyio.to_thread.run_sync(fingerprint, r.source.root)) != r.fingerprint:
            if await _unchanged(r):
                r.fingerprint = fp  # saved again as it was: nothing to reload
                continue
            progress |= await reg.reload_record(r, fp)  # back, or changed: a broken version leaves the old one serving
    if fresh:
        async with reg.lock.stepped_out():  # their records are known: no other rescan loads them again
            await reg.load(fresh)
    await _unmet_again(reg, changed, progress)


async def _unmet_again(reg: Registry, changed: list[Plugin], progress: bool) -> None:
    """Reload again the changed plugins refused for their dependencies, while another plugin of
    the same change now serves anew: a ``git checkout`` that moves ``app`` to ``base ^2.0.0`` and
    ``base`` to 2.0.0 reloads ``app`` first (sorted by id), refused while ``base`` is 1.x; before,
    it stayed on its old version until its own file changed again."""
    waiting = [r for r in changed if r.unmet]
    while waiting and progress:
        progress = False
        for r in list(waiting):
            if r in reg.records and r.state not in IDLE and r.unmet:
                progress |= await reg.reload_record(r, await anyio.to_thread.run_sync(fingerprint, r.source.root))
            if not r.unmet:
                waiting.remove(r)


__all__ = ["scan_files", "settle_files"]
