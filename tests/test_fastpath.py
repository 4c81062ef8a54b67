"""The short call path (issue 20): answers read in the event loop's readable callback on asyncio
(FrameSocket.serve), callers woken through host/wake.py, admission and pool slots taken without
awaiting when nothing limits them, arity verdicts cached per worker. Every check the long path
made still holds; both backends (trio keeps the reader task)."""

from __future__ import annotations

import anyio
import pytest

from host import CallTimeout, InvalidArguments, PoolConfig, WorkerLimits
from host.wake import Wake

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PLUGIN = """
export function add(a, b) { return a + b; }
export function echo(x) { return x; }
export function hang() { for (;;) {} }
export function big(n) { return "x".repeat(n); }
"""


async def test_a_call_past_its_deadline_kills_the_worker_and_the_next_call_is_served(plugin_dir, make_host):
    plugin_dir.add("fast.js", PLUGIN)
    # the plugin's own deadline (a caller's shorter one only cancels: test_caller_deadlines.py)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1), limits=WorkerLimits(call_timeout=0.3)) as h:
        pid = h.plugin("fast").workers[0].pid
        with pytest.raises(CallTimeout):
            await h.call("fast", "hang")
        assert await h.call("fast", "add", 1, 2) == 3
        assert h.plugin("fast").workers[0].pid != pid  # the hung worker was killed and replaced


async def test_pipelined_callers_each_get_their_own_answer(plugin_dir, make_host):
    plugin_dir.add("fast.js", PLUGIN)
    got: dict[int, list[int]] = {}
    async with make_host(pool=PoolConfig(min_workers=2, max_workers=2, max_inflight=16)) as h:
        async def caller(i: int) -> None:
            got[i] = [await h.call("fast", "echo", i * 1000 + k) for k in range(20)]

        async with anyio.create_task_group() as tg:
            for i in range(48):
                tg.start_soon(caller, i)
        assert got == {i: [i * 1000 + k for k in range(20)] for i in range(48)}
        assert sum(w.calls for w in h.plugin("fast").workers) >= 48 * 20


async def test_the_result_cap_and_the_arity_check_hold_on_every_call(plugin_dir, make_host):
    plugin_dir.add("fast.js", PLUGIN)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1),
                         limits=WorkerLimits(max_result_bytes=64 * 1024)) as h:
        for _ in range(2):  # the second time the arity verdict comes from the worker's cache
            with pytest.raises(InvalidArguments, match="takes 2 arguments"):
                await h.call("fast", "add", 1)
            assert await h.call("fast", "add", 2, 3) == 5
            assert len(await h.call("fast", "big", 1000)) == 1000
            with pytest.raises(Exception, match="limit"):
                await h.call("fast", "big", 200 * 1024)


async def test_a_wake_set_after_its_waiter_was_cancelled_still_says_it_was_set():
    # The pool hands a slot to a waiter by setting its Wake: if that waiter was cancelled just
    # before, it must still see that it got the slot (to give it back), as with anyio.Event.
    wake = Wake()
    with anyio.move_on_after(0.01):
        await wake.wait()
    assert not wake.is_set()
    wake.set()
    wake.set()  # again: nothing
    assert wake.is_set()
    woken = Wake()
    async with anyio.create_task_group() as tg:
        tg.start_soon(woken.wait)
        await anyio.sleep(0)
        woken.set()
    assert woken.is_set()


async def test_the_deadline_heaps_hold_the_calls_in_flight_not_every_call_made(plugin_dir, make_host):
    """Each call and each waiting caller pushes its deadline on a heap that a timer task pops
    only when the earliest deadline comes (30 s by default): settled entries are dropped as
    they pile up, or 20,000 calls a second would hold 600,000 of them (~75 MB)."""
    plugin_dir.add("fast.js", PLUGIN)
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        pool = h.pool("fast")
        worker = pool.workers[0]
        for _ in range(1000):
            await h.call("fast", "add", 1, 2)
        for _ in range(100):  # one runs, three wait for the only slot, with a deadline
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(lambda: h.call("fast", "add", 1, 2, timeout=30))
        assert pool.workers == [worker] and worker.calls >= 1400
        assert len(worker._deadlines) <= 64 + 1
        assert len(pool._deadlines) <= 64 + 1
