"""execute's pools per permission set: at most ``max_permission_sets`` of them, each closed with
its workers once idle for ``idle_timeout``, the least recently used idle one closed to make
room, and a clear refusal (PluginUnavailable, HTTP 503) when every one is busy (issue 18, item 6)."""

from __future__ import annotations

import anyio
import pytest
from support.processes import deno_children, wait_for
from support.servers import served

from host import ExecuteConfig, Permissions, PluginUnavailable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

QUICK = "export default () => 1"
SLOW = "export default () => new Promise((r) => setTimeout(() => r('slow done'), 1500))"


def net(i: int) -> dict:
    return {"net": [f"h{i}.example.com"]}


def with_permissions(h) -> list:
    """The pools of permission sets other than the empty one."""
    return [p for p in h._exec.pools() if not p.spec.permissions.empty]


async def busy(h, n: int = 1) -> None:
    """Wait until ``n`` executions hold a worker."""
    await wait_for(lambda: sum(w.load for p in h._exec.pools() for w in p.workers) >= n, timeout=10)


async def test_distinct_sets_leave_at_most_the_cap_and_idle_pools_close_with_their_workers(make_host):
    xc = ExecuteConfig(max_permission_sets=2, min_workers=1, max_workers=1, idle_timeout=1.0)
    async with make_host(execute=xc) as h:
        for i in range(5):
            assert (await h.execute(QUICK, permissions=net(i))).ok
            assert len(with_permissions(h)) <= 2
        assert h._exec.pools()  # the last sets' pools are still there, idle for less than a second
        await wait_for(lambda: len(deno_children()) <= 2, timeout=10)  # the closed pools' workers stopped
        await wait_for(lambda: not h._exec.pools() and not deno_children(), timeout=15)
        assert (await h.execute(QUICK, permissions=net(0))).ok  # a closed set's pool opens again


async def test_the_empty_set_stays_warm_and_is_not_counted_against_the_cap(make_host):
    xc = ExecuteConfig(max_permission_sets=1, min_workers=1, max_workers=1, idle_timeout=0.3)
    async with make_host(execute=xc) as h:
        assert (await h.execute(QUICK)).ok
        for i in range(3):
            assert (await h.execute(QUICK, permissions=net(i))).ok
        await wait_for(lambda: not with_permissions(h), timeout=10)
        [warm] = h._exec.pools()
        assert warm.spec.permissions.empty and len(warm.workers) == 1
        await wait_for(lambda: len(deno_children()) == 1, timeout=10)


async def test_at_the_cap_with_every_pool_busy_a_new_set_is_refused_then_served(make_host):
    xc = ExecuteConfig(max_permission_sets=1, min_workers=1, max_workers=1)
    async with make_host(execute=xc) as h, anyio.create_task_group() as tg:
        slow: list = []

        async def run_slow() -> None:
            slow.append(await h.execute(SLOW, permissions=net(1), timeout=10))

        tg.start_soon(run_slow)
        await busy(h)
        with pytest.raises(PluginUnavailable, match=r"max_permission_sets = 1"):
            await h.execute(QUICK, permissions=net(2))
        await wait_for(lambda: bool(slow), timeout=10)
        assert slow[0].ok and slow[0].result == "slow done"
        assert (await h.execute(QUICK, permissions=net(2))).ok  # the idle set's pool made room
        assert [p.spec.permissions.net for p in with_permissions(h)] == [["h2.example.com"]]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp
async def test_over_http_the_cap_holds_busy_is_503_and_idle_pools_go(make_host):
    xc = ExecuteConfig(max_permission_sets=2, min_workers=1, max_workers=1, idle_timeout=1.0)
    async with make_host(execute=xc) as h, served(h, enable_execute=True) as (_, http):
        async def execute(code: str, permissions: dict, timeout: float = 3000) -> tuple[int, dict]:
            async with http.post("/execute", json={"code": code, "permissions": permissions,
                                                   "timeout": timeout}) as r:
                return r.status, await r.json()

        for i in range(5):
            assert await execute(QUICK, net(i)) == (200, {"ok": True, "result": 1, "duration": pytest.approx(0, abs=3000)})
            assert len(with_permissions(h)) <= 2
        async with anyio.create_task_group() as tg:
            answers: list = []

            async def run_slow(i: int) -> None:
                answers.append(await execute(SLOW, net(i), timeout=10_000))

            tg.start_soon(run_slow, 3)
            tg.start_soon(run_slow, 4)
            await busy(h, 2)
            status, out = await execute(QUICK, net(5))
            assert status == 503 and out["error"]["type"] == "PluginUnavailable", out
            assert "max_permission_sets = 2" in out["error"]["message"]
        assert [a[0] for a in answers] == [200, 200] and all(a[1]["result"] == "slow done" for a in answers)
        await wait_for(lambda: not h._exec.pools() and not deno_children(), timeout=15)


async def test_a_set_asking_only_for_private_networks_gets_no_warm_workers_or_spares(make_host):
    """Only the set with no permissions is kept warm (min_workers, spares): one asking for
    ``allowPrivateNetwork`` alone is a set with permissions like any other (before: it was
    taken for the empty one and started 2 spares, or min_workers, of its own)."""
    xc = ExecuteConfig(pooled=False, allow=Permissions(net=True, allow_private_network=True))
    async with make_host(execute=xc) as h:
        assert (await h.execute(QUICK, permissions={"allowPrivateNetwork": True})).ok
        [pool] = h._exec.pools()
        assert pool.spec.permissions.allow_private_network and (pool.config.min_workers, pool.config.spares) == (0, 0)
        await wait_for(lambda: not deno_children(), timeout=5)
