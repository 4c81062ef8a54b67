"""The plugins' recent logs (what --debug shows) and their config schemas, in the Python API and
over HTTP, with the per-plugin latency and error rate the dashboard shows."""

from __future__ import annotations

import logging
import time

import pytest
from support.servers import served

from host import BreakerConfig, FunctionNotFound, PluginError, PluginSettings, PoolConfig
from host.logs import Throttle

pytestmark = pytest.mark.anyio

SCHEMA = """
export const metadata = { id: "shaped", name: "Shaped", version: "1.0.0", apiVersion: "1.0",
  configSchema: {
    apiKey: { type: "string", secret: true, title: "API key" },
    region: { type: "string", enum: ["eu", "us"], default: "eu", description: "where" },
    retries: { type: "integer", default: 2 },
    verbose: { type: "boolean" },
  } };
export function f() { return 1; }
"""


async def test_logs_hold_console_and_lifecycle_with_levels(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        await h.call("calc", "say", "hello")
        entries = h.logs("calc")
        console = [(e.level, e.message, e.kind) for e in entries if e.kind == "console"]
        assert console == [("info", "said: hello", "console"), ("warning", "warned", "console")]
        lifecycle = [e.message for e in entries if e.kind == "lifecycle"]
        assert "loaded -> running" in lifecycle
        assert any(m.startswith("spawned: pid ") for m in lifecycle)
        assert any(m.startswith("ready: pid ") for m in lifecycle)
        worker = next(e.worker for e in entries if e.kind == "console")
        assert worker.startswith("calc#")
        assert [e.message for e in h.logs("calc", level="warning")] == ["warned"]
        last = entries[-1].seq
        await h.call("calc", "say", "again")
        assert [e.message for e in h.logs("calc", after=last)] == ["said: again", "warned"]
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)


async def test_latency_and_error_rate_of_recent_calls(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        assert (h.plugin("calc").latency_p50_ms, h.plugin("calc").error_rate) == (None, None)
        for _ in range(3):
            await h.call("calc", "add", 1, 2)
        with pytest.raises(FunctionNotFound):
            await h.call("calc", "nope")
        info = h.plugin("calc")
    assert info.latency_p50_ms is not None and 0 < info.latency_p50_ms < 1000
    assert info.error_rate == 0.25


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_logs_and_schema_over_http(calc, plugin_dir, make_host, anyio_backend):
    plugin_dir.add("shaped.js", SCHEMA)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h, served(h) as (_, s):
        await h.call("calc", "say", "over http")
        async with s.get("/api/plugins/calc/logs?level=info") as r:
            body = await r.json()
        assert r.status == 200
        assert [e["message"] for e in body["entries"] if e["kind"] == "console"] == ["said: over http", "warned"]
        assert body["last"] == body["entries"][-1]["seq"]
        async with s.get(f"/api/plugins/calc/logs?after={body['last']}") as r:
            assert (await r.json())["entries"] == []
        async with s.get("/api/plugins/calc/logs?level=loud") as r:
            assert r.status == 400
        for after in ("-1", "1.5", "x", str(2**63), "9" * 5000):  # before: -1 named PluginHost.logs' argument
            async with s.get(f"/api/plugins/calc/logs?after={after}") as r:
                message = (await r.json())["error"]["message"]
                assert r.status == 400 and message.startswith("after must be a whole number"), message
                assert "PluginHost" not in message and repr(after[:40]) in message, message
        async with s.get("/api/plugins/calc/logs?limit=" + "9" * 5000) as r:  # int() of 5,000 digits raises
            assert r.status == 200, await r.text()
        async with s.get("/api/plugins/shaped/schema") as r:
            schema = await r.json()
        assert schema["region"] == {"type": "string", "required": False, "secret": False, "default": "eu",
                                    "enum": ["eu", "us"], "description": "where"}
        assert schema["apiKey"]["secret"] is True and schema["apiKey"]["title"] == "API key"
        assert schema["verbose"] == {"type": "boolean", "required": False, "secret": False}


def test_entries_are_bounded_in_number_and_size():
    from host.logbook import MAX_MESSAGE, LogBook

    book = LogBook(per_plugin=3)
    for i in range(5):
        book.add("p", "info", f"line {i}")
    book.add("p", "log", "x" * (MAX_MESSAGE + 10), kind="console")
    kept = book.read("p")
    assert [e.message for e in kept[:2]] == ["line 3", "line 4"]
    assert kept[2].message.endswith("… [10 more characters]") and kept[2].level == "info"
    assert len(kept[2].message) < MAX_MESSAGE + 40


async def test_execute_output_stays_out_of_the_plugin_logs(calc, make_host):
    async with make_host() as h:
        out = await h.execute("export default () => { console.log('private to its caller'); return 1; }")
        assert out.ok and out.logs[0].message == "private to its caller"
        assert h.logbook.read("execute") == []



def test_an_uncaught_error_ranks_as_an_error_so_the_error_filter_shows_it():
    from host.logbook import LogBook, level_of

    assert level_of("exception") == "error"  # it used to rank as info and hide from the filter
    book = LogBook()
    book.add("p", "exception", "TypeError: boom", kind="console")
    book.add("p", "log", "chatter", kind="console")
    assert [e.message for e in book.read("p", level="error")] == ["TypeError: boom"]


FAILING = """
export function full() { throw new PluginError("PROVIDER_ERROR", "the disk is full"); }
export function auth() { throw new PluginError("AUTH_ERROR", "bad key"); }
"""


async def test_a_failure_repeated_on_every_call_is_one_host_log_line_and_every_entry_in_its_log(
        plugin_dir, make_host, caplog):
    plugin_dir.add("failing.js", FAILING)
    plugins = {"failing": PluginSettings(breaker=BreakerConfig(enabled=False))}
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), plugins=plugins) as h:
        with caplog.at_level(logging.WARNING, "host.plugin"):
            for fn in ["full"] * 50 + ["auth"] * 3:
                with pytest.raises(PluginError):
                    await h.call("failing", fn)
        lines = [r.getMessage() for r in caplog.records if r.name == "host.plugin" and " failed: " in r.getMessage()]
        assert len(lines) == 2, lines  # one for each kind (before: one per call, 53)
        assert "full failed" in lines[0] and "auth failed" in lines[1]
        assert len([e for e in h.logs("failing", level="error") if "failed" in e.message]) == 53


def test_held_back_warnings_are_counted_in_the_next_one(caplog):
    throttle = Throttle(logging.getLogger("host.test"), every=0.05)
    with caplog.at_level(logging.WARNING, "host.test"):
        for _ in range(5):
            throttle.warning("k", "same %s", "thing")
        time.sleep(0.06)
        throttle.warning("k", "same %s", "thing")
    assert caplog.records[0].getMessage() == "same thing"
    assert caplog.records[1].getMessage().startswith("same thing (4 more like it in the last")
