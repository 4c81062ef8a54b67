"""Scheduling: priorities where calls queue, global and per-plugin concurrency caps, timeouts
and cancellation of queued and running calls; with real workers, plus the limiter alone."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import TaskGroup
from support.processes import wait_for

from host import CallTimeout, InvalidConfig, PluginSettings, PolicyConfig, PoolConfig, WorkerLimits
from host.policy.scheduler import Scheduler

pytestmark = pytest.mark.anyio

SCHED = """
let seq = 0;
let counted = 0;
let aborted = 0;
export function order(tag) { seq++; return seq; }
export function counted_() { return counted; }
export function count() { counted++; return counted; }
export function abortedCount() { return aborted; }
export async function block(ctx) {
  // Holds its worker until the caller cancels: a deterministic way to saturate a pool.
  return await new Promise((resolve) => {
    ctx.signal.addEventListener("abort", () => { aborted++; resolve("released"); });
  });
}
export async function stubborn() { await new Promise((r) => setTimeout(r, 60000)); }
export async function sleep(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export function pid() { return Deno.pid; }
"""

ONE = PoolConfig(min_workers=1, max_workers=1)
THREE = PoolConfig(min_workers=3, max_workers=3)


@pytest.fixture
def sched(plugin_dir):
    plugin_dir.add("sched.js", SCHED)
    plugin_dir.add("other.js", SCHED)
    return plugin_dir


@asynccontextmanager
async def held(h, plugin: str, busy: Callable[[], bool]) -> AsyncIterator[TaskGroup]:
    """Hold a slot of ``plugin`` with a call that blocks until the block ends; ``busy`` tells
    when the slot is taken. Yields the task group, for calls that queue behind it."""
    scope = anyio.CancelScope()

    async def blocker() -> None:
        with scope:
            await h.call(plugin, "block", timeout=30)

    async with anyio.create_task_group() as tg:
        tg.start_soon(blocker)
        await wait_for(busy)
        yield tg
        scope.cancel()


async def call_in(scope: anyio.CancelScope, h, plugin: str, function: str) -> None:
    """``h.call`` that stops when ``scope`` is cancelled."""
    with scope:
        await h.call(plugin, function)


async def enqueue_in_order(h, tg, queued, calls: list[tuple[str, int]], out: dict) -> None:
    """Start each call only once the previous one is queued, so that arrival order is known."""

    async def one(tag: str, prio: int) -> None:
        out[tag] = await h.call("sched", "order", tag, priority=prio, timeout=30)

    for n, (tag, prio) in enumerate(calls, 1):
        tg.start_soon(one, tag, prio)
        await wait_for(lambda n=n: queued() == n)


PRIORITIES = [("p1", 1), ("p5a", 5), ("p3", 3), ("p5b", 5)]


async def test_saturated_pool_serves_higher_priority_first_fifo_among_equals(sched, make_host):
    async with make_host(pool=ONE) as h:
        out: dict[str, int] = {}
        async with held(h, "sched", lambda: h.plugin("sched").workers[0].inflight == 1) as tg:
            await enqueue_in_order(h, tg, lambda: h.pool("sched").waiting, PRIORITIES, out)
        assert sorted(out, key=out.__getitem__) == ["p5a", "p5b", "p3", "p1"]
        assert h.pool("sched").waiting == 0


async def test_global_cap_admits_higher_priority_first(sched, make_host):
    async with make_host(pool=THREE, policy=PolicyConfig(max_concurrent_calls=1)) as h:
        out: dict[str, int] = {}
        # "other" holds the one global slot
        async with held(h, "other", lambda: h.scheduler_stats().running == 1) as tg:
            await enqueue_in_order(h, tg, lambda: h.plugin("sched").queued, PRIORITIES, out)
            stats = h.scheduler_stats()
            assert stats.queued == 4 and stats.queued_by_plugin == {"sched": 4}
            assert stats.running_by_plugin == {"other": 1} and stats.max_concurrent_calls == 1
        assert sorted(out, key=out.__getitem__) == ["p5a", "p5b", "p3", "p1"]
        assert h.scheduler_stats().running == 0 and h.scheduler_stats().queued == 0


async def test_call_cancelled_while_queued_for_a_worker_never_runs(sched, make_host):
    async with make_host(pool=ONE) as h:
        async with held(h, "sched", lambda: h.plugin("sched").workers[0].inflight == 1) as tg:
            victim = anyio.CancelScope()
            tg.start_soon(call_in, victim, h, "sched", "count")
            await wait_for(lambda: h.pool("sched").waiting == 1)
            victim.cancel()
            await wait_for(lambda: h.pool("sched").waiting == 0)
        assert await h.call("sched", "counted_") == 0
        assert h.plugin("sched").running == 0


async def test_call_cancelled_while_queued_under_a_cap_never_runs(sched, make_host):
    cfg = {"sched": PluginSettings(max_concurrent=1)}
    async with make_host(pool=THREE, plugins=cfg) as h:
        async with held(h, "sched", lambda: h.plugin("sched").running == 1) as tg:
            victim = anyio.CancelScope()
            tg.start_soon(call_in, victim, h, "sched", "count")
            await wait_for(lambda: h.plugin("sched").queued == 1)
            victim.cancel()
            await wait_for(lambda: h.plugin("sched").queued == 0)
            assert h.plugin("sched").queued == 0 and h.plugin("sched").running == 1
        assert await h.call("sched", "counted_") == 0
        info = h.plugin("sched")
        assert info.running == 0 and info.queued == 0


async def test_call_queued_past_its_deadline_raises_call_timeout(sched, make_host):
    cfg = {"sched": PluginSettings(max_concurrent=1)}
    async with make_host(pool=THREE, plugins=cfg) as h:
        async with held(h, "sched", lambda: h.plugin("sched").running == 1):
            t0 = time.monotonic()
            with pytest.raises(CallTimeout) as err:
                await h.call("sched", "count", timeout=0.3)
            assert 0.25 < time.monotonic() - t0 < 2.0
            assert err.value.plugin == "sched" and err.value.function == "count"
        assert await h.call("sched", "counted_") == 0
        assert h.plugin("sched").timeouts == 0  # no worker was killed


async def test_cancelled_running_call_aborts_signal_and_stubborn_worker_is_replaced(sched, make_host):
    async with make_host(pool=ONE, limits=WorkerLimits(cancel_grace=0.3)) as h:
        with anyio.move_on_after(0.3):
            await h.call("sched", "block")
        await wait_for(lambda: h.plugin("sched").workers[0].inflight == 0)
        assert await h.call("sched", "abortedCount") == 1
        assert h.plugin("sched").crashes == 0

        pid = await h.call("sched", "pid")
        scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_in, scope, h, "sched", "stubborn")
            await wait_for(lambda: h.plugin("sched").workers[0].inflight == 1)
            scope.cancel()
        await wait_for(lambda: h.plugin("sched").restarts == 1)  # killed after cancel_grace, replaced
        assert await h.call("sched", "pid", timeout=10) != pid
        info = h.plugin("sched")
        # the caller's cancel, not the plugin's crash: it counts toward no crash loop
        assert info.crashes == 0 and info.timeouts == 0 and info.running == 0


async def test_cancels_a_plugin_ignores_never_put_it_in_a_crash_loop(sched, make_host):
    # Before: each worker killed after cancel_grace counted as a crash, so an app cancelling a
    # few calls (move_on_after) to a plugin that does not watch its signal put it in `error`.
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, crash_loop_threshold=2),
                         limits=WorkerLimits(cancel_grace=0.2)) as h:
        for n in range(1, 4):
            scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_in, scope, h, "sched", "stubborn")
                await wait_for(lambda: h.plugin("sched").workers and h.plugin("sched").workers[0].inflight == 1)
                scope.cancel()
            await wait_for(lambda n=n: h.plugin("sched").restarts == n)
        info = h.plugin("sched")
        assert (info.state, info.crashes) == ("running", 0), (info.state, info.error)
        assert await h.call("sched", "pid", timeout=10) > 0


async def peak_inflight(h, plugins: list[str], calls: list[tuple[str, int]]) -> dict[str, int]:
    """Run ``calls`` (plugin, ms) at once; the most calls on workers at any poll, in all and per
    plugin (the keys ``*`` and each plugin)."""
    peak = {"*": 0, **dict.fromkeys(plugins, 0)}
    done = anyio.Event()

    async def poll() -> None:
        while not done.is_set():
            now = {p: sum(w.inflight for w in h.plugin(p).workers) for p in plugins}
            for p, n in now.items():
                peak[p] = max(peak[p], n)
            peak["*"] = max(peak["*"], sum(now.values()))
            await anyio.sleep(0.005)

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        async with anyio.create_task_group() as calls_tg:
            for plugin, ms in calls:
                calls_tg.start_soon(h.call, plugin, "sleep", ms)
        done.set()
    return peak


async def test_global_cap_bounds_calls_running_across_plugins(sched, make_host):
    async with make_host(pool=THREE, policy=PolicyConfig(max_concurrent_calls=2)) as h:
        peak = await peak_inflight(h, ["sched", "other"], [("sched", 200), ("other", 200)] * 3)
        assert peak["*"] == 2
        assert h.scheduler_stats().running == 0


async def test_per_plugin_cap_bounds_that_plugin_only_and_can_change_at_runtime(sched, make_host):
    async with make_host(pool=THREE, plugins={"sched": PluginSettings(max_concurrent=1)}) as h:
        peak = await peak_inflight(h, ["sched", "other"], [("sched", 150), ("other", 150)] * 3)
        assert peak["sched"] == 1 and peak["other"] == 3

        h.set_policy("sched", max_concurrent=2)
        peak = await peak_inflight(h, ["sched"], [("sched", 150)] * 4)
        assert peak["sched"] == 2

        # Raising the cap lets calls already waiting in.
        h.set_policy("sched", max_concurrent=1)
        async with held(h, "sched", lambda: h.plugin("sched").running == 1) as tg:
            result: list[int] = []

            async def waiting() -> None:
                result.append(await h.call("sched", "sleep", 1, timeout=10))

            tg.start_soon(waiting)
            await wait_for(lambda: h.plugin("sched").queued == 1)
            h.set_policy("sched", max_concurrent=0)  # no cap
            await wait_for(lambda: result == [1])
        with pytest.raises(InvalidConfig):
            h.set_policy("sched", max_concurrent=-1)


async def test_global_cap_changes_at_runtime(sched, make_host):
    async with make_host(pool=THREE) as h:
        h.set_max_concurrent_calls(1)
        peak = await peak_inflight(h, ["sched", "other"], [("sched", 150), ("other", 150)] * 2)
        assert peak["*"] == 1
        h.set_max_concurrent_calls(None)
        peak = await peak_inflight(h, ["sched", "other"], [("sched", 150), ("other", 150)] * 2)
        assert peak["*"] >= 3
        with pytest.raises(InvalidConfig):
            h.set_max_concurrent_calls(0)


def test_concurrency_caps_are_validated():
    from host import HostConfig

    with pytest.raises(InvalidConfig, match="max_concurrent_calls"):
        HostConfig(policy={"max_concurrent_calls": 0})
    with pytest.raises(InvalidConfig, match=r"plugins\.x\.max_concurrent"):
        HostConfig(plugins={"x": {"max_concurrent": -2}})
    cfg = HostConfig(policy={"max_concurrent": 3}, plugins={"x": {"max_concurrent": 0}})
    assert cfg.max_concurrent_for("x") == 0 and cfg.max_concurrent_for("y") == 3


# ---------------------------------------------------------------------- the limiter alone


async def _queue(s: Scheduler, tg, plugin: str, prio: int, order: list[str], tag: str,
                 hold: anyio.Event | None = None) -> None:
    async def one() -> None:
        async with s.slot(plugin, prio):
            order.append(tag)
            if hold is not None:
                await hold.wait()

    before = s.stats().queued
    tg.start_soon(one)
    await wait_for(lambda: s.stats().queued == before + 1)


async def test_limiter_serves_by_priority_then_arrival():
    s = Scheduler(max_concurrent=1)
    order: list[str] = []
    await s.acquire("a")
    async with anyio.create_task_group() as tg:
        for tag, prio in [*PRIORITIES, ("p0", 0), ("p3b", 3)]:
            await _queue(s, tg, "a", prio, order, tag)
        s.release("a")
    assert order == ["p5a", "p5b", "p3", "p3b", "p1", "p0"]
    assert s.stats() == Scheduler(1).stats()


async def test_limiter_global_cap_picks_best_across_plugins_with_room():
    caps = {"a": 1}
    s = Scheduler(max_concurrent=2, cap_for=caps.get)
    order: list[str] = []
    hold = anyio.Event()
    await s.acquire("a")
    await s.acquire("b")
    async with anyio.create_task_group() as tg:
        await _queue(s, tg, "a", 9, order, "a9")   # blocked by a's own cap as well
        await _queue(s, tg, "b", 1, order, "b1")
        await _queue(s, tg, "c", 2, order, "c2", hold)
        s.release("b")     # a is still at its cap: the best of b and c goes
        await wait_for(lambda: order == ["c2"])
        s.release("a")     # a has room again and a9 outranks b1
        await wait_for(lambda: order == ["c2", "a9", "b1"])
        hold.set()
    assert order == ["c2", "a9", "b1"]
    assert s.stats().running == 0


async def test_limiter_cancel_and_timeout_while_waiting_leak_nothing():
    s = Scheduler(cap_for=lambda plugin: 1)
    await s.acquire("a")
    with anyio.move_on_after(0.05):
        await s.acquire("a", 5)
    with pytest.raises(TimeoutError):
        await s.acquire("a", 5, deadline=time.monotonic() + 0.05)
    assert s.queued("a") == 0 and s.running("a") == 1
    for _ in range(200):  # lazily dropped entries are compacted
        with anyio.move_on_after(0):
            await s.acquire("a")
    s.release("a")
    assert s.running("a") == 0
    async with s.slot("a"):
        assert s.running("a") == 1
    with pytest.raises(ValueError):
        s.max_concurrent = 0


async def test_limiter_raised_cap_admits_waiters():
    s = Scheduler(max_concurrent=1)
    await s.acquire("a")
    order: list[str] = []
    hold = anyio.Event()
    async with anyio.create_task_group() as tg:
        await _queue(s, tg, "a", 0, order, "x", hold)
        await _queue(s, tg, "b", 0, order, "y", hold)
        s.max_concurrent = 3
        await wait_for(lambda: sorted(order) == ["x", "y"])  # woken together: any order
        assert s.stats().running == 3
        hold.set()
    s.release("a")
    assert s.stats().running == 0


async def test_a_call_its_caller_gave_up_on_keeps_its_concurrency_slot_until_it_ends(sched, make_host):
    # "A slot is held for the whole call": before, the caller's own shorter timeout released it
    # while the call ran on, so max_concurrent = 1 let a second call run beside it (an upstream
    # API the cap protects saw two requests at once).
    cfg = {"sched": PluginSettings(max_concurrent=1)}
    async with make_host(pool=THREE, plugins=cfg, limits=WorkerLimits(call_timeout=5)) as h:
        t0 = time.monotonic()
        with pytest.raises(CallTimeout) as e:
            await h.call("sched", "sleep", 1500, timeout=0.1)  # ignores its signal: runs 1.5 s
        assert e.value.caller
        assert await h.call("sched", "count", timeout=5) == 1
        assert time.monotonic() - t0 >= 1.4, "ran beside the call its caller gave up on"
        await wait_for(lambda: h.plugin("sched").running == 0)
        assert await h.call("sched", "count", timeout=1) == 2  # and the slot is free again
