"""A deadline the caller chose, shorter than the plugin's own (``limits.call_timeout``), is the
caller's: past it the caller gets CallTimeout and the call a Cancel, the worker is kept, the
circuit breaker does not count it; a plugin that ignores the cancel is still killed, at its own
deadline. A deadline the plugin's own limit sets still kills the worker and counts."""

from __future__ import annotations

import time

import anyio
import pytest
from support.processes import process_gone, wait_for
from support.servers import served

from host import BreakerConfig, CallTimeout, CircuitOpen, PluginSettings, PoolConfig, WorkerLimits

pytestmark = pytest.mark.anyio

# calc.sum of /tmp/probeA (the review's repro), plus a call that waits for its cancel.
SLOW = """
export const metadata = { id: "slow", name: "Slow", version: "1.0.0", apiVersion: "1.0" };
let aborted = 0;
export function add(a, b) { return a + b; }
export function pid() { return Deno.pid; }
export async function sum(values, ctx) {
  await new Promise((r) => setTimeout(r, 20));  // at least 20 ms: past any caller's 0.001 s
  let total = 0;
  for (const v of values) {
    if (ctx.signal.aborted) throw new PluginError(ErrorTypes.TIMEOUT, "cancelled");
    total += v;
  }
  return total;
}
export function waitForCancel(ctx) {
  return new Promise((resolve) => ctx.signal.addEventListener("abort", () => { aborted++; resolve("stopped"); }));
}
export function abortedCalls() { return aborted; }
export function spin() { while (true) {} }
export async function nap(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1, max_inflight=8)


@pytest.fixture
def slow(plugin_dir):
    plugin_dir.add("slow.js", SLOW)
    return plugin_dir


async def test_a_callers_tiny_timeouts_never_open_the_circuit_nor_kill_the_worker(slow, make_host):
    # Before: five calls with timeout 0.001 each killed the worker (its deadline passed) and
    # opened the circuit; every call after, by anyone, was CircuitOpen for 30 s.
    async with make_host(pool=ONE) as h:
        pid = await h.call("slow", "pid")
        for _ in range(8):
            with pytest.raises(CallTimeout) as e:
                await h.call("slow", "sum", list(range(100_000)), timeout=0.001)
        assert await h.call("slow", "add", 1, 2) == 3
        assert e.value.caller and "caller's timeout" in e.value.message
        info = h.plugin("slow")
        assert (info.circuit, info.timeouts, info.crashes) == ("closed", 0, 0)
        # nor do they make the plugin look failing: its error rate is of the calls it answered
        # (before: 8 of 10 failed), and the metrics tell them apart as CallerTimeout
        assert info.error_rate == 0.0, info.error_rate
        assert b'outcome="CallerTimeout",plugin="slow"} 8.0' in h.metrics.render()
        assert await h.call("slow", "pid") == pid  # the same worker served them all


async def test_the_cancelled_call_has_its_signal_aborted_and_the_worker_serves_on(slow, make_host):
    async with make_host(pool=ONE) as h:
        pid = await h.call("slow", "pid")
        t0 = time.monotonic()
        with pytest.raises(CallTimeout):
            await h.call("slow", "waitForCancel", timeout=0.2)
        assert time.monotonic() - t0 < 0.6
        await wait_for(lambda: h.pool("slow").workers[0].load == 0)  # it settled once cancelled
        assert await h.call("slow", "abortedCalls") == 1
        assert await h.call("slow", "pid") == pid


async def test_a_call_that_ignores_the_cancel_is_stopped_cancel_grace_after_its_callers_deadline(slow, make_host):
    # helper-86: it ran on to the plugin's own limit (30 s by default), and a pool of one worker
    # answered nobody meanwhile; an outside cancel stopped it after cancel_grace. Now both do.
    limits = WorkerLimits(call_timeout=30, cancel_grace=0.3)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), limits=limits) as h:
        pid = await h.call("slow", "pid")
        t0 = time.monotonic()
        with pytest.raises(CallTimeout) as e:
            await h.call("slow", "spin", timeout=0.1)
        assert e.value.caller and time.monotonic() - t0 < 0.5
        assert await h.call("slow", "add", 2, 2) == 4  # on a new worker, not 30 s later
        assert time.monotonic() - t0 < 10 and process_gone(pid)
        info = h.plugin("slow")
        assert (info.timeouts, info.crashes, info.circuit) == (0, 0, "closed")  # the caller's deadline


async def test_a_worker_serving_others_is_killed_only_at_the_plugins_own_call_timeout(slow, make_host):
    # a deadline one caller chose fails no other caller's call: with another call in flight on
    # the worker, the one that ignores its cancel runs on to the plugin's own limit
    async with make_host(pool=ONE, limits=WorkerLimits(call_timeout=1.5, cancel_grace=0.3)) as h:
        pid = await h.call("slow", "pid")
        t0 = time.monotonic()
        answers = []

        async def other() -> None:
            answers.append(await h.call("slow", "nap", 1000))

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            await wait_for(lambda: h.pool("slow").workers[0].load == 1)
            with pytest.raises(CallTimeout) as e:  # nap ignores its signal; the worker serves the other meanwhile
                await h.call("slow", "nap", 5000, timeout=0.1)
            assert e.value.caller
        assert answers == [1000] and not process_gone(pid)  # the other call was answered
        await wait_for(lambda: process_gone(pid), timeout=5)
        assert time.monotonic() - t0 >= 1.4  # killed at the plugin's deadline, not the caller's
        await wait_for(lambda: h.plugin("slow").timeouts == 1)
        assert h.plugin("slow").circuit == "closed"
        assert await h.call("slow", "add", 2, 2) == 4


async def test_the_plugins_own_deadline_still_kills_the_worker_and_counts_against_the_breaker(slow, make_host):
    breaker = {"slow": PluginSettings(breaker=BreakerConfig(failure_threshold=2))}
    async with make_host(pool=ONE, limits=WorkerLimits(call_timeout=0.3), plugins=breaker) as h:
        for timeout in (None, 0.3):  # none given, or the plugin's own
            with pytest.raises(CallTimeout) as e:
                await h.call("slow", "spin", timeout=timeout)
            assert not e.value.caller
        with pytest.raises(CircuitOpen):
            await h.call("slow", "add", 1, 1)
        await wait_for(lambda: h.plugin("slow").timeouts == 2)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_over_http_tiny_timeouts_answer_504_and_leave_the_plugin_serving(slow, make_host, anyio_backend):
    async with make_host(pool=ONE) as h, served(h) as (_, http):
        for _ in range(6):
            async with http.post("/api/plugins/slow/call/sum",
                                 json={"args": [list(range(100_000))], "timeout": 0.001}) as r:
                assert r.status == 504 and (await r.json())["error"]["type"] == "CallTimeout"
        async with http.post("/api/plugins/slow/call/add", json={"args": [1, 2]}) as r:
            assert (r.status, await r.json()) == (200, {"ok": True, "result": 3})
        assert h.plugin("slow").circuit == "closed"


async def test_closing_does_not_wait_for_a_call_its_caller_gave_up_on(plugin_dir, make_host):
    """The call a caller abandoned runs on until the plugin's own deadline (30 s here); a close
    meanwhile drains only the calls someone still waits for (before: it waited those 30 s)."""
    plugin_dir.add("slow.js", SLOW, auto_metadata=False)
    async with make_host(pool=ONE) as h:
        with pytest.raises(CallTimeout):
            await h.call("slow", "spin", timeout=0.2)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5


TIMERS = """
export const metadata = { id: "timers", name: "Timers", version: "1.0.0", apiVersion: "1.0" };
export async function race(ctx) {
  const signal = AbortSignal.timeout(ctx.timeout);
  const timer = await new Promise((resolve) => {
    const t = setTimeout(() => resolve("fired"), ctx.timeout);
    setTimeout(() => { clearTimeout(t); resolve("waiting"); }, 300);
  });
  return { timeout: ctx.timeout, aborted: signal.aborted, timer };
}
"""


@pytest.mark.timeout(60)
async def test_a_deadline_beyond_what_javascript_timers_take_does_not_fire_the_plugins_timers_at_once(
        plugin_dir, make_host):
    # Before: call_timeout = 30 days reached the plugin as ctx.timeout = 2592000000 ms, past the
    # 2**31-1 ms JavaScript timers take, and a timer or AbortSignal.timeout(ctx.timeout) fired at once.
    plugin_dir.add("timers.js", TIMERS)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         limits=WorkerLimits(call_timeout=30 * 86400.0)) as h:
        out = await h.call("timers", "race")
        assert out == {"timeout": 2**31 - 1, "aborted": False, "timer": "waiting"}, out
