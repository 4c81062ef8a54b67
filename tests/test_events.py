"""emit(): events to plugins by priority; healthCheck on a schedule."""

from __future__ import annotations

import anyio
import pytest
from support.processes import wait_for

from host import HealthConfig

pytestmark = pytest.mark.anyio


def handler(pid: str, priority: int, body: str, caps: str = '["message.incoming"]') -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0", '
            f"capabilities: {caps}, priority: {priority} }};\n"
            f"export async function onEvent(event, payload, ctx) {{ {body} }}\n")


async def test_emit_reaches_subscribed_plugins_by_priority_with_replies_and_errors(plugin_dir, make_host):
    plugin_dir.add("low.js", handler("low", 1, 'return "low saw " + payload.content;'))
    plugin_dir.add("high.js", handler("high", 10, 'return { by: "high", event };'))
    plugin_dir.add("broken.js", handler("broken", 5, 'throw new PluginError(ErrorTypes.PROVIDER_ERROR, "nope");'))
    plugin_dir.add("deaf.js", handler("deaf", 99, "return 1;", caps='["user.online"]'))
    async with make_host() as h:
        replies = await h.emit("message.incoming", {"content": "hi"})
        assert [r.plugin for r in replies] == ["high", "broken", "low"]
        assert replies[0].ok and replies[0].value == {"by": "high", "event": "message.incoming"}
        assert not replies[1].ok and replies[1].error["type"] == "PluginError" and "nope" in replies[1].error["message"]
        assert replies[2].value == "low saw hi"
        assert [r.plugin for r in await h.emit("user.online")] == ["deaf"]
        assert await h.emit("nobody.listens") == []


async def test_emit_stop_at_first_handler_and_per_plugin_timeout(plugin_dir, make_host):
    plugin_dir.add("slow.js", handler("slow", 50, "while (true) {}"))
    plugin_dir.add("pass.js", handler("pass", 20, "return null;"))
    plugin_dir.add("take.js", handler("take", 10, 'return "taken";'))
    plugin_dir.add("never.js", handler("never", 1, 'return "too late";'))
    async with make_host() as h:
        replies = await h.emit("message.incoming", {}, timeout=0.5, stop_at_first=True)
        assert [r.plugin for r in replies] == ["slow", "pass", "take"]
        assert replies[0].error["type"] == "CallTimeout" and replies[2].value == "taken"
    async with make_host(events={"timeout": 0.5}) as h:  # the setting's, named (helper-113: nothing said which)
        replies = await h.emit("message.incoming", {}, stop_at_first=True)
        assert replies[0].error["message"].endswith("([events] timeout; emit's timeout= for one emit)"), replies[0]


async def test_failing_health_check_marks_plugin_degraded_and_recovery_restores_it(plugin_dir, make_host):
    plugin_dir.add("flaky.js", """
        let healthy = true;
        export function setHealthy(v) { healthy = v; return v; }
        export function healthCheck(config) { if (!healthy) throw new Error("upstream down"); return true; }
    """)
    async with make_host(health=HealthConfig(interval=0.1, timeout=1.0)) as h:
        assert h.plugin("flaky").state == "running"
        await h.call("flaky", "setHealthy", False)
        await wait_for(lambda: h.plugin("flaky").state == "degraded", interval=0.02)
        info = h.plugin("flaky")
        assert "upstream down" in (info.error or "")
        assert await h.call("flaky", "setHealthy", True) is True  # degraded still serves calls
        assert (await h.check_health()) == {"flaky@1.0.0": True}
        assert h.plugin("flaky").state == "running"


@pytest.mark.timeout(60)
async def test_a_wildcard_capability_takes_the_events_it_names(plugin_dir, make_host):
    """``capabilities: ["message.*"]`` is accepted as an event capability (it needs onEvent), but
    before, emit compared names exactly and such a plugin never got an event, with nothing said."""
    plugin_dir.add("any.js", handler("any", 1, "return event;", caps='["message.*"]'))
    plugin_dir.add("exact.js", handler("exact", 5, "return event;"))
    async with make_host() as h:
        replies = await h.emit("message.incoming")
        assert [(r.plugin, r.value) for r in replies] == [("exact", "message.incoming"), ("any", "message.incoming")]
        assert [r.plugin for r in await h.emit("message.edited")] == ["any"]
        assert await h.emit("message.a.b") == [] and await h.emit("messages.x") == []  # one segment, not a prefix


@pytest.mark.timeout(60)
async def test_a_plugin_reloaded_mid_emit_into_a_version_without_the_event_is_not_called(
        plugin_dir, make_host, tmp_path):
    """The chain's first handler is still running when the second plugin is reloaded into a
    version that no longer takes the event (no onEvent): before, emit called it anyway and the
    reply was a FunctionNotFound error."""
    go = tmp_path / "go"
    plugin_dir.add("first.js", f'''
export const metadata = {{ id: "first", name: "first", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["message.incoming"], priority: 10, permissions: {{ read: ["{go}"] }} }};
export async function onEvent(event, payload, ctx) {{
  console.log("first runs");
  for (;;) {{ try {{ await Deno.stat("{go}"); return "first"; }} catch {{ await new Promise((r) => setTimeout(r, 10)); }} }}
}}''', auto_metadata=False)
    second = plugin_dir.add("second.js", handler("second", 1, 'return "second";'))
    async with make_host(reload={"enabled": False}) as h:
        seen: list[str] = []
        h.add_log_listener(lambda plugin, worker, msg: seen.append(msg.message))
        replies = []

        async def emit() -> None:
            replies.extend(await h.emit("message.incoming", timeout=20))

        async with anyio.create_task_group() as tg:
            tg.start_soon(emit)
            await wait_for(lambda: "first runs" in seen, timeout=10)
            second.write_text('export const metadata = { id: "second", name: "second", version: "2.0.0", '
                              'apiVersion: "1.0" };\nexport function other() { return 1; }\n')
            assert await h.reload("second") is True
            go.write_text("")
        assert [(r.plugin, r.ok, r.value) for r in replies] == [("first", True, "first")]


@pytest.mark.timeout(60)
async def test_a_health_answer_from_a_version_reloaded_meanwhile_is_not_held_against_the_new_one(
        plugin_dir, make_host, tmp_path):
    """v1's healthCheck is still running (unhealthy) when v2, healthy, replaces it: before, v1's
    late answer marked v2 `degraded` until the next round (30 s by default)."""
    go = tmp_path / "go"
    path = plugin_dir.add("svc.js", f'''
export const metadata = {{ id: "svc", name: "svc", version: "1.0.0", apiVersion: "1.0", permissions: {{ read: ["{go}"] }} }};
export async function healthCheck() {{
  console.log("v1 checks");
  for (;;) {{ try {{ await Deno.stat("{go}"); return {{ healthy: false, message: "v1 is sick" }}; }}
              catch {{ await new Promise((r) => setTimeout(r, 10)); }} }}
}}''', auto_metadata=False)
    async with make_host(reload={"enabled": False}, health=HealthConfig(interval=0, timeout=20)) as h:
        seen: list[str] = []
        h.add_log_listener(lambda plugin, worker, msg: seen.append(msg.message))
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.check_health)
            await wait_for(lambda: "v1 checks" in seen, timeout=10)
            path.write_text('export const metadata = { id: "svc", name: "svc", version: "2.0.0", apiVersion: "1.0" };\n'
                            "export function healthCheck() { return { healthy: true }; }\n")
            assert await h.reload("svc") is True
            go.write_text("")
        info = h.plugin("svc")
        assert (info.version, info.state, info.error) == ("2.0.0", "running", None)
        assert await h.check_health() == {"svc@2.0.0": True}


def test_a_wildcard_capability_cannot_make_matching_an_event_slow():
    """A ``*`` inside a segment (``a.****...``) was turned into a regular expression of ``[^.:]+``
    runs, which backtracks exponentially on a long event that does not match: a plugin declaring
    ``a.`` + 18 stars made ``emit("a." + "b" * 30 + ".c")`` (also ``POST /api/events/...``) block the
    host's event loop for 13 s, longer with each star. Now only a whole ``*`` segment is a wildcard,
    compared segment by segment."""
    import time

    from host.plugins.manifest import Manifest

    m = Manifest(id="x", name="x", version="1.0.0", api_version="1.0",
                 capabilities=["a." + "*" * 16, "b.*.*", "c:*"])
    t0 = time.perf_counter()
    assert not m.handles("a." + "b" * 28 + ".c")  # about 3 s before
    assert not m.handles("a." + "b" * 60)  # a partial wildcard is no wildcard
    assert time.perf_counter() - t0 < 0.5
    assert m.handles("b.x.y") and m.handles("c:x") and not m.handles("b.x") and not m.handles("b.x.y.z")
    assert not m.handles("c.x") and not m.handles("b.x:y") and not m.handles("b..y")


@pytest.mark.timeout(60)
async def test_a_star_inside_a_segment_is_refused_at_load(plugin_dir, make_host):
    plugin_dir.add("greedy.js", handler("greedy", 1, "return event;", caps='["message.a*"]'))
    plugin_dir.add("fair.js", handler("fair", 1, "return event;", caps='["message.*"]'))
    async with make_host() as h:
        info = h.plugin("greedy")
        assert info.state == "error" and "capabilities" in info.error and "whole segment" in info.error
        assert [r.plugin for r in await h.emit("message.abc")] == ["fair"]
