"""A dependency that goes away (removed, disabled) or is reloaded out of a dependent's declared
range puts the dependent (and what depends on it in turn) in `error` naming the dependency, as a
fresh start would; it comes back by itself once the dependency is back in range."""

from __future__ import annotations

import anyio
import pytest
from support.processes import wait_for

from host import PluginUnavailable
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

NO_WATCH = ReloadConfig(enabled=False)


def plugin(pid: str, ver: str, deps: str = "{}") -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "{ver}", apiVersion: "1.0", '
            f"dependencies: {deps} }};\nexport function v() {{ return \"{ver}\"; }}\n")


def states(h) -> dict[str, tuple[str, str | None]]:
    return {i.id: (i.state, i.error) for i in h.plugins()}


async def test_a_removed_dependency_puts_its_dependents_in_error_until_it_is_back(plugin_dir, make_host):
    base = plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    plugin_dir.add("top.js", plugin("top", "1.0.0", '{ app: "^1.0.0" }'), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        assert await h.call("top", "v") == "1.0.0"
        base.unlink()
        await h.rescan()
        now = states(h)
        assert "base" not in now
        assert now["app"] == ("error", "dependency 'base' (^1.0.0) is not installed")
        assert now["top"] == ("error", "dependency 'app' (^1.0.0) is in error")
        assert not h.plugin("app").workers and not h.plugin("top").workers
        with pytest.raises(PluginUnavailable, match="'base'"):
            await h.call("app", "v")
        plugin_dir.add("base.js", plugin("base", "1.1.0"), auto_metadata=False)
        await h.rescan()
        assert [await h.call(p, "v") for p in ("base", "app", "top")] == ["1.1.0", "1.0.0", "1.0.0"]
        assert {p: s for p, (s, _) in states(h).items()} == {"base": "running", "app": "running", "top": "running"}


async def test_a_dependency_reloaded_out_of_range_and_back(plugin_dir, make_host):
    base = plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        base.write_text(plugin("base", "2.0.0"))
        assert await h.reload("base") is True
        assert states(h)["app"] == ("error", "dependency 'base' needs ^1.0.0, installed is 2.0.0")
        with pytest.raises(PluginUnavailable, match="needs"):
            await h.call("app", "v")
        base.write_text(plugin("base", "1.2.0"))
        assert await h.reload("base") is True
        assert states(h)["app"] == ("running", None) and await h.call("app", "v") == "1.0.0"


async def test_a_disabled_dependency_and_a_dependency_installed_later(plugin_dir, make_host):
    plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    plugin_dir.add("lonely.js", plugin("lonely", "1.0.0", '{ ghost: "^1.0.0" }'), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        assert states(h)["lonely"] == ("error", "dependency 'ghost' (^1.0.0) is not installed")
        await h.disable("base")
        assert states(h)["app"] == ("error", "dependency 'base' (^1.0.0) is disabled")
        await h.enable("base")
        assert states(h)["app"] == ("running", None) and await h.call("app", "v") == "1.0.0"
        plugin_dir.add("ghost.js", plugin("ghost", "1.0.0"), auto_metadata=False)
        await h.rescan()
        assert states(h)["lonely"] == ("running", None) and await h.call("lonely", "v") == "1.0.0"


async def test_a_dependency_leaving_the_range_while_a_dependent_reloads_keeps_that_version_out(
        plugin_dir, make_host):
    base = plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    app = plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        seen: list[str] = []
        h.add_log_listener(lambda p, worker, msg: seen.append(msg.message))
        outcome: list[bool] = []

        async def reload_app() -> None:
            outcome.append(await h.reload("app"))

        app.write_text(plugin("app", "1.1.0", '{ base: "^1.0.0" }') + (
            'export async function onStart() { console.log("app starting"); '
            "await new Promise((r) => setTimeout(r, 1500)); }\n"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(reload_app)
            await wait_for(lambda: "app starting" in seen, timeout=10)
            base.write_text(plugin("base", "2.0.0"))
            assert await h.reload("base") is True  # while app 1.1.0 starts
        assert outcome == [False]
        assert states(h)["app"] == ("error", "dependency 'base' needs ^1.0.0, installed is 2.0.0")
        assert not h.plugin("app").workers
        base.write_text(plugin("base", "1.1.0"))
        assert await h.reload("base") is True
        assert states(h)["app"] == ("running", None)
        assert h.plugin("app").version == "1.1.0" and await h.call("app", "v") == "1.1.0"  # read anew


async def test_at_start_a_dependency_that_failed_to_load_is_named_as_such(plugin_dir, make_host):
    plugin_dir.add("base.js", "export function broken( {", auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }'), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        state, error = states(h)["app"]  # not "not installed": in error, and why
        assert state == "error" and error.startswith("dependency 'base' (^1.0.0) is in error: base"), error


async def test_a_dependency_disabled_while_a_dependent_is_enabled_keeps_it_from_running(plugin_dir, make_host):
    """``enable(app)`` checked app's dependencies, then started its pool outside the registry's
    lock (its onStart may take up to hook_timeout); ``disable(base)`` meanwhile found app not yet
    serving, so nothing judged it again, and app went to `running` with its dependency off."""
    plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }') + (
        'export async function onStart() { console.log("app starting"); '
        "await new Promise((r) => setTimeout(r, 1500)); }\n"), auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        await h.disable("app")
        seen: list[str] = []
        h.add_log_listener(lambda p, worker, msg: seen.append(msg.message))
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.enable, "app")
            await wait_for(lambda: "app starting" in seen, timeout=10)
            await h.disable("base")  # while app starts
        assert states(h)["app"] == ("error", "dependency 'base' (^1.0.0) is disabled"), states(h)
        assert not h.plugin("app").workers
        await h.enable("base")
        await wait_for(lambda: states(h)["app"] == ("running", None), timeout=20)
        assert await h.call("app", "v") == "1.0.0"


async def test_a_dependents_calls_in_flight_drain_without_holding_the_change_that_stopped_it(plugin_dir, make_host):
    """Stopping a dependent (its dependency disabled) awaited the drain of its pool inside the
    disable, under the registry's lock: a 3 s call of the dependent held the disable (and every
    other reload) 3 s. Its pool drains in the background now; the call still finishes."""
    plugin_dir.add("base.js", plugin("base", "1.0.0"), auto_metadata=False)
    plugin_dir.add("app.js", plugin("app", "1.0.0", '{ base: "^1.0.0" }') + (
        'export async function slow() { await new Promise((r) => setTimeout(r, 3000)); return "done"; }\n'),
        auto_metadata=False)
    async with make_host(reload=NO_WATCH) as h:
        answers: list[str] = []

        async def slow() -> None:
            answers.append(await h.call("app", "slow", timeout=10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            await wait_for(lambda: h.plugin("app").running == 1, timeout=10)
            with anyio.fail_after(1.5):  # before: the 3 s call's whole drain
                await h.disable("base")
            assert states(h)["app"] == ("error", "dependency 'base' (^1.0.0) is disabled")
        assert answers == ["done"]
