"""Pools: crashes, restarts, crash-loop breaker, recycling, idle reaping, drain."""

from __future__ import annotations

import os
import random
import signal
import time

import anyio
import pytest
from support.processes import process_gone, wait_for

from host import CallTimeout, HostError, PluginUnavailable, PoolConfig, WorkerCrashed, WorkerLimits

pytestmark = pytest.mark.anyio




async def test_worker_sigkilled_mid_call_fails_fast_and_pool_recovers(calc, make_host):
    async with make_host() as h:
        pid = h.plugin("calc").workers[0].pid
        result: dict = {}

        async def victim():
            t0 = time.monotonic()
            try:
                await h.call("calc", "sleep", 5000)
            except WorkerCrashed as exc:
                result["err"], result["t"] = exc, time.monotonic() - t0

        async with anyio.create_task_group() as tg:
            tg.start_soon(victim)
            await wait_for(lambda: h.plugin("calc").workers[0].inflight == 1)
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
        assert time.monotonic() - t_kill < 1.0
        err = result["err"]
        assert err.signal == signal.SIGKILL and err.reason == "crash"
        assert await h.call("calc", "add", 1, 1) == 2
        info = h.plugin("calc")
        assert info.crashes == 1 and info.restarts == 1 and info.workers[0].pid != pid


async def test_200_concurrent_calls_with_random_sigkills_all_settle(calc, make_host):
    pool = PoolConfig(min_workers=2, max_workers=4, crash_loop_threshold=1000, restart_backoff=0.01)
    async with make_host(pool=pool) as h:
        outcomes: list[object] = []
        most_workers = 0

        async def one(i: int):
            nonlocal most_workers
            try:
                got = await h.call("calc", "addLater", i, 1, timeout=20)
                assert got == i + 1
                outcomes.append(got)
            except HostError as exc:
                outcomes.append(exc)
            most_workers = max(most_workers, len(h.plugin("calc").workers))

        async def killer():
            rnd = random.Random(7)
            for _ in range(8):
                await anyio.sleep(rnd.uniform(0.02, 0.08))
                pids = [w.pid for w in h.plugin("calc").workers if w.pid]
                if pids:
                    try:
                        os.kill(rnd.choice(pids), signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for i in range(200):
                    tg.start_soon(one, i)
        assert len(outcomes) == 200
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert all(isinstance(e, WorkerCrashed) for e in errors), errors
        assert len(errors) < 200
        assert most_workers <= 4
        await wait_for(lambda: len([w for w in h.plugin("calc").workers if w.state == "ready"]) >= 2)
        assert h.plugin("calc").state == "running"
        assert h.plugin("calc").crashes >= 1


async def test_crash_loop_puts_plugin_in_error_until_reset(plugin_dir, make_host):
    plugin_dir.add("die.js", """
        export function die() { Deno.exit(3); }
        export function ok() { return "ok"; }
    """)
    pool = PoolConfig(crash_loop_threshold=3, crash_loop_window=60, restart_backoff=0.01)
    async with make_host(pool=pool) as h:
        for _ in range(3):
            with pytest.raises(WorkerCrashed) as e:
                await h.call("die", "die")
            assert e.value.exit_code == 3
        assert h.plugin("die").state == "error"
        assert "crash loop" in h.plugin("die").error
        with pytest.raises(PluginUnavailable, match="crash loop"):
            await h.call("die", "ok")
        h.pool("die").reset()
        assert await h.call("die", "ok") == "ok"
        assert h.plugin("die").state == "running"


async def kill_until_crash_loop(h, plugin: str) -> int:
    """SIGKILL the plugin's worker from outside (as an OOM killer would), each new one as it
    serves, until the pool calls it a crash loop; returns how many were killed."""
    killed = 0
    while h.plugin(plugin).state != "error":
        pid = h.plugin(plugin).workers[0].pid
        os.kill(pid, signal.SIGKILL)
        killed += 1
        await wait_for(lambda gone=pid: h.plugin(plugin).state == "error" or any(
            w.state == "ready" and w.pid != gone for w in h.plugin(plugin).workers), 10)
    return killed


async def test_a_crash_loop_from_outside_kills_is_tried_again_after_a_cooldown_with_backoff(calc, make_host):
    pool = PoolConfig(crash_loop_threshold=3, crash_loop_window=60, restart_backoff=0.01,
                      crash_loop_cooldown=0.5, crash_loop_cooldown_max=5)
    async with make_host(pool=pool) as h:
        states: list[str] = []
        h.subscribe(lambda e: states.append(e.state) if e.plugin == "calc" and e.kind == "state" else None)
        assert await kill_until_crash_loop(h, "calc") == 3
        info = h.plugin("calc")
        assert info.state == "error" and "crash loop" in info.error and "tried again automatically in 0.5s" in info.error
        assert info.next_retry is not None and 0 < info.next_retry - time.time() <= 0.5
        with pytest.raises(PluginUnavailable, match="crash loop"):
            await h.call("calc", "add", 1, 1)
        came_back = anyio.Event()
        h.subscribe(lambda e: came_back.set() if e.plugin == "calc" and e.state == "running" else None)
        with anyio.fail_after(10):
            await came_back.wait()
        assert await h.call("calc", "add", 2, 3) == 5  # nobody restarted it
        info = h.plugin("calc")
        assert info.state == "running" and info.next_retry is None and info.crash_loop_retries == 1

        await kill_until_crash_loop(h, "calc")  # again: the wait doubles
        info = h.plugin("calc")
        assert "tried again automatically in 1s" in info.error and 0.5 < info.next_retry - time.time() <= 1
        h.pool("calc").reset()  # the operator was quicker: the scheduled retry does nothing
        assert h.plugin("calc").next_retry is None
        assert await h.call("calc", "add", 1, 1) == 2
        assert states.count("error") == 2


async def test_a_crash_loop_stays_in_error_with_the_cooldown_off(calc, make_host):
    pool = PoolConfig(crash_loop_threshold=2, restart_backoff=0.01, crash_loop_cooldown=0)
    async with make_host(pool=pool) as h:
        await kill_until_crash_loop(h, "calc")
        info = h.plugin("calc")
        assert info.state == "error" and info.next_retry is None and "automatically" not in info.error


async def test_plugin_that_fails_to_load_is_error_and_others_keep_serving(calc, make_host):
    calc.add("broken.js", "export function f( {")
    async with make_host() as h:
        info = h.plugin("broken")
        assert info.state == "error" and "SyntaxError" in info.error
        with pytest.raises(PluginUnavailable):
            await h.call("broken", "f")
        assert await h.call("calc", "add", 1, 2) == 3


async def test_worker_recycled_after_max_calls(calc, make_host):
    async with make_host(pool=PoolConfig(max_calls_per_worker=3)) as h:
        pids = [await h.call("calc", "pid") for _ in range(7)]
        assert pids[0] == pids[1] == pids[2] != pids[3]
        assert pids[3] == pids[4] == pids[5] != pids[6]
        assert h.plugin("calc").crashes == 0


async def test_pool_scales_up_under_load_and_reaps_idle_workers(calc, make_host):
    pool = PoolConfig(min_workers=1, max_workers=3, idle_timeout=0.3)
    async with make_host(pool=pool) as h:
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(h.call, "calc", "sleep", 300)
            await wait_for(lambda: len(h.plugin("calc").workers) == 3)
        await wait_for(lambda: len(h.plugin("calc").workers) == 1, timeout=5)
        assert h.plugin("calc").crashes == 0


async def test_calls_queue_when_all_workers_are_busy(calc, make_host):
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        t0 = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(h.call, "calc", "sleep", 150)
        assert time.monotonic() - t0 >= 0.45
        assert len(h.plugin("calc").workers) == 1


async def test_queued_call_past_its_deadline_times_out_and_leaves_the_worker_alone(calc, make_host):
    # The pool's one timer for queued callers: the one with the short deadline gives up at it
    # (CallTimeout, nothing killed), the one with a longer deadline is still served after.
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        pid = h.plugin("calc").workers[0].pid
        out: dict = {}

        async def patient():
            out["patient"] = await h.call("calc", "add", 2, 3, timeout=10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(h.call, "calc", "sleep", 600)
            await wait_for(lambda: h.plugin("calc").workers[0].inflight == 1)
            tg.start_soon(patient)
            t0 = time.monotonic()
            with pytest.raises(CallTimeout, match="no worker became free"):
                await h.call("calc", "add", 1, 1, timeout=0.2)
            waited = time.monotonic() - t0
            assert h.pool("calc").waiting == 1  # the patient one is still in line
        assert 0.15 <= waited < 0.5
        assert out["patient"] == 5
        assert h.pool("calc").waiting == 0
        info = h.plugin("calc")
        assert info.workers[0].pid == pid and info.timeouts == 0 and info.crashes == 0


async def test_close_drains_calls_in_flight(calc, make_host):
    results: list[int] = []
    async with make_host() as h:
        async def slow():
            results.append(await h.call("calc", "sleep", 400))

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(slow)
            await wait_for(lambda: sum(w.inflight for w in h.plugin("calc").workers) == 2)
            await h.aclose()
    assert results == [400, 400]


async def test_idle_worker_that_stops_answering_heartbeats_is_replaced(plugin_dir, make_host):
    plugin_dir.add("hang.js", """
        export function hangSoon() { setTimeout(() => { while (true) {} }, 20); return Deno.pid; }
        export function pid() { return Deno.pid; }
    """)
    limits = WorkerLimits(heartbeat_interval=0.1, heartbeat_timeout=0.5)
    async with make_host(limits=limits) as h:
        pid = await h.call("hang", "hangSoon")
        await wait_for(lambda: h.plugin("hang").crashes == 1, timeout=5)
        assert await h.call("hang", "pid") != pid


async def test_snapshot_reports_workers_and_heartbeats(calc, make_host):
    async with make_host(limits=WorkerLimits(heartbeat_interval=0.05)) as h:
        await h.call("calc", "add", 1, 2)
        await wait_for(lambda: h.plugin("calc").workers[0].last_heartbeat is not None)
        info = h.plugin("calc")
        assert (info.state, info.version, info.name) == ("running", "1.2.3", "Calculator")
        assert "add" in info.exports and info.calls == 1
        w = info.workers[0]
        assert w.state == "ready" and w.calls == 1 and w.inflight == 0
        assert abs(w.last_heartbeat - time.time()) < 2
        assert os.path.exists(f"/proc/{w.pid}")


async def test_timeout_kills_the_whole_process_group(plugin_dir, make_host):
    plugin_dir.add("spawner.js", """
        export const metadata = { id: "spawner", name: "spawner", version: "1.0.0", apiVersion: "1.0", permissions: { run: ["sleep"] } };
        export function start() {
          const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
          return child.pid;
        }
        export function spin() { while (true) {} }
    """)
    async with make_host(limits=WorkerLimits(call_timeout=0.3)) as h:
        child = await h.call("spawner", "start")
        assert os.path.exists(f"/proc/{child}")
        with pytest.raises(CallTimeout):
            await h.call("spawner", "spin")
        await wait_for(lambda: process_gone(child), timeout=3)


async def test_crash_error_carries_exit_code_and_the_workers_last_output(plugin_dir, make_host):
    plugin_dir.add("dying.js", """
        export function die() {
          Deno.stderr.writeSync(new TextEncoder().encode("fatal: the flux capacitor broke\\n"));
          Deno.exit(7);
        }
    """)
    async with make_host() as h:
        with pytest.raises(WorkerCrashed) as e:
            await h.call("dying", "die")
        assert e.value.exit_code == 7 and e.value.signal is None and e.value.reason == "crash"
        assert "flux capacitor" in e.value.stderr_tail
        assert "flux capacitor" in str(e.value)


async def test_heap_cap_kills_a_runaway_worker_with_reason_memory(plugin_dir, make_host):
    plugin_dir.add("hog.js", """
        export function hog() { const a = []; while (true) a.push({ x: Math.random(), y: [1, 2, 3] }); }
        export function ok() { return "ok"; }
    """)
    async with make_host(limits=WorkerLimits(heap_mb=32)) as h:
        with pytest.raises(WorkerCrashed) as e:
            await h.call("hog", "hog", timeout=20)
        assert e.value.reason == "memory"
        assert await h.call("hog", "ok") == "ok"


async def test_consecutive_crashes_back_off_exponentially(plugin_dir, make_host):
    plugin_dir.add("die.js", """
        export function die() { Deno.exit(1); }
        export function ok() { return "ok"; }
    """)
    pool = PoolConfig(restart_backoff=0.3, crash_loop_threshold=100)
    async with make_host(pool=pool) as h:
        with pytest.raises(WorkerCrashed):
            await h.call("die", "die")  # first crash: replaced at once
        t0 = time.monotonic()
        assert await h.call("die", "ok") == "ok"
        assert time.monotonic() - t0 < 0.3
        for _ in range(2):  # a success resets the count; two crashes in a row now
            with pytest.raises(WorkerCrashed):
                await h.call("die", "die")
        t0 = time.monotonic()
        assert await h.call("die", "ok") == "ok"  # waits out the 0.3 s backoff
        assert time.monotonic() - t0 >= 0.3


async def test_socket_directory_is_private_and_removed_on_close(calc, make_host):
    async with make_host() as h:
        run_dir = h._runtime.run_dir
        assert os.stat(run_dir).st_mode & 0o777 == 0o700
        assert await h.call("calc", "add", 1, 2) == 3
        assert not [p for p in os.listdir(run_dir) if p.endswith(".sock")]  # unlinked after accept
    assert not os.path.exists(run_dir)


async def test_a_stopped_worker_with_a_call_pending_gets_no_new_call(calc, make_host):
    # SIGSTOP: it answers no ping. Its own call waits for its deadline; new calls go elsewhere.
    import os
    import signal

    limits = WorkerLimits(heartbeat_interval=0.1, heartbeat_timeout=0.5)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=2, max_inflight=4), limits=limits) as h:
        stopped = await h.call("calc", "pid")
        async with anyio.create_task_group() as tg:
            async def stuck() -> None:  # its deadline, or (once continued) its own heartbeat watch
                with pytest.raises((CallTimeout, WorkerCrashed)):
                    await h.call("calc", "sleep", 60_000, timeout=4)
            tg.start_soon(stuck)
            await wait_for(lambda: h.pool("calc").workers[0].load == 1)
            os.kill(stopped, signal.SIGSTOP)
            try:
                await wait_for(lambda: h.pool("calc").workers[0].unresponsive, timeout=5)
                for _ in range(3):
                    assert await h.call("calc", "pid", timeout=3) != stopped
            finally:
                os.kill(stopped, signal.SIGCONT)
