"""Hot reload against the way editors and deploy tools really write files: a change that keeps
the size and the mtime (``tar x``, ``cp -p``, ``rsync -a``), an editor's save that renames the
old file away before writing the new one, a copy still writing when the watcher looks."""

from __future__ import annotations

import os

import anyio
import pytest

from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_WATCH = ReloadConfig(enabled=False)


def version(n: int, extra: str = "") -> str:
    return (f'export const metadata = {{ id: "svc", name: "svc", version: "1.0.{n}", apiVersion: "1.0" }};\n'
            f"export function which() {{ return {n}; }}\n" + extra)


async def test_a_new_version_with_the_old_size_and_mtime_is_reloaded(plugin_dir, make_host):
    """``cp -p``/``tar x`` of a version bump: same size, the mtime the file had elsewhere (here:
    the very one the host saw). Before, the change was never seen."""
    path = plugin_dir.add("svc.js", version(1))
    seen = path.stat()
    async with make_host(reload=NO_WATCH) as h:
        path.write_text(version(2))
        os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
        assert path.stat().st_size == seen.st_size
        await h.rescan()
        assert await h.call("svc", "which") == 2 and h.plugin("svc").version == "1.0.2"


async def _editor_save(path, text: str, gap: float, *, backup: bool = True) -> None:
    """vim's write with ``backup``: the old file renamed to ``name~``, then the new one written
    ``gap`` seconds later (the editor's own time between its two steps)."""
    if backup:
        path.rename(path.with_name(path.name + "~"))
    else:
        path.unlink()
    await anyio.sleep(gap)
    path.write_text(text)


@pytest.mark.parametrize("new", ["broken", "good"])
async def test_a_save_that_renames_the_file_away_first_never_stops_the_plugin(plugin_dir, make_host, new):
    """A rescan between vim's rename of ``mod.ts`` to ``mod.ts~`` and its write of the new
    ``mod.ts``: before, the plugin was stopped as removed from disk and loaded again as new, so a
    broken save left nothing serving (no reload_error, the old version gone) and a good one
    restarted it from nothing."""
    path = plugin_dir.add("svc/mod.ts", version(1))
    text = version(2, "export function broken( {\n") if new == "broken" else version(2)
    async with make_host(reload=ReloadConfig(enabled=False, settle=0.3)) as h:
        events = []
        h.subscribe(events.append)
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.rescan)
            await _editor_save(path, text, gap=0.02)
        info = h.plugin("svc")
        assert [e.state for e in events if e.kind == "state"] == []  # never stopped, never loaded anew
        if new == "broken":
            assert info.state == "running" and info.version == "1.0.1" and "SyntaxError" in info.reload_error
            assert await h.call("svc", "which") == 1  # the last good version serves
            path.write_text(version(3))  # fixed: recovers at the next rescan, no restart
            await h.rescan()
            assert await h.call("svc", "which") == 3 and h.plugin("svc").reload_error is None
        else:
            assert [e.kind for e in events] == ["reloaded"] and await h.call("svc", "which") == 2


async def test_a_file_deleted_for_good_still_stops_its_plugin(plugin_dir, make_host):
    path = plugin_dir.add("svc.js", version(1))
    async with make_host(reload=ReloadConfig(enabled=False, settle=0.05)) as h:
        path.unlink()
        await h.rescan()
        assert "svc" not in h.states()


async def test_a_copy_still_writing_is_read_once_it_is_complete(plugin_dir, make_host):
    """``cp`` over a plugin: the file truncated, its first part written, the rest a moment later.
    Before, a rescan in between read the truncated module: a reload that failed (SyntaxError), the
    new version served only at a later rescan."""
    path = plugin_dir.add("svc.js", version(1))
    full = version(2, "export function more() { return 'more'; }\n")
    async with make_host(reload=ReloadConfig(enabled=False, settle=0.4)) as h:
        events = []
        h.subscribe(events.append)
        async with anyio.create_task_group() as tg:
            with path.open("w") as f:
                f.write(full[:-20])
                f.flush()
                tg.start_soon(h.rescan)
                await anyio.sleep(0.15)  # the copy's own pace
                f.write(full[-20:])
        assert [e.kind for e in events] == ["reloaded"]
        assert await h.call("svc", "more") == "more" and h.plugin("svc").reload_error is None


def dependent(pid: str, ver: str, deps: str = "{}") -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "{ver}", apiVersion: "1.0", '
            f"dependencies: {deps} }};\nexport function v() {{ return \"{ver}\"; }}\n")


async def test_a_checkout_that_moves_a_plugin_and_its_dependency_together_reloads_both(plugin_dir, make_host):
    """``git checkout`` of a branch where ``app`` 2.0.0 needs ``base ^2.0.0`` and ``base`` is 2.0.0,
    and where ``app`` also needs a new plugin ``extra``: before, ``app`` (reloaded first, by id)
    was refused while ``base`` was still 1.x and ``extra`` not there, and stayed on 1.0.0 (with a
    reload_error) until its own file changed again."""
    app = plugin_dir.add("app.js", dependent("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    base = plugin_dir.add("base.js", dependent("base", "1.0.0"), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        app.write_text(dependent("app", "2.0.0", '{ base: "^2.0.0", extra: "^1.0.0" }'))
        base.write_text(dependent("base", "2.0.0"))
        plugin_dir.add("extra.js", dependent("extra", "1.0.0"), auto_metadata=False)
        await h.rescan()
        assert [await h.call(p, "v") for p in ("app", "base", "extra")] == ["2.0.0", "2.0.0", "1.0.0"]
        assert h.plugin("app").reload_error is None
        app.write_text(dependent("app", "3.0.0", '{ base: "^3.0.0" }'))  # unmet for good: the old one serves
        await h.rescan()
        assert await h.call("app", "v") == "2.0.0" and "needs ^3.0.0" in h.plugin("app").reload_error


async def test_a_plugin_whose_files_keep_changing_never_holds_a_reload_of_another(plugin_dir, make_host):
    """The watcher waits for a changing plugin's files to be quiet (at most ``interval``) before it
    takes the registry's lock. Before, it waited holding the lock: ``reload``, a station change
    and the next rescan of every other plugin waited the whole ``interval`` behind a file that a
    tool kept writing (here 2 s; 30 s for a host polling every 30 s)."""
    plugin_dir.add("svc.js", version(1))
    busy = plugin_dir.root / "busy"
    busy.mkdir()
    (busy / "mod.js").write_text('export const metadata = { id: "busy", name: "busy", version: "1.0.0", '
                                 'apiVersion: "1.0" };\nexport function hi() { return 1; }\n')
    async with make_host(reload=ReloadConfig(interval=2.0, settle=0.1)) as h:
        assert await h.call("svc", "which") == 1
        waits: list[float] = []

        async def write_on() -> None:  # a download into the plugin's directory, say
            n = 0
            while True:
                n += 1
                (busy / "notes.txt").write_text("x" * n)
                await anyio.sleep(0.03)

        async with anyio.create_task_group() as tg:
            tg.start_soon(write_on)
            for _ in range(14):
                t0 = anyio.current_time()
                assert await h.reload("svc") is True
                waits.append(anyio.current_time() - t0)
                await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
        assert max(waits) < 1.0, waits
        assert await h.call("busy", "hi") == 1
