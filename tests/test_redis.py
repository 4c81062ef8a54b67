"""Rate limits and the result cache on a real redis-server shared by several hosts: two host
processes share one quota; hosts share cached results; a redis that is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import anyio
import pytest
import redis
from support.plugins import CALC
from support.processes import free_port
from support.servers import running_redis

from host import (
    CacheConfig,
    PluginSettings,
    PolicyConfig,
    PolicyStorageError,
    PoolConfig,
    RateLimitConfig,
)

pytestmark = pytest.mark.anyio

ONE = PoolConfig(min_workers=1, max_workers=1)

COUNTER = """
async function bump(ctx) {
  const n = ((await ctx.storage.get("n")) ?? 0) + 1;
  await ctx.storage.set("n", n);
  return n;
}
export async function queryBalance(x, ctx) { return { x, n: await bump(ctx) }; }
export async function calls(ctx) { return (await ctx.storage.get("n")) ?? 0; }
export function add(a, b) { return a + b; }
"""

HOST_PROCESS = """
import json, sys
import anyio
from host import HostConfig, PluginHost, PluginSettings, PolicyConfig, PoolConfig, RateLimitConfig, RateLimited

async def main(plugins, state, url, calls):
    cfg = HostConfig(
        plugins_dir=plugins, state_dir=state, reload={"enabled": False}, health={"interval": 0},
        pool=PoolConfig(min_workers=1, max_workers=1), policy=PolicyConfig(storage=url),
        plugins={"counter": PluginSettings(rate_limit=RateLimitConfig(limit="10/minute", strategy="reject"))})
    async with PluginHost(cfg) as h:
        print("ready", flush=True)
        sys.stdin.readline()  # every host starts calling at once
        ok = limited = 0
        for _ in range(calls):
            try:
                assert await h.call("counter", "add", 1, 2) == 3
                ok += 1
            except RateLimited as exc:
                assert exc.retry_after > 0
                limited += 1
        print(json.dumps({"ok": ok, "limited": limited}), flush=True)

anyio.run(main, *sys.argv[1:4], int(sys.argv[4]))
"""


@pytest.fixture
def counter(plugin_dir):
    plugin_dir.add("counter.js", COUNTER)
    return plugin_dir


def test_two_host_processes_share_one_quota(counter, redis_url, tmp_path):
    script = tmp_path / "host_process.py"
    script.write_text(textwrap.dedent(HOST_PROCESS))
    procs = [
        subprocess.Popen([sys.executable, str(script), str(counter.root), str(tmp_path / f"state{i}"),
                          redis_url, "8"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
        for i in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outcomes = [json.loads(p.stdout.readline()) for p in procs]
        for p in procs:
            p.stdin.close()
            assert p.wait(30) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sum(o["ok"] for o in outcomes) == 10  # 16 calls, one quota of 10 between them
    assert sum(o["limited"] for o in outcomes) == 6
    client = redis.Redis.from_url(redis_url)
    assert any(b"counter" in k for k in client.keys("LIMITS*"))  # the counters live in redis
    client.close()


async def test_the_wait_strategy_waits_for_a_slot_another_host_used(counter, make_host, redis_url, tmp_path):
    plugins = {"counter": PluginSettings(rate_limit=RateLimitConfig(limit="2/second", max_wait=3))}
    policy = PolicyConfig(storage=redis_url)
    async with make_host(pool=ONE, state_dir=str(tmp_path / "a"), policy=policy, plugins=plugins) as a, \
            make_host(pool=ONE, state_dir=str(tmp_path / "b"), policy=policy, plugins=plugins) as b:
        await a.call("counter", "add", 1, 1)
        await a.call("counter", "add", 1, 1)
        t0 = time.monotonic()
        assert await b.call("counter", "add", 2, 2) == 4  # waited for a's window to move on
        assert time.monotonic() - t0 > 0.3
        assert b.plugin("counter").rate_delayed == 1


async def test_hosts_share_cached_results(counter, make_host, redis_url, tmp_path):
    policy = PolicyConfig(cache_storage=redis_url)
    plugins = {"counter": PluginSettings(cache=CacheConfig(enabled=True))}
    async with make_host(pool=ONE, state_dir=str(tmp_path / "a"), policy=policy, plugins=plugins) as a, \
            make_host(pool=ONE, state_dir=str(tmp_path / "b"), policy=policy, plugins=plugins) as b:
        first = await a.call("counter", "queryBalance", "x")
        assert await b.call("counter", "queryBalance", "x") == first
        assert await b.call("counter", "calls") == 0  # b's plugin never ran
        assert b.plugin("counter").cache_hits == 1
        assert (await b.call("counter", "queryBalance", "x", refresh=True))["n"] == 1  # b's own count
        assert await b.clear_cache("counter") == 1
        assert (await a.call("counter", "queryBalance", "x"))["n"] == 2


async def test_redis_cache_keeps_max_entries_and_expires_them(counter, make_host, redis_url, tmp_path):
    policy = PolicyConfig(cache_storage=redis_url)
    plugins = {"counter": PluginSettings(cache=CacheConfig(enabled=True, max_entries=2, ttl=30))}
    async with make_host(pool=ONE, state_dir=str(tmp_path), policy=policy, plugins=plugins) as h:
        for x in ("a", "b", "a", "c"):
            await h.call("counter", "queryBalance", x)
        client = redis.Redis.from_url(redis_url)
        entries = [k for k in client.keys("plugin-host:cache:counter:*")]
        assert len(entries) == 2
        assert 0 < client.pttl(entries[0]) <= 30_000
        client.close()
        assert (await h.call("counter", "queryBalance", "a"))["n"] == 1  # kept: recently used
        assert (await h.call("counter", "queryBalance", "b"))["n"] == 4  # evicted


async def test_rate_limits_fail_closed_when_redis_is_down(counter, make_host, tmp_path, caplog):
    """Each call is refused, and the operator is told: once, then once every 10 s with a count
    (helper-89: the journal said nothing while every call answered 503), and the plugin's error
    rate is not charged with the host's storage failing (it read 0.92)."""
    import logging

    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    plugins = {"counter": PluginSettings(rate_limit=RateLimitConfig(limit="5/second"))}
    caplog.set_level(logging.WARNING)
    async with make_host(pool=ONE, state_dir=str(tmp_path), policy=PolicyConfig(storage=url),
                         plugins=plugins) as h:
        with anyio.fail_after(5):
            for _ in range(3):
                with pytest.raises(PolicyStorageError) as err:
                    await h.call("counter", "add", 1, 2)
        assert "s3cret-pw" not in str(err.value) and "127.0.0.1" in str(err.value)
        assert h.plugin("counter").calls == 0  # no quota checked, no call made
        said = [r.getMessage() for r in caplog.records if "rate-limit storage" in r.getMessage()]
        assert len(said) == 1 and "redis://***@127.0.0.1" in said[0] and "are refused" in said[0], said
        assert "s3cret-pw" not in caplog.text
        assert h.plugin("counter").error_rate in (None, 0.0)


async def test_a_redis_refusing_the_password_is_said_so_on_every_call(counter, make_host, tmp_path):
    """helper-100: a Redis with requirepass and a URL with no password: the first call said
    AuthenticationError, every later one "did not answer a moment ago" (it had answered: no),
    and nothing said where the password goes."""
    from support.servers import running_redis

    (tmp_path / "redis").mkdir()
    with running_redis(tmp_path / "redis", "--requirepass", "pw-1") as (_, url):
        bare = url.replace(":pw-1@", "")
        plugins = {"counter": PluginSettings(rate_limit=RateLimitConfig(limit="5/second"))}
        async with make_host(pool=ONE, state_dir=str(tmp_path / "state"), policy=PolicyConfig(storage=bare),
                             plugins=plugins) as h:
            for _ in range(3):
                with pytest.raises(PolicyStorageError) as err:
                    await h.call("counter", "add", 1, 2)
                assert "did not answer" not in err.value.message, err.value.message
                assert "AuthenticationError" in err.value.message and "redis://:PASSWORD@" in err.value.message
        async with make_host(pool=ONE, state_dir=str(tmp_path / "state2"), policy=PolicyConfig(storage=url),
                             plugins=plugins) as h:
            assert await h.call("counter", "add", 1, 2) == 3


async def test_the_cache_falls_back_to_calling_when_redis_is_down(counter, make_host, tmp_path, caplog):
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    plugins = {"counter": PluginSettings(cache=CacheConfig(enabled=True))}
    async with make_host(pool=ONE, state_dir=str(tmp_path), policy=PolicyConfig(cache_storage=url),
                         plugins=plugins) as h:
        assert (await h.call("counter", "queryBalance", "x"))["n"] == 1
        assert (await h.call("counter", "queryBalance", "x"))["n"] == 2
    assert "result cache at redis://***@127.0.0.1" in caplog.text
    assert "s3cret-pw" not in caplog.text


async def test_a_hung_redis_never_holds_a_call_past_its_deadline(plugin_dir, make_host, tmp_path, caplog):
    import logging
    import signal

    plugin_dir.add("calc.js", CALC)
    with running_redis(tmp_path) as (redis_proc, url):
        cached = {"calc": {"cache": {"enabled": True, "functions": ["add"]}}}
        async with make_host(policy={"cache_storage": url}, plugins=cached) as h:
            assert await h.call("calc", "add", 1, 2) == 3
            redis_proc.send_signal(signal.SIGSTOP)
            with caplog.at_level(logging.WARNING, logger="host.cache"):
                t0 = time.monotonic()
                for i in range(5):  # the cache is bypassed: the plugin answers, within the deadline
                    assert await h.call("calc", "add", i, 1, timeout=1.0) == i + 1
                assert time.monotonic() - t0 < 5 * 1.0 + 1
            said = [r for r in caplog.records if "result cache" in r.getMessage()]
            assert len(said) == 1  # said once, not once per call
        limited = {"calc": {"rate_limit": {"limit": "100/second"}}}
        async with make_host(policy={"storage": url}, plugins=limited) as h:
            t0 = time.monotonic()
            with pytest.raises(PolicyStorageError, match="did not answer before the call's deadline"):
                await h.call("calc", "add", 1, 2, timeout=0.5)
            assert time.monotonic() - t0 < 1.0
