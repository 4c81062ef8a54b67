"""``HostConfig.load = "background"``: the host starts before the plugins the manifest cache does
not know are read; they are `loading` meanwhile, and a call to one waits for its load within its
own deadline and moves it to the front. Failures, edits and the watcher behave as at a waiting
start; ``serve`` loads in the background and shows the state over HTTP and in ``status``."""

from __future__ import annotations

import json

import anyio
import pytest
from support.plugins import CALC, fresh_state
from support.processes import wait_for
from support.servers import run_cli, serve_process

from host import CallTimeout, PluginUnavailable
from host.plugins.manifest_cache import INSPECT_SLOTS

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def gated(pid: str, ms: int, body: str = "export function add(a, b) { return a + b; }") -> str:
    """A plugin whose load takes ``ms`` in the zero-permission worker that reads its metadata,
    and no time in its own workers (which hold the env grant it declares)."""
    return f"""
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",
  permissions: {{ env: ["SLOW_GATE"] }} }};
if (Deno.permissions.querySync({{ name: "env", variable: "SLOW_GATE" }}).state !== "granted") {{
  await new Promise((r) => setTimeout(r, {ms}));
}}
{body}
"""


async def test_uncached_plugins_are_loading_after_start_and_a_call_waits_for_its_load(plugin_dir, make_host,
                                                                                      tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("slow.js", gated("slow", 800))
    state = str(fresh_state(tmp_path / "own", shared_state))
    async with make_host(load="background", state_dir=state) as h:
        seen: list[str] = []
        h.subscribe(lambda ev: seen.append(ev.state) if ev.plugin == "slow" and ev.kind == "state" else None)
        assert h.states() == {"calc": "loading", "slow": "loading"}  # an empty manifest cache
        assert h.plugin("slow").workers == [] and not h.plugin("slow").exports
        assert await h.call("slow", "add", 1, 2) == 3  # waited for its load
        assert seen == ["loaded", "running"] and h.plugin("slow").exports == ["add"]
        await wait_for(lambda: h.states()["calc"] == "running", timeout=20)
    async with make_host(load="background", state_dir=state) as h:  # the cache knows both now
        assert h.states() == {"calc": "running", "slow": "running"}


async def test_waiting_is_the_default_for_an_embedded_host(plugin_dir, make_host):
    plugin_dir.add("slow.js", gated("slow", 300))
    async with make_host() as h:
        assert h.config.load == "auto" and h.states() == {"slow": "running"}


@pytest.mark.timeout(60)
async def test_a_call_moves_its_plugin_to_the_front_of_the_loads(plugin_dir, make_host):
    names = [f"s{i:02d}" for i in range(3 * INSPECT_SLOTS)]  # three rounds of slots
    for name in names:
        plugin_dir.add(f"{name}.js", gated(name, 700))
    async with make_host(load="background") as h:
        last = names[-1]  # the end of the queue
        assert await h.call(last, "add", 2, 3) == 5
        still = [n for n, s in h.states().items() if s == "loading"]
        assert still, "the call waited for every load before its own"
        await wait_for(lambda: set(h.states().values()) == {"running"}, timeout=40)


async def test_a_call_past_its_deadline_while_the_plugin_loads_is_a_timeout(plugin_dir, make_host):
    plugin_dir.add("slow.js", gated("slow", 1500))
    async with make_host(load="background") as h:
        with pytest.raises(CallTimeout, match="still loading"):
            await h.call("slow", "add", 1, 2, timeout=0.2)
        assert h.plugin("slow").state == "loading"
        assert await h.call("slow", "add", 1, 2) == 3  # the load went on


async def test_a_plugin_that_fails_to_load_in_the_background_ends_in_error(plugin_dir, make_host):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("broken.js", "export const metadata = {;\n", auto_metadata=False)
    async with make_host(load="background") as h:
        assert h.plugin("broken").state == "loading"
        with pytest.raises(PluginUnavailable, match="SyntaxError"):
            await h.call("broken", "x")
        assert h.plugin("broken").state == "error" and "SyntaxError" in (h.plugin("broken").error or "")
        assert await h.call("calc", "add", 1, 2) == 3


async def test_a_plugin_edited_while_it_loads_serves_the_new_code(plugin_dir, make_host, tmp_path, shared_state):
    path = plugin_dir.add("slow.js", gated("slow", 800, "export function v() { return 1; }"))
    state = str(fresh_state(tmp_path / "own", shared_state))
    async with make_host(load="background", state_dir=state, reload={"interval": 0.05}) as h:
        reloaded = anyio.Event()
        h.subscribe(lambda ev: reloaded.set() if ev.plugin == "slow" and ev.kind == "reloaded" else None)
        record = h._registry.record("slow")
        # its load has begun with this version: its files' stat and content taken (the content a
        # moment after the stat; an edit between the two is read as the version loaded, and
        # serves with no reload to wait for)
        await wait_for(lambda: record.read_digest is not None)
        path.write_text(gated("slow", 0, "export function v() { return 2; }"))
        try:  # what its load read (the edit may land before its code was digested and read); no
            assert await h.call("slow", "v") in (1, 2)  # worker runs code other than that (helper-114)
        except PluginUnavailable as exc:
            assert "no longer what version 1.0.0 was loaded from" in exc.message
        with anyio.fail_after(20):
            await reloaded.wait()  # the watcher saw the edit once it had loaded, not while
        assert await h.call("slow", "v") == 2
    async with make_host(load="background", state_dir=state) as h:  # the cache holds the new code only
        assert h.states() == {"slow": "running"} and await h.call("slow", "v") == 2


async def test_disabling_a_plugin_while_it_loads_keeps_it_disabled(plugin_dir, make_host):
    plugin_dir.add("slow.js", gated("slow", 600))
    async with make_host(load="background") as h:
        await h.disable("slow")
        assert h.plugin("slow").state == "disabled"
        await wait_for(lambda: not h._registry.loader.busy(), timeout=10)
        assert h.plugin("slow").state == "disabled" and h.plugin("slow").workers == []
        await h.enable("slow")
        assert await h.call("slow", "add", 1, 2) == 3


async def test_a_plugin_depending_on_one_still_loading_starts_after_it(plugin_dir, make_host):
    plugin_dir.add("base.js", gated("base", 400))
    plugin_dir.add("top.js", gated("top", 0).replace('apiVersion: "1.0",', 'apiVersion: "1.0", dependencies: { base: "^1.0.0" },'))
    plugin_dir.add("orphan.js", gated("orphan", 0).replace('apiVersion: "1.0",', 'apiVersion: "1.0", dependencies: { nothere: "^1.0.0" },'))
    async with make_host(load="background") as h:
        assert await h.call("top", "add", 1, 1) == 2  # waited for the whole batch, base first
        assert h.states() == {"base": "running", "top": "running", "orphan": "error"}
        assert "nothere" in (h.plugin("orphan").error or "")


async def test_events_and_balances_wait_for_the_plugins_still_loading(plugin_dir, make_host):
    plugin_dir.add("listener.js", gated("listener", 500, 'export function onEvent(e, p) { return "saw " + p; }')
                   .replace('apiVersion: "1.0",', 'apiVersion: "1.0", capabilities: ["message.incoming"],'))
    plugin_dir.add("station.js", gated("station", 500, 'export function queryBalance() { return { balance: 7, currency: "USD" }; }')
                   .replace('apiVersion: "1.0",', 'apiVersion: "1.0", capabilities: ["balance"],'))
    async with make_host(load="background") as h:
        assert h.states() == {"listener": "loading", "station": "loading"}
        replies = await h.emit("message.incoming", "hi")
        assert [(r.plugin, r.value) for r in replies] == [("listener", "saw hi")]
        [balance] = await h.query_balances()
        assert (balance.provider, balance.status, balance.balance) == ("station", "success", 7)


@pytest.mark.timeout(90)
def test_serve_loads_in_the_background_and_http_and_status_show_loading(plugin_dir, state_dir, tmp_path):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("slow.js", gated("slow", 4000))
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state_dir)]
    with serve_process(tmp_path, *common, ready=False) as srv:
        def loading() -> dict | None:
            _, body = srv.request("GET", "/healthz", timeout=2)
            return body if (body.get("plugins") or {}).get("slow") == "loading" else None
        health = srv.poll(loading, "slow loading", 20)
        assert health["ready"] is False
        status, listed = srv.request("GET", "/api/plugins")
        assert status == 200 and {p["id"]: p["state"] for p in listed}["slow"] == "loading"
        shown = run_cli("status", "--json", *common, cwd=tmp_path)
        assert shown.returncode == 1, shown.stderr  # not ready yet
        assert json.loads(shown.stdout)["plugins"]["slow"] in ("loading", "running"), shown.stderr
        status, answer = srv.request("POST", "/api/plugins/slow/call/add", {"args": [40, 2]}, timeout=30)
        assert (status, answer) == (200, {"ok": True, "result": 42})  # waited for its load
        srv.wait_ready()
        shown = run_cli("status", "--json", *common, cwd=tmp_path)
        assert shown.returncode == 0 and json.loads(shown.stdout)["plugins"] == {"calc": "running", "slow": "running"}
