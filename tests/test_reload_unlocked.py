"""A reload starts the new version's pool outside the registry's lock: a version whose onStart
hangs holds up its own reload only, never another plugin's reload or a config change; two reloads
of one plugin, or a removal during a start, still leave exactly one pool serving (or none)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from support.processes import deno_children, wait_for

from host import WorkerLimits
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_RELOAD = ReloadConfig(enabled=False)
HOOK_TIMEOUT = 8.0  # what a hanging onStart held every other reload and config change for


def hanger(out: Path, body: str = "", version: str = "1.0.0") -> str:
    """A plugin whose onStart appends a line to ``out``, then runs ``body``."""
    return f"""
export const metadata = {{ id: "hang", name: "hang", version: "{version}", apiVersion: "1.0",
  permissions: {{ write: ["{out}"] }} }};
export function version() {{ return "{version}"; }}
export async function onStart(ctx) {{
  await Deno.writeTextFile("{out}", "started\\n", {{ append: true }});
  {body}
}}
"""


def svc(n: int) -> str:
    return (f'export const metadata = {{ id: "svc", name: "svc", version: "1.0.{n}", apiVersion: "1.0" }};\n'
            f"export function which() {{ return {n}; }}\n")


CONF = """
export const metadata = { id: "conf", name: "conf", version: "1.0.0", apiVersion: "1.0",
  configSchema: { region: { type: "string", default: "eu" } } };
export function region(config) { return config.region; }
export function current(ctx) { return null; }
"""


def lines(out: Path) -> int:
    return len(out.read_text().splitlines()) if out.exists() else 0


async def test_a_hanging_on_start_holds_neither_other_reloads_nor_config_changes(plugin_dir, make_host, tmp_path):
    out = tmp_path / "starts.txt"
    hang = plugin_dir.add("hang.js", hanger(out))
    other = plugin_dir.add("svc.js", svc(1))
    plugin_dir.add("conf.js", CONF)
    async with make_host(reload=NO_RELOAD, limits=WorkerLimits(hook_timeout=HOOK_TIMEOUT)) as h:
        assert lines(out) == 1
        hang.write_text(hanger(out, "await new Promise(() => {});", version="2.0.0"))
        outcome: list[bool] = []

        async def reload_hanging() -> None:
            outcome.append(await h.reload("hang"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reload_hanging)
            await wait_for(lambda: lines(out) == 2, timeout=10)  # v2's onStart runs, and hangs
            with anyio.fail_after(HOOK_TIMEOUT / 2):  # before: each waited for the hanging onStart
                other.write_text(svc(2))
                assert await h.reload("svc") is True
                assert await h.call("svc", "which") == 2
                await h.set_config("conf", {"region": "us"})
                assert h.get_config("conf") == {"region": "us"}
            assert not outcome  # still starting meanwhile
        assert outcome == [False]
        info = h.plugin("hang")
        assert info.version == "1.0.0" and "onStart" in (info.reload_error or "")
        assert await h.call("hang", "version") == "1.0.0"


SLOW = "await new Promise((r) => setTimeout(r, 1500));"


async def test_two_reloads_of_one_plugin_swap_in_order_and_leave_one_pool(plugin_dir, make_host, tmp_path):
    out = tmp_path / "starts.txt"
    path = plugin_dir.add("hang.js", hanger(out))
    async with make_host(reload=NO_RELOAD) as h:
        outcomes: list[bool] = []

        async def reload() -> None:
            outcomes.append(await h.reload("hang"))

        path.write_text(hanger(out, SLOW, version="2.0.0"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(reload)
            await wait_for(lambda: lines(out) == 2, timeout=10)  # v2 starting
            path.write_text(hanger(out, SLOW, version="3.0.0"))
            tg.start_soon(reload)  # waits for v2's start, then reads v3
        assert outcomes == [True, True]
        info = h.plugin("hang")
        assert info.version == "3.0.0" and await h.call("hang", "version") == "3.0.0"
        await wait_for(lambda: len(deno_children()) == 1, timeout=10)  # v1's and v2's pools stopped
        assert [w.pid for w in h.plugin("hang").workers] == deno_children()


@pytest.mark.parametrize("how", ["disable", "remove"])
async def test_a_plugin_stopped_while_its_new_version_starts_stays_stopped(plugin_dir, make_host, tmp_path, how):
    out = tmp_path / "starts.txt"
    path = plugin_dir.add("hang.js", hanger(out))
    async with make_host(reload=NO_RELOAD) as h:
        outcome: list[bool] = []

        async def reload() -> None:
            outcome.append(await h.reload("hang"))

        path.write_text(hanger(out, SLOW, version="2.0.0"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(reload)
            await wait_for(lambda: lines(out) == 2, timeout=10)
            if how == "disable":
                await h.disable("hang")
            else:
                path.unlink()
                await h.rescan()
            assert not outcome  # done while the start went on
        assert outcome == [False]
        if how == "disable":
            assert h.plugin("hang").state == "disabled" and not h.plugin("hang").workers
        else:
            assert all(i.id != "hang" for i in h.plugins())
        await wait_for(lambda: not deno_children(), timeout=10)  # the new pool was stopped, not swapped in


TELLING = """
export const metadata = { id: "told", name: "told", version: "1.0.0", apiVersion: "1.0",
  configSchema: { region: { type: "string", default: "eu" } } };
export function region(ctx) { return ctx.config.region; }
export async function onConfigChange(config) { console.log("told " + config.region); await new Promise(() => {}); }
"""


async def test_a_hanging_on_config_change_holds_neither_other_reloads_nor_config_changes(plugin_dir, make_host):
    plugin_dir.add("told.js", TELLING, auto_metadata=False)
    other = plugin_dir.add("svc.js", svc(1))
    plugin_dir.add("conf.js", CONF)
    async with make_host(reload=NO_RELOAD, limits=WorkerLimits(hook_timeout=HOOK_TIMEOUT)) as h:
        seen: list[str] = []
        h.add_log_listener(lambda plugin, worker, msg: seen.append(msg.message))
        done: list[str] = []

        async def change() -> None:
            await h.set_config("told", {"region": "us"})
            done.append("told")

        async with anyio.create_task_group() as tg:
            tg.start_soon(change)
            await wait_for(lambda: "told us" in seen, timeout=10)  # its onConfigChange runs, and hangs
            with anyio.fail_after(HOOK_TIMEOUT / 2):
                other.write_text(svc(2))
                assert await h.reload("svc") is True
                await h.set_config("conf", {"region": "us"})
            assert not done
        assert await h.call("told", "region") == "us"  # the hook timed out: restarted with the config
