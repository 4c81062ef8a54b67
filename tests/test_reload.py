"""Hot reload: new code takes new calls while the old pool drains; broken code never replaces
working code; the watcher notices new, changed and removed plugins."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from support.processes import process_gone, wait_for

from host import HostError, PluginNotFound, PoolConfig
from host.config import ReloadConfig

pytestmark = pytest.mark.anyio


def version(n: int, extra: str = "") -> str:
    return (f'export const metadata = {{ id: "svc", name: "svc", version: "1.0.{n}", apiVersion: "1.0" }};\n'
            f"export async function which(ms = 0) {{ if (ms) await new Promise((r) => setTimeout(r, ms)); return {n}; }}\n"
            + extra)


@pytest.mark.timeout(60)
async def test_reload_under_continuous_load_fails_no_call(plugin_dir, make_host):
    path = plugin_dir.add("svc.js", version(1))
    pool = PoolConfig(min_workers=2, max_workers=4)
    async with make_host(pool=pool, reload=ReloadConfig(enabled=False)) as h:
        results: list[int] = []
        started_after_swap: list[int] = []
        failures: list[BaseException] = []
        stop = anyio.Event()
        swapped = anyio.Event()

        async def caller(ms: int):
            while not stop.is_set():
                after = swapped.is_set()
                try:
                    value = await h.call("svc", "which", ms)
                except HostError as exc:  # any failure at all is a test failure
                    failures.append(exc)
                    continue
                results.append(value)
                if after:
                    started_after_swap.append(value)

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(caller, 150 if i < 2 else 0)  # two callers keep slow calls in flight
            await wait_for(lambda: len(results) > 50)
            path.write_text(version(2))
            old = {w.pid for w in h.plugin("svc").workers if w.pid is not None}
            assert await h.reload("svc") is True
            swapped.set()
            n_at_swap = len(results)
            await wait_for(lambda: len(results) > n_at_swap + 50 and results[-1] == 2)
            stop.set()
        assert failures == []
        assert 1 in results and 2 in results
        assert started_after_swap and set(started_after_swap) == {2}  # new calls go to the new code
        info = h.plugin("svc")
        assert info.version == "1.0.2" and info.state == "running" and info.reload_error is None
        # the old pool drained and stopped: only the new pool's workers are left
        assert len(info.workers) >= 2
        assert old and not old & {w.pid for w in info.workers}
        await wait_for(lambda: all(process_gone(p) for p in old))


async def test_broken_new_version_keeps_the_old_one_serving(plugin_dir, make_host):
    path = plugin_dir.add("svc.js", version(1))
    async with make_host(reload=ReloadConfig(enabled=False)) as h:
        events = []
        h.subscribe(events.append)
        old_pid = h.plugin("svc").workers[0].pid
        path.write_text(version(2) + "export function broken( {\n")
        assert await h.reload("svc") is False
        assert await h.call("svc", "which") == 1
        info = h.plugin("svc")
        assert info.state == "running" and info.version == "1.0.1" and info.workers[0].pid == old_pid
        assert "SyntaxError" in info.reload_error
        assert [e.kind for e in events] == ["reload_failed"] and "SyntaxError" in events[0].reason
        path.write_text(version(3))  # fixed: the next reload succeeds
        assert await h.reload("svc") is True
        assert await h.call("svc", "which") == 3 and h.plugin("svc").reload_error is None


async def test_a_new_version_with_an_invalid_manifest_is_refused(plugin_dir, make_host):
    path = plugin_dir.add("svc.js", version(1))
    async with make_host(reload=ReloadConfig(enabled=False)) as h:
        path.write_text(version(2).replace('apiVersion: "1.0"', 'apiVersion: "9.0"'))
        assert await h.reload("svc") is False
        assert "apiVersion" in h.plugin("svc").reload_error
        assert await h.call("svc", "which") == 1


async def test_watcher_loads_new_reloads_changed_and_stops_removed_plugins(plugin_dir, make_host):
    path = plugin_dir.add("svc.js", version(1))
    broken = plugin_dir.add("late.js", "export function f( {", auto_metadata=False)
    async with make_host(reload=ReloadConfig(enabled=True, interval=0.1)) as h:
        assert h.plugin("late").state == "error"
        t0 = time.monotonic()
        path.write_text(version(2))
        await wait_for(lambda: h.plugin("svc").version == "1.0.2")
        assert time.monotonic() - t0 < 3
        assert await h.call("svc", "which") == 2
        broken.write_text('export const metadata = { id: "late", name: "late", version: "1.0.0", apiVersion: "1.0" };\n'
                          "export function f() { return 'fixed'; }\n")
        await wait_for(lambda: h.plugin("late").state == "running")
        assert await h.call("late", "f") == "fixed"
        plugin_dir.add("fresh.js", "export function hi() { return 'new here'; }")
        await wait_for(lambda: any(i.id == "fresh" and i.state == "running" for i in h.plugins()))
        assert await h.call("fresh", "hi") == "new here"
        path.unlink()
        await wait_for(lambda: all(i.id != "svc" for i in h.plugins()))
        with pytest.raises(PluginNotFound):
            await h.call("svc", "which")


@pytest.mark.timeout(60)
async def test_a_file_and_a_directory_of_one_plugin_name_are_never_both_served(plugin_dir, make_host, caplog):
    """helper-113: greet/mod.js added beside a serving greet.js (same id, same version) was loaded
    as a second plugin: both listed running, calls went to one and reloads to the other, and
    after a restart the other one won. The newcomer is left out, with a warning naming both."""
    head = 'export const metadata = { id: "greet", name: "greet", version: "1.0.0", apiVersion: "1.0" };\n'
    plugin_dir.add("greet.js", head + 'export function who() { return "file"; }\n')
    async with make_host(reload=ReloadConfig(enabled=False)) as h:
        assert await h.call("greet", "who") == "file"
        plugin_dir.add("greet/mod.js", head + 'export function who() { return "dir"; }\n')
        await h.rescan()
        assert [p.id for p in h.plugins()] == ["greet"] and await h.call("greet", "who") == "file"
    said = [r.getMessage() for r in caplog.records if "rename one" in r.getMessage()]
    assert said and str(plugin_dir.root / "greet" / "mod.js") in said[0] and str(plugin_dir.root / "greet.js") in said[0]


async def test_looking_at_the_plugin_files_does_not_hold_the_event_loop(plugin_dir, make_host, monkeypatch):
    """Each rescan stats every file of every plugin, and a changed plugin's files again every
    ``settle`` until quiet, on the event loop: a plugin directory of 100,000 files took 0.5 s a look,
    so the host stalled half of every second, and every 0.1 s look of the settle wait (a million
    files: 5 s, past the heartbeats). Now they are looked at in a thread."""
    import host.plugins.reload as reload_mod

    real = reload_mod.fingerprint

    def slow(root):
        time.sleep(0.3)  # what a large plugin directory costs
        return real(root)

    for mod in ("host.plugins.reload", "host.plugins.watch", "host.plugins.registry"):
        monkeypatch.setattr(f"{mod}.fingerprint", slow)
    path = plugin_dir.add("svc.js", version(1))
    async with make_host(reload=ReloadConfig(enabled=False, settle=0.1)) as h:
        gaps: list[float] = []

        async def tick() -> None:
            last = time.monotonic()
            while True:
                await anyio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            path.write_text(version(2))
            await h.rescan()
            tg.cancel_scope.cancel()
        assert await h.call("svc", "which") == 2
        assert max(gaps) < 0.25, max(gaps)


async def test_a_second_file_of_a_running_id_and_version_found_by_a_rescan_is_a_duplicate(plugin_dir, make_host):
    """At start a second file with the same id and version is 'duplicate of ...'. Found by a
    rescan beside the running one (vault.js running, vault@1.0.0.js added), both ran: the copy's
    pool started with the first's decrypted config, storage and approvals, and emit asked both
    (helper-76's finding). The first read wins there too."""
    def vault(tag: str) -> str:
        return f"""
export const metadata = {{ id: "vault", name: "vault", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["message.in"], configSchema: {{ apiKey: {{ type: "string", secret: true }} }} }};
export function who() {{ return "{tag}"; }}
export function onEvent(event, payload, ctx) {{ return "{tag}"; }}"""
    plugin_dir.add("vault.js", vault("original"))
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        await h.set_config("vault", {"apiKey": "s3cret-vault-key"})
        plugin_dir.add("vault@1.0.0.js", vault("copy"))
        await h.rescan()
        states = sorted((i.state, i.error or "") for i in h.plugins() if i.id == "vault")
        assert [s for s, _ in states] == ["error", "running"], states  # before: both running
        assert "duplicate of" in states[0][1] and states[0][1].endswith("vault.js"), states
        assert await h.call("vault", "who") == "original"
        assert [r.value for r in await h.emit("message.in", {})] == ["original"]


@pytest.mark.timeout(60)
async def test_a_plugin_linked_in_stops_when_its_link_goes_and_follows_a_swapped_link(plugin_dir, make_host, tmp_path):
    """A plugin kept elsewhere is installed by a symlink (docs/security.md): removing the link
    left it serving until the host restarted, and swapping the link to a new release left both
    serving (helper-95): the record was known by the link's target, which stays. The link is
    what the watcher looks at now."""
    import os

    rel1, rel2, broken = tmp_path / "rel1", tmp_path / "rel2", tmp_path / "broken"
    for n, d in ((1, rel1), (2, rel2), (3, broken)):
        d.mkdir()
        (d / "svc.js").write_text(version(n) + ("export function oops( {\n" if d == broken else ""))
    link = plugin_dir.root / "svc.js"
    link.symlink_to(rel1 / "svc.js")

    def swap_to(target: Path) -> None:
        swap = plugin_dir.root / ".svc.tmp"  # a hidden name: no plugin of its own meanwhile
        swap.symlink_to(target / "svc.js")
        os.replace(swap, link)  # an atomic swap (ln -sfn; mv -T)

    async with make_host(reload=ReloadConfig(enabled=True, interval=0.1)) as h:
        assert await h.call("svc", "which") == 1
        failed: list[BaseException] = []

        async def keep_calling() -> None:  # a swap is a reload: no call fails meanwhile
            while True:
                try:
                    await h.call("svc", "which")
                except HostError as exc:
                    failed.append(exc)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_calling)
            swap_to(broken)  # a broken release: the one serving keeps serving
            await wait_for(lambda: h.plugin("svc").reload_error is not None, timeout=10)
            assert await h.call("svc", "which") == 1
            swap_to(rel2)
            await wait_for(lambda: [(i.version, i.state) for i in h.plugins() if i.id == "svc"]
                           == [("1.0.2", "running")], timeout=10)
            tg.cancel_scope.cancel()
        assert failed == []
        assert await h.call("svc", "which") == 2
        link.unlink()
        await wait_for(lambda: all(i.id != "svc" for i in h.plugins()), timeout=10)
        with pytest.raises(PluginNotFound):
            await h.call("svc", "which")
    assert (rel1 / "svc.js").exists() and (rel2 / "svc.js").exists()


@pytest.mark.timeout(60)
async def test_a_restart_overtaken_by_a_disable_says_so(plugin_dir, make_host):
    """helper-95: /restart racing /disable answered 503 "restart failed: None" (the reload gave way
    to the disable, and no reload error was set). It says the plugin is disabled now, by another
    request, and how to start it."""
    import anyio

    from host import PluginUnavailable

    plugin_dir.add("slowp.js", version(1).replace('"svc"', '"slowp"'))
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        outcome: list[object] = []

        async def restart() -> None:
            try:
                outcome.append(await h.restart("slowp"))
            except PluginUnavailable as exc:
                outcome.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(restart)  # it finds the plugin serving, then waits for the disable begun first
            await h.disable("slowp")
        state = h.plugin("slowp").state
    assert state == "disabled"
    assert len(outcome) == 1 and isinstance(outcome[0], PluginUnavailable), outcome
    assert "None" not in outcome[0].message and "disabled now (by another request)" in outcome[0].message, outcome
