"""A PluginHost whose ``async with`` body is cancelled from outside (``move_on_after``, a
cancelled task group) closes like any other: trio raises Cancelled at every await of a cancelled
scope, and the pool's close used to stop there, before it said it was closed, so the host's
close waited for it forever."""

from __future__ import annotations

import anyio
import pytest
from support.processes import deno_children, process_gone, wait_for

from host import PoolConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_a_host_cancelled_from_outside_closes_and_stops_its_workers(calc, make_host):
    pids: list[int] = []
    with anyio.move_on_after(1.5) as scope:
        async with make_host(pool=PoolConfig(min_workers=2, max_workers=2)) as h:
            pids += [await h.call("calc", "pid") for _ in range(2)]
            runtime = h._runtime
            await anyio.sleep_forever()
    assert scope.cancelled_caught and pids
    await wait_for(lambda: all(process_gone(pid) for pid in pids))
    assert not deno_children() and not runtime.run_dir.exists()  # closed all the way
