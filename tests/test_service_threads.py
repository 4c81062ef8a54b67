"""A shared service that hangs takes a bounded share of the host's worker threads: the first wave
of calls that find it hung (before the host knows: host/outage.py skips it from the first
failure on) holds at most ``outage.SERVICE_THREADS`` of them, so what else runs in threads (a
plugin's sqlite storage) goes on. Real redis-server (SIGSTOP), real workers."""

from __future__ import annotations

import signal
import time

import anyio
import pytest
from support.servers import running_redis

from host import PolicyStorageError

pytestmark = pytest.mark.timeout(60)

COUNTED = """
export function add(a, b) { return a + b; }
"""
STORED = """
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
"""


@pytest.mark.anyio
async def test_the_first_wave_of_calls_on_a_hung_redis_leaves_threads_for_other_plugins_storage(
        plugin_dir, make_host, tmp_path):
    # Before: 100 rate-limited calls arriving together on a Redis that had just hung each took
    # one of anyio's 40 worker threads for the client's socket timeout (2 s), and the others
    # queued behind them, so another plugin's storage put waited seconds for a thread, and each
    # queued call asked the hung Redis in its turn (2 s more per 40), though it was known hung.
    plugin_dir.add("counted.js", COUNTED)
    plugin_dir.add("stored.js", STORED)
    limited = {"counted": {"rate_limit": {"limit": "100000/second"}}}
    with running_redis(tmp_path) as (redis_proc, url):
        async with make_host(policy={"storage": url}, plugins=limited) as h:
            assert await h.call("counted", "add", 1, 2) == 3
            assert await h.call("stored", "put", "k", 0)
            redis_proc.send_signal(signal.SIGSTOP)
            try:
                failed: list[float] = []

                async def limited_call() -> None:
                    t0 = time.monotonic()
                    with pytest.raises(PolicyStorageError):
                        await h.call("counted", "add", 1, 2, timeout=20)
                    failed.append(time.monotonic() - t0)

                async with anyio.create_task_group() as tg:
                    for _ in range(100):
                        tg.start_soon(limited_call)
                    await anyio.sleep(0)  # they all went for a thread first
                    t0 = time.monotonic()
                    assert await h.call("stored", "put", "k", 1, timeout=20)
                    stored_in = time.monotonic() - t0
            finally:
                redis_proc.send_signal(signal.SIGCONT)
            assert len(failed) == 100
            assert stored_in < 1.0, stored_in
            # one socket timeout (2 s) for those that asked; the rest were refused without asking
            assert max(failed) < 5.0, max(failed)
