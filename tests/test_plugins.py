"""Plugins as managed components: manifests, validation, dependencies, versions, lifecycle."""

from __future__ import annotations

import anyio
import pytest
from support.processes import process_gone

from host import HostConfig, PluginHost, PluginNotFound, PluginUnavailable
from host.plugins.dependencies import resolve
from host.plugins.manifest import InvalidManifest, parse_manifest

pytestmark = pytest.mark.anyio

GOOD = {"id": "p", "name": "P", "version": "1.0.0", "apiVersion": "1.0"}


def meta(**kw) -> str:
    fields = {"id": '"p"', "name": '"P"', "version": '"1.0.0"', "apiVersion": '"1.0"'}
    fields.update(kw)
    body = ", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None)
    return f"export const metadata = {{ {body} }};\nexport function ok() {{ return 'ok'; }}\n"


BAD_MANIFESTS = [
    ("missing id", meta(id=None), "metadata.id: is required"),
    ("id not the file name", meta(id='"other"'), "metadata.id: 'other' does not match"),
    ("bad semver", meta(version='"1.0"'), "metadata.version: '1.0' is not a semantic version"),
    ("wrong apiVersion major", meta(apiVersion='"2.0"'), "metadata.apiVersion: '2.0' is not compatible"),
    ("permission typo", meta(permissions='{ nett: ["x.example"] }'), "metadata.permissions:"),
    ("permission inherit", meta(permissions='{ net: ["inherit"] }'),
     "metadata.permissions: permissions.net: 'inherit' is not allowed"),
    ("non-function capability", meta(capabilities='["notAFunction"]') + "export const notAFunction = 1;\n",
     "metadata.capabilities: 'notAFunction' needs an exported function"),
    ("balance without queryBalance", meta(capabilities='["balance"]'),
     "metadata.capabilities: 'balance' needs the export 'queryBalance'"),
    ("event without onEvent", meta(capabilities='["message.incoming"]'),
     "metadata.capabilities: 'message.incoming' needs the export 'onEvent'"),
    ("priority not a number", meta(priority='"high"'), "metadata.priority"),
    ("bad dependency range", meta(dependencies='{ q: "^^1" }'), "metadata.dependencies.q: '^^1' is not a semver range"),
    ("unknown field", meta(permisions="{}"), "metadata.permisions"),
    ("bad configSchema type", meta(configSchema='{ k: { type: "str" } }'), "metadata.configSchema"),
    # helper-106: it passed validate, and every load then failed on config.limit, naming no default
    ("default of another type", meta(configSchema='{ limit: { type: "number", default: "ten" } }'),
     "metadata.configSchema.limit.default: default 'ten' is not of type number"),
    ("no metadata", "export function ok() { return 1; }\n", "metadata.*: the module must export `metadata`"),
]


@pytest.mark.parametrize(("case", "source", "expected"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS])
async def test_bad_manifest_is_error_naming_file_and_field_while_others_serve(
    calc, make_host, case, source, expected
):
    path = calc.add("p.js", source, auto_metadata=False)
    async with make_host() as h:
        info = h.plugin("p")
        assert info.state == "error"
        assert str(path) in info.error and expected in info.error, info.error
        assert info.workers == []
        with pytest.raises(PluginUnavailable):
            await h.call("p", "ok")
        assert await h.call("calc", "add", 1, 2) == 3


def test_manifest_accepts_a_complete_valid_metadata():
    m = parse_manifest({**GOOD, "permissions": {"net": ["api.example.com"]}, "capabilities": ["balance", "x.y"],
                        "priority": 5, "dependencies": {"q": "^1.2.0"},
                        "configSchema": {"apiKey": {"type": "string", "required": True, "secret": True}}},
                       ["queryBalance", "onEvent"], path="p.js", expected_id="p")
    assert m.priority == 5 and m.grants.net == ["api.example.com"] and m.events() == ["x.y"]
    assert m.config_schema["apiKey"].secret


def test_manifest_error_names_the_field():
    with pytest.raises(InvalidManifest) as e:
        parse_manifest({**GOOD, "priority": "x"}, [], path="p.js", expected_id="p")
    assert e.value.field == "priority" and e.value.path == "p.js"
    with pytest.raises(InvalidManifest) as e:  # helper-113: it said no more than "not a valid id"
        parse_manifest({**GOOD, "id": "My Plugin"}, [], path="p.js", expected_id="My Plugin")
    assert "use letters, digits, '.', '-' and '_' (at most 64, starting with a letter or digit)" in str(e.value)


def _m(pid: str, version: str = "1.0.0", deps: dict | None = None):
    return parse_manifest({**GOOD, "id": pid, "version": version, "dependencies": deps or {}}, [],
                          path=f"{pid}.js", expected_id=pid)


def test_dependency_resolution_orders_levels_and_names_cycles():
    levels, errors = resolve({
        "a": _m("a"), "b": _m("b", deps={"a": "^1.0.0"}), "c": _m("c", deps={"b": ">=1"}),
        "x": _m("x", deps={"y": "*"}), "y": _m("y", deps={"z": "*"}), "z": _m("z", deps={"x": "*"}),
        "n": _m("n", deps={"missing": "^1"}), "old": _m("old", deps={"a": "^2.0.0"}),
        "t": _m("t", deps={"n": "*"}),
    })
    assert levels == [["a"], ["b"], ["c"]]
    assert errors["x"] == errors["y"] == errors["z"] == "dependency cycle: x -> y -> z -> x"
    assert errors["n"] == "dependency 'missing' (^1) is not installed"
    assert errors["old"] == "dependency 'a' needs ^2.0.0, installed is 1.0.0"
    assert errors["t"].startswith("dependency 'n' cannot load")


async def test_dependency_cycle_and_missing_dependency_put_only_those_plugins_in_error(calc, make_host):
    calc.add("x.js", meta(id='"x"', dependencies='{ y: "^1.0.0" }'))
    calc.add("y.js", meta(id='"y"', dependencies='{ x: "^1.0.0" }'))
    calc.add("lonely.js", meta(id='"lonely"', dependencies='{ ghost: "^1.0.0" }'))
    calc.add("base.js", meta(id='"base"', version='"1.4.0"'))
    calc.add("top.js", meta(id='"top"', dependencies='{ base: "^1.2.0" }'))
    async with make_host() as h:
        assert "dependency cycle: x -> y -> x" in h.plugin("x").error
        assert "dependency cycle" in h.plugin("y").error
        assert "'ghost'" in h.plugin("lonely").error
        assert h.plugin("top").state == "running" and await h.call("top", "ok") == "ok"
        assert await h.call("calc", "add", 2, 3) == 5


async def test_dependencies_start_before_their_dependents(calc, shared_state):
    calc.add("base.js", meta(id='"base"'))
    calc.add("top.js", meta(id='"top"', dependencies='{ base: "^1.0.0" }'))
    order: list[str] = []
    h = PluginHost(HostConfig(plugins_dir=str(calc.root), state_dir=str(shared_state)))
    h.subscribe(lambda ev: order.append(ev.plugin) if ev.state == "running" else None)
    async with h:
        assert order.index("base") < order.index("top")


async def test_two_versions_side_by_side(plugin_dir, make_host):
    plugin_dir.add("greet@1.0.0.js", meta(id='"greet"', version='"1.0.0"') + "export function v() { return 1; }\n")
    plugin_dir.add("greet@2.1.0/mod.js", meta(id='"greet"', version='"2.1.0"') + "export function v() { return 2; }\n")
    async with make_host() as h:
        assert await h.call("greet", "v") == 2
        assert await h.call("greet@1.0.0", "v") == 1
        assert await h.call("greet@2.1.0", "v") == 2
        assert sorted(i.version for i in h.plugins() if i.id == "greet") == ["1.0.0", "2.1.0"]
        with pytest.raises(PluginNotFound):
            await h.call("greet@3.0.0", "v")


async def test_an_event_stream_ends_when_the_host_stops_and_none_opens_on_a_closed_host(calc, make_host):
    # helper-86: a reader's async for blocked forever after the host closed (its task group never
    # ended), and events() on a host not running waited forever where other methods say HostClosed
    from host import HostClosed

    seen: list[str] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg, make_host() as h:
            started = anyio.Event()

            async def reader() -> None:
                async with h.events() as stream:
                    started.set()
                    async for ev in stream:
                        seen.append(ev.state)

            tg.start_soon(reader)
            await started.wait()
            await h.disable("calc")
    assert seen and seen[0] == "disabled"  # what came before the close was read, then the loop ended
    with pytest.raises(HostClosed, match="not running"):
        async with h.events():
            pass


async def test_version_in_the_name_must_match_the_metadata(plugin_dir, make_host):
    plugin_dir.add("greet@1.0.0.js", meta(id='"greet"', version='"1.0.1"'))
    async with make_host() as h:
        assert "does not match the version in the name" in h.plugin("greet").error


async def test_lifecycle_events_disable_enable_unload(calc, make_host):
    async with make_host() as h:
        seen: list[tuple[str, str]] = []
        h.subscribe(lambda ev: seen.append((ev.plugin, ev.state)))
        pid = h.plugin("calc").workers[0].pid
        async with h.events() as stream:
            await h.disable("calc")
            with anyio.fail_after(5):
                ev = await stream.receive()
            assert (ev.plugin, ev.state, ev.previous, ev.reason) == ("calc", "disabled", "running", "disabled (`python -m host enable calc` starts it)")
        assert process_gone(pid)
        assert h.plugin("calc").workers == []
        with pytest.raises(PluginUnavailable, match="disabled"):
            await h.call("calc", "add", 1, 2)
        await h.enable("calc")
        assert await h.call("calc", "add", 1, 2) == 3
        await h.unload("calc")
        assert h.plugin("calc").state == "stopped" and h.plugin("calc").workers == []
        await h.enable("calc")
        assert h.plugin("calc").state == "running"
        assert [s for p, s in seen if p == "calc"] == ["disabled", "loaded", "running", "stopped", "loaded", "running"]


async def test_discovered_loaded_running_events_at_start(calc, shared_state):
    states: list[str] = []
    h = PluginHost(HostConfig(plugins_dir=str(calc.root), state_dir=str(shared_state)))
    h.subscribe(lambda ev: states.append(ev.state) if ev.plugin == "calc" else None)
    async with h:
        assert states == ["discovered", "loaded", "running"]


async def test_an_event_stream_made_while_running_and_entered_after_close_is_host_closed(calc, make_host):
    # helper-87: made before the close, entered after it, it registered after the streams were
    # closed and its async for never ended
    from host import HostClosed

    async with make_host() as h:
        later = h.events()
    with anyio.fail_after(5), pytest.raises(HostClosed, match="not running"):
        async with later as stream:
            async for _ in stream:
                pass
