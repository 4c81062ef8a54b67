"""A deadline the caller chose, shorter than the plugin's own (``limits.call_timeout``), is the
caller's: past it the caller gets CallTimeout and the call a Cancel, the worker is kept, the
circuit breaker does not count it; a plugin that ignores the cancel is still killed, at its own
deadline, or as soon as it is seen to spin (its event loop answers no ping). A deadline the plugin's own limit sets still kills the worker and counts."""

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


async def test_a_call_that_spins_past_its_callers_deadline_has_its_worker_replaced_at_once(slow, make_host):
    # helper-86: a spinning call ran on to the plugin's own limit (30 s by default) and a pool of one
    # worker answered nobody meanwhile; now a worker that answers no ping after the cancel is replaced
    limits = WorkerLimits(call_timeout=30, cancel_grace=0.3)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, max_inflight=8), limits=limits) as h:
        pid = await h.call("slow", "pid")
        t0 = time.monotonic()
        refused: list[CallTimeout] = []

        async def spin() -> None:
            with pytest.raises(CallTimeout) as e:
                await h.call("slow", "spin", timeout=0.1)
            refused.append(e.value)

        async with anyio.create_task_group() as tg:  # helper-87: two of them held each other's worker
            tg.start_soon(spin)
            tg.start_soon(spin)
        assert len(refused) == 2 and all(e.caller for e in refused)
        await wait_for(lambda: process_gone(pid), timeout=5)
        assert time.monotonic() - t0 < 3  # replaced about 2 x cancel_grace after, not 30 s later
        assert await h.call("slow", "add", 2, 2) == 4
        info = h.plugin("slow")
        assert (info.timeouts, info.crashes, info.circuit) == (0, 0, "closed")  # the caller's deadline


async def test_a_call_that_awaits_past_its_callers_deadline_keeps_its_worker(slow, make_host):
    # helper-87: killing every worker whose call ignored its cancel made each caller's timeout a
    # respawn (4 give-ups, 4 workers); one that still answers keeps its worker to the plugin's deadline
    async with make_host(pool=ONE, limits=WorkerLimits(call_timeout=1.5, cancel_grace=0.3)) as h:
        pid = await h.call("slow", "pid")
        t0 = time.monotonic()
        for _ in range(4):
            with pytest.raises(CallTimeout) as e:  # nap ignores its signal, awaiting: the worker answers
                await h.call("slow", "nap", 1000, timeout=0.05)
            assert e.value.caller
        assert await h.call("slow", "pid") == pid  # the same worker served them all
        answers = []

        async def other() -> None:
            answers.append(await h.call("slow", "nap", 200))

        async with anyio.create_task_group() as tg:
            tg.start_soon(other)
            with pytest.raises(CallTimeout):
                await h.call("slow", "nap", 5000, timeout=0.1)
        assert answers == [200] and not process_gone(pid)  # served beside the one given up on
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
