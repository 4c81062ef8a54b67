"""Lifecycle hooks: ``onStop(context)`` runs whenever a pool stops a worker gracefully (disable,
reload, host shutdown), ``onConfigChange(config, context)`` takes a config change without a
restart; a hook that throws or hangs is logged and the worker goes (or is replaced) anyway."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from support.processes import gone, wait_for

from host import FunctionNotFound, PoolConfig, WorkerLimits
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_RELOAD = ReloadConfig(enabled=False)


def stopper(out: Path, body: str = "") -> str:
    """A plugin whose onStop appends its pid to ``out`` (after ``body``)."""
    return f"""
export const metadata = {{ id: "stopper", name: "stopper", version: "1.0.0", apiVersion: "1.0",
  permissions: {{ write: ["{out}"] }} }};
export function pid() {{ return Deno.pid; }}
export async function onStop(ctx) {{
  {body}
  await Deno.writeTextFile("{out}", `${{Deno.pid}} ${{typeof ctx.signal}}\\n`, {{ append: true }});
}}
"""


def stopped_pids(out: Path) -> list[int]:
    return [int(line.split()[0]) for line in out.read_text().splitlines()] if out.exists() else []


async def test_on_stop_runs_on_disable_reload_and_host_shutdown(plugin_dir, make_host, tmp_path):
    out = tmp_path / "stops.txt"
    path = plugin_dir.add("stopper.js", stopper(out))
    async with make_host(reload=NO_RELOAD) as h:
        first = await h.call("stopper", "pid")
        await h.disable("stopper")
        assert stopped_pids(out) == [first]
        assert out.read_text().split()[1] == "object"  # it got a context with a signal
        await h.enable("stopper")
        second = await h.call("stopper", "pid")
        path.write_text(stopper(out, "/* v2 */"))
        assert await h.reload("stopper") is True
        await wait_for(lambda: second in stopped_pids(out))  # the old pool drains in the background
        third = await h.call("stopper", "pid")
    assert stopped_pids(out) == [first, second, third]  # the host's shutdown ran it too


async def test_a_hanging_on_stop_is_killed_at_its_deadline_and_does_not_hold_the_shutdown(
        plugin_dir, make_host, tmp_path):
    out = tmp_path / "stops.txt"
    plugin_dir.add("stopper.js", stopper(out, "await new Promise(() => {});"))
    started = time.monotonic()
    async with make_host(reload=NO_RELOAD, limits=WorkerLimits(hook_timeout=0.5)) as h:
        pid = await h.call("stopper", "pid")
        started = time.monotonic()
    assert time.monotonic() - started < 4.0
    assert gone(pid)
    assert stopped_pids(out) == []
    assert any("onStop failed" in e.message and "0.5s" in e.message for e in h.logs("stopper"))


async def test_a_throwing_on_stop_is_logged_and_the_worker_stops_anyway(plugin_dir, make_host, tmp_path):
    plugin_dir.add("stopper.js", stopper(tmp_path / "x.txt", 'throw new Error("no stop for you");'))
    async with make_host(reload=NO_RELOAD) as h:
        pid = await h.call("stopper", "pid")
        await h.disable("stopper")
        assert gone(pid)
        assert any("onStop failed" in e.message and "no stop for you" in e.message for e in h.logs("stopper"))


def configurable(hook: str) -> str:
    return f"""
export const metadata = {{ id: "conf", name: "conf", version: "1.0.0", apiVersion: "1.0",
  configSchema: {{ region: {{ type: "string", default: "eu" }} }} }};
let told = [];
export function seen(ctx) {{ return {{ pid: Deno.pid, region: ctx.config.region, told }}; }}
{hook}
"""


async def test_on_config_change_takes_the_new_config_without_a_restart(plugin_dir, make_host):
    plugin_dir.add("conf.js", configurable("export function onConfigChange(c) { told.push(c.region); }"))
    async with make_host(reload=NO_RELOAD) as h:
        before = await h.call("conf", "seen")
        assert before["region"] == "eu"
        await h.set_config("conf", {"region": "us"})
        after = await h.call("conf", "seen")
        assert after == {"pid": before["pid"], "region": "us", "told": ["us"]}  # same worker, told once
        assert h.effective_config("conf")["region"] == "us"


@pytest.mark.parametrize("hook", [
    "",  # no hook: restarted, as before
    'export function onConfigChange() { throw new Error("cannot"); }',
    "export function onConfigChange() { return new Promise(() => {}); }",  # hangs: killed at hook_timeout
])
async def test_without_a_working_on_config_change_the_workers_restart_with_the_new_config(
        plugin_dir, make_host, hook):
    plugin_dir.add("conf.js", configurable(hook))
    async with make_host(reload=NO_RELOAD, limits=WorkerLimits(hook_timeout=0.5)) as h:
        before = await h.call("conf", "seen")
        await h.set_config("conf", {"region": "us"})
        after = await h.call("conf", "seen")
        assert after["region"] == "us"
        assert after["pid"] != before["pid"]
        await wait_for(lambda: gone(before["pid"]))
        assert h.plugin("conf").state == "running"


SLOW_START = """
export const metadata = { id: "conf", name: "conf", version: "1.0.0", apiVersion: "1.0",
  configSchema: { region: { type: "string", default: "eu" } } };
console.log("importing");  // after the welcome, with the config of that moment
await new Promise((r) => setTimeout(r, 1500));  // every worker takes this long to start
let told = [];
export function seen(ctx) { return { pid: Deno.pid, region: ctx.config.region, told }; }
export async function hold(ms) { await new Promise((r) => setTimeout(r, ms)); return Deno.pid; }
export function onConfigChange(c) { told.push(c.region); }
"""


async def test_a_worker_still_starting_when_the_config_changes_is_told_too(plugin_dir, make_host):
    plugin_dir.add("conf.js", SLOW_START)
    async with make_host(reload=NO_RELOAD, pool=PoolConfig(min_workers=1, max_workers=2)) as h:
        first = h.plugin("conf").workers[0].pid
        seen: list[dict] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.call, "conf", "hold", 4000)  # the first worker is busy
            await wait_for(lambda: h.pool("conf").workers[0].load == 1)

            async def ask() -> None:
                seen.append(await h.call("conf", "seen"))
            imports = len([e for e in h.logs("conf") if e.message == "importing"])
            tg.start_soon(ask)  # a second worker starts for it (1.5 s), welcomed with "eu"
            await wait_for(lambda: len([e for e in h.logs("conf") if e.message == "importing"]) > imports)
            await h.set_config("conf", {"region": "us"})  # told to the first; the second is starting
            await wait_for(lambda: bool(seen), timeout=10)
            assert seen[0]["pid"] != first
            assert (seen[0]["region"], seen[0]["told"]) == ("us", ["us"])  # welcomed with "eu", then told
            tg.cancel_scope.cancel()


ROTATING = """
export const metadata = { id: "rot", name: "rot", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true } } };
let kept = null;
export function remember(ctx) { kept = ctx.config.apiKey; return Deno.pid; }
export function leak(ctx) { console.log(`old ${kept} new ${ctx.config.apiKey}`); return Deno.pid; }
export function onConfigChange() {}
"""


async def test_a_rotated_secret_stays_masked_in_a_worker_kept_across_the_change(plugin_dir, make_host):
    plugin_dir.add("rot.js", ROTATING)
    async with make_host(reload=NO_RELOAD) as h:
        await h.set_config("rot", {"apiKey": "sk-old-5b1e7d90"})
        pid = await h.call("rot", "remember")
        await h.set_config("rot", {"apiKey": "sk-new-0c44a1f3"})
        assert await h.call("rot", "leak") == pid  # the same worker: it still holds the old key
        line = [e.message for e in h.logs("rot") if e.message.startswith("old ")][-1]
        assert "sk-old-5b1e7d90" not in line and "sk-new-0c44a1f3" not in line, line
        assert line == "old ******** new ********", line


def starter(out: Path, body: str = "", version: str = "1.0.0") -> str:
    return f"""
export const metadata = {{ id: "starter", name: "starter", version: "{version}", apiVersion: "1.0",
  permissions: {{ write: ["{out}"] }} }};
export function pid() {{ return Deno.pid; }}
export function version() {{ return "{version}"; }}
export async function onStart(ctx) {{
  {body}
  await Deno.writeTextFile("{out}", `${{Deno.pid}} ${{JSON.stringify(ctx.config)}}\\n`, {{ append: true }});
}}
"""


async def test_on_start_runs_in_each_worker_before_it_takes_a_call(plugin_dir, make_host, tmp_path):
    """``onStart(ctx)``: before, the host had no such hook and the export was never run."""
    out = tmp_path / "starts.txt"
    plugin_dir.add("starter.js", starter(out))
    async with make_host(reload=NO_RELOAD, pool=PoolConfig(min_workers=2, max_workers=2)) as h:
        pids = {await h.call("starter", "pid") for _ in range(4)}
        started = stopped_pids(out)
        assert pids <= set(started) and len(started) == 2  # once per worker, before its first call
        assert out.read_text().split()[1] == "{}"  # its context carries the config


async def test_a_throwing_or_hanging_on_start_fails_the_reload_and_the_old_version_keeps_serving(
        plugin_dir, make_host, tmp_path):
    out = tmp_path / "starts.txt"
    path = plugin_dir.add("starter.js", starter(out))
    limits = WorkerLimits(hook_timeout=1)
    async with make_host(reload=NO_RELOAD, limits=limits) as h:
        for body, why in (('throw new Error("no database");', "no database"), ("await new Promise(() => {});",
                                                                               "did not finish within 1s")):
            path.write_text(starter(out, body, version="2.0.0"))
            assert await h.reload("starter") is False
            info = h.plugin("starter")
            # why, not only where to look (before: "... failed in a new worker (its log says why)")
            assert info.version == "1.0.0" and "onStart" in info.reload_error and why in info.reload_error
            assert await h.call("starter", "version") == "1.0.0"
        path.write_text(starter(out, version="3.0.0"))
        assert await h.reload("starter") is True and await h.call("starter", "version") == "3.0.0"


async def test_a_slow_on_start_never_takes_the_pool_past_max_workers(plugin_dir, make_host, tmp_path):
    """A worker running its onStart counts as one starting: before, it was counted nowhere, so the
    pool started another each time one finished (3 or more processes for max_workers=2)."""
    out = tmp_path / "starts.txt"
    plugin_dir.add("starter.js", starter(out, "await new Promise((r) => setTimeout(r, 400));"))
    async with make_host(reload=NO_RELOAD, pool=PoolConfig(min_workers=2, max_workers=2)) as h:
        await anyio.sleep(1.5)  # what a third worker (and its onStart) would take
        assert len(h.plugin("starter").workers) == 2
        assert len(stopped_pids(out)) == 2, out.read_text()


async def test_a_reload_proves_on_start_even_when_the_pool_keeps_no_worker(plugin_dir, make_host, tmp_path):
    """With ``min_workers = 0`` a new pool started no worker, so its onStart ran only at the first
    call: a version whose onStart throws was reported reloaded (True), the working version was
    stopped, and every call after failed until the plugin was in a crash loop. Now a pool of a
    module exporting onStart starts one worker to run it, which the idle reaper stops later."""
    out = tmp_path / "starts.txt"
    path = plugin_dir.add("starter.js", starter(out))
    async with make_host(reload=NO_RELOAD, pool=PoolConfig(min_workers=0, max_workers=1, idle_timeout=0.3)) as h:
        assert await h.call("starter", "version") == "1.0.0"
        path.write_text(starter(out, 'throw new Error("no database");', version="2.0.0"))
        assert await h.reload("starter") is False
        info = h.plugin("starter")
        assert info.version == "1.0.0" and "onStart" in (info.reload_error or "")
        assert await h.call("starter", "version") == "1.0.0"
        path.write_text(starter(out, version="3.0.0"))
        assert await h.reload("starter") is True and await h.call("starter", "version") == "3.0.0"
        await wait_for(lambda: not h.plugin("starter").workers, timeout=10)  # min_workers 0 still holds


async def test_a_caller_cannot_run_a_lifecycle_hook_as_a_function(plugin_dir, make_host):
    """``call("p", "onStop")`` (``POST /api/plugins/p/call/onStop``) ran the hook in a worker that
    goes on serving (a plugin closing its connections there then served broken), and ``onStart``
    ran twice in one worker. The host runs them itself, at their moments only."""
    plugin_dir.add("hooked.js", """
        let started = 0, stopped = 0;
        export async function onStart(ctx) { started++; }
        export async function onStop(ctx) { stopped++; }
        export async function onConfigChange(config, ctx) {}
        export function counts() { return [started, stopped]; }
    """)
    async with make_host(reload=NO_RELOAD, pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        for hook in ("onStart", "onStop", "onConfigChange"):
            with pytest.raises(FunctionNotFound, match="lifecycle hook"):
                await h.call("hooked", hook)
        assert await h.call("hooked", "counts") == [1, 0]
