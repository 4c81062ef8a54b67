"""One boundary for errors, fuzzed (issue 15): whatever a caller passes to ``PluginHost.call`` or
sends to the HTTP API, the outcome is a result, a HostError, or a JSON answer (4xx, or the
documented 502/503/504 of a HostError) — never another exception, never a 500 — and the plugin's
worker slot is free afterwards (a pool of one worker with one slot serves the next call)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.plugins import CALC, PluginDir, fresh_state

from host import HostConfig, HostError, PluginHost, PoolConfig

pytestmark = pytest.mark.timeout(300)

ECHO = CALC + "export function many(...xs) { return xs.length; }\n"


@pytest.fixture
def running(tmp_path, shared_state) -> Iterator[tuple[BlockingPortal, PluginHost, str]]:
    """One host (one worker, one slot) in a portal thread for every example of a test, and its
    HTTP API."""
    from aiohttp import web

    from host.server import create_app

    root = tmp_path
    plugins = PluginDir(root / "plugins")
    plugins.add("calc.js", ECHO)
    cfg = HostConfig(plugins_dir=str(plugins.root), state_dir=str(fresh_state(root, shared_state)),
                     pool=PoolConfig(min_workers=1, max_workers=1), execute={"min_workers": 0, "max_workers": 1},
                     limits={"call_timeout": 5.0})
    with start_blocking_portal("asyncio") as portal, portal.wrap_async_context_manager(PluginHost(cfg)) as host:
        app = create_app(host, enable_execute=True)
        runner = web.AppRunner(app)
        portal.call(runner.setup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        portal.call(site.start)
        port = runner.addresses[0][1]
        try:
            yield portal, host, f"http://127.0.0.1:{port}"
        finally:
            portal.call(runner.cleanup)


class Odd:
    """An object MessagePack has no form for."""


_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
            | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30) | st.binary(max_size=30)
            | st.just(Odd()) | st.just(math.pi) | st.builds(complex, st.floats(), st.floats()))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
                       | st.frozensets(st.integers(), max_size=3), max_leaves=20)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fn=st.sampled_from(["add", "echo", "many", "missing", "", "x" * 300]), args=st.lists(_values, max_size=4),
       timeout=st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5))
def test_any_call_ends_in_a_result_or_a_host_error_and_frees_the_slot(running, fn, args, timeout):
    portal, host, _ = running

    async def call() -> None:
        with anyio.fail_after(30):
            try:
                await host.call("calc", fn, *args, timeout=timeout)
            except HostError:
                pass
            assert await host.call("calc", "add", 1, 2, timeout=10) == 3  # the one slot is free

    portal.call(call)


_json = st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
                     | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=15)
_bodies = (_json.map(lambda v: json.dumps(v).encode())
           | st.fixed_dictionaries({"args": st.lists(_json, max_size=4)}, optional={"timeout": _json}).map(
               lambda v: json.dumps(v).encode())
           | st.fixed_dictionaries({"code": st.sampled_from(["export default (x) => x", "export default (", "1"])},
                                   optional={"input": _json, "timeout": _json, "entry": _json, "tools": _json,
                                             "permissions": _json}).map(lambda v: json.dumps(v).encode())
           | st.binary(max_size=40) | st.just(b"[" * 3000) | st.just(b'{"args": [1e999]}'))
_routes = st.sampled_from([
    ("POST", "/api/plugins/calc/call/add"), ("POST", "/api/plugins/calc/call/echo"),
    ("POST", "/api/plugins/nope/call/add"), ("POST", "/execute"), ("PUT", "/api/plugins/calc/config"),
    ("POST", "/api/events/fuzz.event"), ("POST", "/api/plugins/calc/approve"), ("POST", "/api/config/import"),
    ("GET", "/api/balances/history?since=%ZZ&limit=x"), ("GET", "/api/plugins/calc/logs?level=x&after=y"),
    ("DELETE", "/api/plugins/calc"), ("POST", "/api/plugins/calc/reload"),
])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=_routes, body=_bodies)
def test_any_request_gets_a_json_answer_never_a_500(running, route, body):
    import urllib.error
    import urllib.request

    portal, host, base = running
    method, path = route
    req = urllib.request.Request(base + path, data=body if method != "GET" else None, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw, ctype = r.status, r.read(), r.headers.get_content_type()
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get_content_type()
    assert status != 500 and status < 600, (status, raw[:300])
    assert ctype == "application/json", (status, raw[:300])
    doc = json.loads(raw)
    if status >= 400:
        err = doc["error"]
        assert isinstance(err.get("type") or err.get("name"), str) and isinstance(err["message"], str)

    async def still_serves() -> None:
        with anyio.fail_after(30):
            assert await host.call("calc", "add", 1, 2, timeout=10) == 3

    portal.call(still_serves)
