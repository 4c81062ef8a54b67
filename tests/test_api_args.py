"""A careless embedding app: whatever it passes to a public method of PluginHost, what comes out
is a HostError naming the argument (or a TypeError for a wrong number of Python arguments), and
the caller's mistake never reaches a worker nor counts against the plugin (host/api_args.py)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.plugins import PluginDir, fresh_state

from host import HostConfig, HostError, InvalidArguments, InvalidConfig, PluginHost, PoolConfig

pytestmark = pytest.mark.timeout(240)

ONE = PoolConfig(min_workers=1, max_workers=1)
EVENTS = 'export async function onEvent(event, payload) { return payload; }\n'


class Opaque:
    """An object of the app's own: no codec has a form for it."""


def _recursive() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


ODD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8), st.sets(st.integers(), max_size=3),
    st.datetimes(), st.builds(Opaque), st.builds(_recursive), st.text(max_size=30),
    st.sampled_from(["x" * 1_000_000, "../../etc/passwd", "calc\x00", "calc@9.9.9", "", "ünï", "calc/../x"]),
    st.dictionaries(st.one_of(st.integers(), st.tuples(st.integers()), st.text(max_size=3)), st.integers(), max_size=3),
    st.lists(st.integers(), max_size=3),
)

# Each: a public method called with one odd value ``v`` where the app went wrong.
CASES: dict[str, Callable[[PluginHost, Any], Any]] = {
    "call.plugin": lambda h, v: h.call(v, "add", 1, 2),
    "call.fn": lambda h, v: h.call("calc", v, 1, 2),
    "call.arg": lambda h, v: h.call("calc", "echo", v, timeout=5),
    "call.timeout": lambda h, v: h.call("calc", "add", 1, 2, timeout=v),
    "call.priority": lambda h, v: h.call("calc", "add", 1, 2, priority=v),
    "call.refresh": lambda h, v: h.call("calc", "add", 1, 2, refresh=v),
    "execute.code": lambda h, v: h.execute(v, 1),
    "execute.input": lambda h, v: h.execute("export default (x) => x", v),
    "execute.entry": lambda h, v: h.execute("export default (x) => x", 1, entry=v),
    "execute.timeout": lambda h, v: h.execute("export default (x) => x", 1, timeout=v),
    "execute.permissions": lambda h, v: h.execute("export default (x) => x", 1, permissions=v),
    "execute.tools": lambda h, v: h.execute("export default (x) => x", 1, tools=v),
    "execute.language": lambda h, v: h.execute("export default (x) => x", 1, language=v),
    "emit.event": lambda h, v: h.emit(v, 1),
    "emit.payload": lambda h, v: h.emit("message.incoming", v),
    "emit.timeout": lambda h, v: h.emit("message.incoming", 1, timeout=v),
    "query_balances.timeout": lambda h, v: h.query_balances(timeout=v),
    "balance_history.provider": lambda h, v: h.balance_history(v),
    "balance_history.since": lambda h, v: h.balance_history(since=v),
    "balance_history.limit": lambda h, v: h.balance_history(limit=v),
    "balance_alerts.limit": lambda h, v: h.balance_alerts(limit=v),
    "plugin": lambda h, v: h.plugin(v),
    "logs.name": lambda h, v: h.logs(v),
    "logs.level": lambda h, v: h.logs("calc", level=v),
    "logs.after": lambda h, v: h.logs("calc", after=v),
    "logs.limit": lambda h, v: h.logs("calc", limit=v),
    "get_config": lambda h, v: h.get_config(v),
    "config_schema": lambda h, v: h.config_schema(v),
    "effective_config": lambda h, v: h.effective_config(v),
    "set_config.name": lambda h, v: h.set_config(v, {}),
    "set_config.values": lambda h, v: h.set_config("calc", v),
    "set_config.value": lambda h, v: h.set_config("calc", {"x": v}),
    "set_policy.name": lambda h, v: h.set_policy(v, max_concurrent=1),
    "set_policy.max_concurrent": lambda h, v: h.set_policy("calc", max_concurrent=v),
    "set_policy.rate_limit": lambda h, v: h.set_policy("calc", rate_limit=v),
    "set_max_concurrent_calls": lambda h, v: h.set_max_concurrent_calls(v),
    "clear_cache": lambda h, v: h.clear_cache(v),
    "export_config.name": lambda h, v: h.export_config(v),
    "export_config.passphrase": lambda h, v: h.export_config("calc", passphrase=v),
    "import_config": lambda h, v: h.import_config(v),
    "reload": lambda h, v: h.reload(v),
    "restart": lambda h, v: h.restart(v),
    "reset": lambda h, v: h.reset(v),
    "pool": lambda h, v: h.pool(v),
    "approve.name": lambda h, v: h.approve(v),
    "approve.grants": lambda h, v: h.approve("calc", grants=v),
    "enable": lambda h, v: h.enable(v),
    "settled": lambda h, v: h.settled(v),
    "reserve_address.host": lambda h, v: h.reserve_address(v, 80),
    "reserve_address.port": lambda h, v: h.reserve_address("127.0.0.1", v),
    "masked": lambda h, v: h.masked(v),
    "allow_private_network": lambda h, v: h.allow_private_network(v),
    "reset_config": lambda h, v: h.reset_config(v),
}


def _config(plugin_dir: PluginDir, tmp_path: Path, shared_state: Path) -> HostConfig:
    plugin_dir.add("events.js", EVENTS.replace("export", 'export const metadata = { id: "events", name: "e", '
                                                'version: "1.0.0", apiVersion: "1.0", capabilities: '
                                                '["message.incoming"] };\nexport', 1))
    return HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)), pool=ONE,
                      execute={"min_workers": 0})


def test_whatever_the_app_passes_only_a_host_error_comes_out_and_no_worker_pays(calc, tmp_path, shared_state):
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(
            PluginHost(_config(calc, tmp_path, shared_state))) as h:

        async def attempt(case: str, value: Any) -> None:
            try:
                out = CASES[case](h, value)
                if hasattr(out, "__await__"):
                    await out
            except HostError:
                pass

        @settings(max_examples=400, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(case=st.sampled_from(sorted(CASES)), value=ODD)
        def one(case: str, value: Any) -> None:
            portal.call(attempt, case, value)  # anything but a HostError fails the test, naming the case

        one()
        assert portal.call(lambda: h.call("calc", "add", 1, 2, timeout=10)) == 3
        info = h.plugin("calc")
        assert (info.state, info.crashes, info.running, info.queued) == ("running", 0, 0, 0), info
        assert h.scheduler_stats().running == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_function_name_that_is_not_a_string_never_reaches_the_worker(calc, make_host):
    """It used to crash the worker (its decoder refuses the frame), five calls put the plugin in
    ``error``: the caller's mistake was counted as the plugin's crash loop."""
    async with make_host(pool=ONE) as h:
        pid = await h.call("calc", "pid", timeout=10)
        for bad in (5, None, b"add", ["add"], {"fn": "add"}):
            with pytest.raises(InvalidArguments, match="argument `fn`"):
                await h.call("calc", bad, 1, 2, timeout=5)
        assert await h.call("calc", "pid", timeout=10) == pid
        info = h.plugin("calc")
        assert (info.state, info.crashes) == ("running", 0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_entry_that_is_not_a_string_never_reaches_the_execute_worker(make_host):
    async with make_host(execute={"min_workers": 1, "max_workers": 1}) as h:
        first = await h.execute("export default () => Deno.pid")
        for bad in (5, None, ["default"]):
            with pytest.raises(InvalidArguments, match="argument `entry`"):
                await h.execute("export default () => Deno.pid", entry=bad)
        assert (await h.execute("export default () => Deno.pid")).result == first.result


@pytest.mark.anyio
async def test_odd_names_and_ranges_name_the_argument(calc, make_host):
    async with make_host(pool=ONE) as h:
        for bad in (None, 5, b"calc", ["calc"], Opaque()):
            with pytest.raises(InvalidArguments, match=r"PluginHost\.plugin: argument `name`"):
                h.plugin(bad)
            with pytest.raises(InvalidArguments, match=r"PluginHost\.call: argument `plugin`"):
                await h.call(bad, "add", 1, 2)
        for bad in (math.nan, math.inf, -1, 0, "3", dt.timedelta(seconds=1)):
            with pytest.raises(InvalidConfig, match="timeout must be a number of seconds"):
                await h.emit("message.incoming", 1, timeout=bad)
            with pytest.raises(InvalidConfig, match="timeout must be a number of seconds"):
                await h.query_balances(timeout=bad)
        with pytest.raises(InvalidArguments, match="argument `limit`"):
            await h.balance_history(limit=2**80)
        with pytest.raises(InvalidArguments, match="argument `limit`"):
            h.set_max_concurrent_calls(math.pi)
        with pytest.raises(InvalidConfig, match="config must be JSON"):
            await h.set_config("calc", {"x": _recursive()})
        with pytest.raises(InvalidArguments, match="argument `values`"):
            await h.set_config("calc", {1: "x"})
        assert await h.call("calc", "add", 1, 2, timeout=5) == 3
        assert await h.call("calc", "add", 1, 2, timeout=5.0) == 3  # an int or a float, as before


@pytest.mark.anyio
async def test_a_config_the_wire_cannot_carry_is_refused_before_it_is_stored(plugin_dir, make_host):
    """``set_config`` checked that a config encodes as JSON (how the store keeps it), but workers
    get it as MessagePack, which holds no integer beyond 64 bits: ``{"n": 2**70}`` (or that number in
    ``PUT /api/plugins/ID/config``'s JSON body) was stored and answered as set, the running worker
    kept its old config, and every restart and reload failed with a raw OverflowError (a host started
    again on that state could not start the plugin). Now it is an InvalidConfig and nothing is stored."""
    plugin_dir.add("num.js", '''export const metadata = { id: "num", name: "num", version: "1.0.0", apiVersion: "1.0",
  configSchema: { n: { type: "number" }, o: { type: "object" } } };
export function get(ctx) { return ctx.config; }''')
    async with make_host(pool=ONE) as h:
        await h.set_config("num", {"n": 1})
        for bad in ({"n": 2**70}, {"o": {"k": -(2**64)}}):
            with pytest.raises(InvalidConfig, match="config must be"):
                await h.set_config("num", bad)
        assert h.get_config("num") == {"n": 1}
        assert await h.restart("num") is True and await h.call("num", "get") == {"n": 1}
