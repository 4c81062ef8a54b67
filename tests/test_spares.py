"""Hot spares (issue 20): PoolConfig(spares=N) keeps N workers started and ready but not
serving; a crash, a recycle or a scale-up takes one at once (no spawn in the caller's path) and
a new spare starts in the background."""

from __future__ import annotations

import os
import signal
import time

import anyio
import pytest
from support.processes import deno_children, free_port, process_gone, wait_for
from support.servers import served

from host import ExecuteConfig, PluginSettings, PoolConfig, WorkerCrashed, WorkerLimits
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_a_crash_is_served_by_the_spare_at_once_and_a_new_spare_starts(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, spares=1)) as h:
        pool = h.pool("calc")
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        serving, spare = pool.workers[0].pid, pool.spares[0].pid
        assert h.plugin("calc").spares == [spare] and serving != spare
        t0 = time.perf_counter()
        os.kill(serving, signal.SIGKILL)
        await wait_for(lambda: [w.pid for w in pool.workers] == [spare], timeout=5, interval=0.0005)
        took = time.perf_counter() - t0
        assert await h.call("calc", "add", 1, 2) == 3
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        assert pool.spares[0].pid not in (serving, spare)
        assert pool.restarts == 1 and process_gone(serving)
    assert took < 0.5  # the death noticed and a ready worker in place: no Deno started meanwhile


async def test_a_recycled_worker_hands_over_to_the_spare(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, spares=1, max_calls_per_worker=2)) as h:
        pool = h.pool("calc")
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        first, spare = pool.workers[0].pid, pool.spares[0].pid
        assert [await h.call("calc", "pid") for _ in range(2)] == [first, first]
        assert await h.call("calc", "pid") == spare  # the third call: on the spare, already warm


async def test_spares_serve_nothing_until_taken_and_go_with_the_pool(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, spares=2)) as h:
        pool = h.pool("calc")
        await wait_for(lambda: len(pool.spares) == 2 and all(w.state == "ready" for w in pool.spares))
        pids = {await h.call("calc", "pid") for _ in range(20)}
        serving, spares = [w.pid for w in pool.workers], [w.pid for w in pool.spares]
    assert pids == set(serving) and not pids & set(spares)
    assert all(process_gone(pid) for pid in [*serving, *spares])


@pytest.mark.parametrize("pooled", [False, True])
async def test_code_that_crashes_its_worker_does_not_slow_the_next_callers_workers(make_host, pooled):
    """Executions that crash their worker (``Deno.exit``) are the code's doing, not a broken
    runtime: the workers started in their place (and the spares) start at once, with no restart
    backoff for the next callers to wait through (before: ten crashes delayed every spawn 5 s)."""
    async with make_host(execute=ExecuteConfig(pooled=pooled, min_workers=1, max_workers=2)) as h:
        for _ in range(10):
            out = await h.execute("export default () => Deno.exit(3)", timeout=5)
            assert not out.ok and out.logs[-1].name == "WorkerCrashed"
        for _ in range(3):  # each on a worker started since (pooled = false: a fresh one each)
            t0 = time.perf_counter()
            out = await h.execute("export default () => 7", timeout=5)
            assert out.ok and out.result == 7, out
            assert time.perf_counter() - t0 < 1.5


async def test_a_plugin_under_the_inspector_gets_no_spare_to_fight_for_its_port(calc, make_host):
    """``inspect`` runs the plugin as one worker on one inspector port: a spare would start on
    the same port, fail ("Address already in use") and crash-loop the plugin into `error`."""
    port = free_port()
    async with make_host(pool=PoolConfig(spares=1), plugins={"calc": PluginSettings(inspect=f"127.0.0.1:{port}")}) as h:
        pool = h.pool("calc")
        assert pool.config.spares == 0 and pool.config.max_workers == 1
        assert [await h.call("calc", "add", i, 1) for i in range(3)] == [1, 2, 3]
        assert pool.crashes == 0 and h.plugin("calc").state == "running" and len(deno_children()) == 1


async def test_a_plugin_put_in_error_by_a_crash_loop_keeps_no_spare_and_reset_starts_new_ones(plugin_dir, make_host):
    """A plugin in `error` serves nothing: its spares stop with its idle workers (before: they
    stayed, unlisted, until the host stopped, and ``reset()`` put those old workers back)."""
    plugin_dir.add("dies.js", "export function die() { Deno.exit(4); }\nexport const pid = () => Deno.pid;\n")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, spares=4, crash_loop_threshold=2)) as h:
        pool = h.pool("dies")
        await wait_for(lambda: len(pool.spares) == 4 and all(w.state == "ready" for w in pool.spares), timeout=20)
        before = [w.pid for w in [*pool.workers, *pool.spares]]
        for _ in range(2):
            with pytest.raises(WorkerCrashed):
                await h.call("dies", "die")
        assert pool.state == "error"
        await wait_for(lambda: all(process_gone(pid) for pid in before) and not deno_children(), timeout=10)
        assert pool.spares == []
        h.reset("dies")
        assert await h.call("dies", "pid") not in before
        await wait_for(lambda: len(pool.spares) == 4, timeout=20)
        assert not {w.pid for w in pool.spares} & set(before)


SLOW_CONF = """
export const metadata = { id: "conf", name: "conf", version: "1.0.0", apiVersion: "1.0",
  configSchema: { region: { type: "string", default: "eu" } } };
console.log("importing");  // after its welcome, with the config of that moment
await new Promise((r) => setTimeout(r, 1000));
let told = [];
export function seen(ctx) { return { pid: Deno.pid, region: ctx.config.region, told }; }
export async function onConfigChange(c) {
  console.log(`told ${c.region}`);
  await new Promise((r) => setTimeout(r, 600));
  told.push(c.region);
}
"""


async def test_a_spare_told_a_config_that_changed_again_meanwhile_is_told_the_latest(plugin_dir, make_host):
    """A spare welcomed with config A is told B when it is ready; C set while it runs that hook
    (it is in no list yet, so plugins/hooks.py cannot tell it) is told next, before it may serve
    (before: it stayed a spare with B, a rotated-out secret, and served with it once taken)."""
    plugin_dir.add("conf.js", SLOW_CONF)
    async with make_host(reload=ReloadConfig(enabled=False),
                         pool=PoolConfig(min_workers=1, max_workers=1, spares=1)) as h:
        pool = h.pool("conf")

        def logged(text: str) -> int:
            return sum(e.message == text for e in h.logs("conf"))

        await wait_for(lambda: logged("importing") == 2, timeout=10)  # the spare, welcomed with "eu"
        await h.set_config("conf", {"region": "us"})  # told to the serving worker
        await wait_for(lambda: logged("told us") == 2, timeout=10)  # and now to the spare, ready
        await h.set_config("conf", {"region": "ap"})
        await wait_for(lambda: len(pool.spares) == 1, timeout=10)
        spare = pool.spares[0].pid
        os.kill(pool.workers[0].pid, signal.SIGKILL)
        await wait_for(lambda: [w.pid for w in pool.workers] == [spare], timeout=10)
        assert await h.call("conf", "seen") == {"pid": spare, "region": "ap", "told": ["us", "ap"]}


LEAVES_A_SPIN = ('export default () => { AbortSignal.timeout(1).addEventListener("abort", () => { while (true) {} });'
                 " return Deno.pid; }")


async def test_a_fresh_worker_that_served_its_execution_is_killed_not_left_to_spin_in_a_slot(make_host):
    """pooled = false: the worker of an execution is done with once it answered. Code that left
    it spinning (a listener on a lent AbortSignal.timeout) cannot make it hold one of the
    max_workers slots for shutdown_grace (before: two such executions a few seconds apart kept
    every other caller waiting, here 5 s)."""
    xc = ExecuteConfig(pooled=False, max_workers=2)
    async with make_host(execute=xc, limits=WorkerLimits(shutdown_grace=5.0)) as h:
        pids = [(await h.execute(LEAVES_A_SPIN, timeout=10)).result for _ in range(2)]
        t0 = time.perf_counter()
        out = await h.execute("export default () => Deno.pid", timeout=10)
        assert out.ok and out.result not in pids and time.perf_counter() - t0 < 1.5
        await wait_for(lambda: all(process_gone(pid) for pid in pids), timeout=1.5)


async def test_a_reloaded_plugins_old_spares_stop_at_once_while_its_calls_drain(calc, make_host):
    """A pool that closes serves nothing new: its spares stop at once, not after the calls in
    flight drained (before: every reload, or config change without onConfigChange, during a
    long call left the old pool's spares running up to drain_timeout beside the new pool's)."""
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1, spares=2)) as h, \
            anyio.create_task_group() as tg:
        old = h.pool("calc")
        await wait_for(lambda: len(old.spares) == 2 and all(w.state == "ready" for w in old.spares), timeout=20)
        spares = [w.pid for w in old.spares]
        slow: list = []

        async def sleep() -> None:
            slow.append(await h.call("calc", "sleep", 4000))

        tg.start_soon(sleep)
        await wait_for(lambda: old.workers[0].load == 1)
        assert await h.reload("calc")
        await wait_for(lambda: all(process_gone(pid) for pid in spares), timeout=2)
        assert not slow and old.state == "closing"  # the call still runs on the old worker
        await wait_for(lambda: slow == [4000], timeout=10)


async def test_an_idle_plugin_with_no_minimum_gives_its_spares_back_and_gets_them_with_the_next_call(calc, make_host):
    """min_workers = 0 means an idle plugin keeps no process: once nothing has called it for
    idle_timeout its spares stop with its workers, and the next call brings them back (before:
    the spare ran for the life of the host, one Deno per idle plugin)."""
    async with make_host(pool=PoolConfig(min_workers=0, max_workers=1, spares=1, idle_timeout=1.5)) as h:
        pool = h.pool("calc")
        serving = await h.call("calc", "pid")
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        pids = [serving, pool.spares[0].pid]
        await wait_for(lambda: not pool.workers and not pool.spares, timeout=5)
        await wait_for(lambda: all(process_gone(pid) for pid in pids), timeout=5)
        assert not deno_children() and h.plugin("calc").spares == []
        assert await h.call("calc", "add", 2, 3) == 5  # a cold start, and the spare again
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        assert pool.spares[0].pid not in pids and pool.workers[0].pid not in pids
        spare = pool.spares[0].pid
        os.kill(pool.workers[0].pid, signal.SIGKILL)
        await wait_for(lambda: not pool.workers)
        assert await h.call("calc", "pid") == spare  # the spare serves the next call, as before


async def test_parked_spares_stay_parked_while_several_idle_workers_stop(calc, make_host):
    """Two idle workers retired at once: the first one's exit is no call, and must not bring
    the spare back while the second is still stopping."""
    async with make_host(pool=PoolConfig(min_workers=0, max_workers=2, spares=1, idle_timeout=0.5)) as h:
        pool = h.pool("calc")
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(h.call, "calc", "sleep", 300)
        await wait_for(lambda: not pool.workers and not pool.spares and not deno_children(), timeout=10)
        await anyio.sleep(1.0)  # a window for a spare to come back uncalled: it must not
        assert not deno_children() and pool._spares_parked


SLOW_STOP = """
export const metadata = { id: "slowstop", name: "Slow stop", version: "1.0.0", apiVersion: "1.0" };
export function pid() { return Deno.pid; }
export async function onStop() { await new Promise((r) => setTimeout(r, 2500)); }
"""


async def test_parked_spares_still_stopping_count_against_the_spares_a_call_brings_back(plugin_dir, make_host):
    """Parked spares run their onStop (here 2.5 s): a call meanwhile starts its worker, and new
    spares only as the old ones go (before: 2 new spares beside 2 stopping, over max + spares)."""
    plugin_dir.add("slowstop.js", SLOW_STOP)
    async with make_host(pool=PoolConfig(min_workers=0, max_workers=1, spares=2, idle_timeout=0.3)) as h, \
            anyio.create_task_group() as tg:
        pool = h.pool("slowstop")
        await wait_for(lambda: len(pool.spares) == 2 and all(w.state == "ready" for w in pool.spares))
        await wait_for(lambda: pool._spares_parked and len(pool._parting) == 2, timeout=10)
        peak: list[int] = []

        async def count() -> None:
            while True:
                peak.append(len(deno_children()))
                await anyio.sleep(0.02)

        tg.start_soon(count)
        assert await h.call("slowstop", "pid") > 0  # a spare still stopping: this call starts a worker
        await wait_for(lambda: not pool._parting and len(pool.spares) == 2, timeout=15)
        tg.cancel_scope.cancel()
    assert max(peak) <= 1 + 2, peak


async def test_the_warm_execute_pool_keeps_its_spares_however_long_it_idles(make_host):
    """pooled = false: each execution takes a spare; the pool without permissions stays warm
    (min_workers = 0 there means no worker serves between executions, not an idle pool to park)."""
    async with make_host(execute=ExecuteConfig(pooled=False, idle_timeout=0.3)) as h:
        assert (await h.execute("export default () => 1", timeout=10)).result == 1
        await wait_for(lambda: len(deno_children()) == 2, timeout=10)
        spares = sorted(deno_children())
        await anyio.sleep(1.5)  # five idle timeouts
        assert sorted(deno_children()) == spares
        t0 = time.perf_counter()
        assert (await h.execute("export default () => Deno.pid", timeout=10)).result in spares
        assert time.perf_counter() - t0 < 1.0


async def test_spares_of_a_plugin_with_a_minimum_stay_however_long_it_idles(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=2, spares=1, idle_timeout=0.2)) as h:
        pool = h.pool("calc")
        await wait_for(lambda: len(pool.spares) == 1 and pool.spares[0].state == "ready")
        spare = pool.spares[0].pid
        await anyio.sleep(0.8)  # four idle timeouts: the reaper ran many times and kept it
        assert [w.pid for w in pool.spares] == [spare] and len(pool.workers) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_over_http_one_clients_crashing_and_spinning_code_does_not_hold_up_anothers(make_host):
    """pooled = false over a real server: a client whose code exits its worker or leaves it
    spinning leaves the next client's /execute answered on a ready worker within a second."""
    xc = ExecuteConfig(pooled=False, max_workers=2)
    async with make_host(execute=xc, limits=WorkerLimits(shutdown_grace=5.0)) as h, \
            served(h, enable_execute=True) as (_, http):
        async def execute(code: str) -> dict:
            async with http.post("/execute", json={"code": code, "timeout": 10_000}) as r:
                assert r.status == 200
                return await r.json()

        for _ in range(6):
            assert not (await execute("export default () => Deno.exit(3)"))["ok"]
        for _ in range(2):
            assert (await execute(LEAVES_A_SPIN))["ok"]
        t0 = time.perf_counter()
        assert await execute("export default () => 7") == {"ok": True, "result": 7, "duration": pytest.approx(0, abs=1000)}
        assert time.perf_counter() - t0 < 1.0
