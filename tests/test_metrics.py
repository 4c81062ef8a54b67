"""GET /metrics: Prometheus text from prometheus_client, served by the real aiohttp app over a
real host: calls by plugin, function and outcome, latency histograms, workers alive, worker
exits by reason, restarts, timeouts and circuit states."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.processes import wait_for
from support.servers import served

from host import CallTimeout, FunctionNotFound, PluginError, PluginNotFound, PoolConfig, WorkerLimits

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

FLAKY = """
export function fail() { throw new PluginError("PROVIDER_ERROR", "upstream said no"); }
export function spin() { while (true) {} }
"""


def samples(text: str) -> dict[tuple, float]:
    """{(sample name, sorted labels...): value} of an exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, *sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_count_calls_outcomes_latency_and_worker_exits(calc, make_host):
    calc.add("flaky.js", FLAKY)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), limits=WorkerLimits(call_timeout=0.5)) as h, \
            served(h) as (_, http):
        for i in range(3):
            assert await h.call("calc", "add", i, 1) == i + 1
        with pytest.raises(PluginError):
            await h.call("flaky", "fail")
        with pytest.raises(CallTimeout):
            await h.call("flaky", "spin")
        await wait_for(lambda: h.plugin("flaky").timeouts == 1)  # the killed worker is reaped
        with pytest.raises(FunctionNotFound):
            await h.call("calc", "no-such-function-zqx")
        with pytest.raises(PluginNotFound):
            await h.call("no-such-plugin-zqx", "x")
        async with http.get("/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
    m = samples(text)
    calls = "plugin_host_calls_total"
    assert m[(calls, ("function", "add"), ("outcome", "ok"), ("plugin", "calc"))] == 3
    assert m[(calls, ("function", "fail"), ("outcome", "PluginError"), ("plugin", "flaky"))] == 1
    assert m[(calls, ("function", "spin"), ("outcome", "CallTimeout"), ("plugin", "flaky"))] == 1
    assert m[(calls, ("function", "(unknown)"), ("outcome", "FunctionNotFound"), ("plugin", "calc"))] == 1
    assert m[(calls, ("function", "(unknown)"), ("outcome", "PluginNotFound"), ("plugin", "(unknown)"))] == 1
    assert "zqx" not in text  # names nobody installed never become labels (not digits: a timestamp holds any)
    hist = "plugin_host_call_duration_seconds"
    assert m[(hist + "_count", ("function", "add"), ("plugin", "calc"))] == 3
    assert 0 < m[(hist + "_sum", ("function", "add"), ("plugin", "calc"))] < 3
    assert m[(hist + "_bucket", ("function", "spin"), ("le", "0.25"), ("plugin", "flaky"))] == 0
    assert m[(hist + "_bucket", ("function", "spin"), ("le", "1.0"), ("plugin", "flaky"))] == 1
    flaky = (("plugin", "flaky"), ("version", "1.0.0"))
    assert m[("plugin_host_worker_exits_total", *sorted((*flaky, ("reason", "timeout"))))] == 1
    assert m[("plugin_host_call_timeouts_total", *flaky)] == 1
    assert m[("plugin_host_workers", ("plugin", "calc"), ("version", "1.2.3"))] == 1
    assert m[("plugin_host_plugin_up", ("plugin", "calc"), ("state", "running"), ("version", "1.2.3"))] == 1
    assert m[("plugin_host_circuit_state", ("plugin", "calc"), ("state", "closed"))] == 1
    assert m[("plugin_host_circuit_state", ("plugin", "calc"), ("state", "open"))] == 0
    assert h.plugin("flaky").worker_exits == {"timeout": 1}
