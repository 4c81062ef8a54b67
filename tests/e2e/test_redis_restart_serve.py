"""Redis restarted under two running ``serve`` processes sharing it for rate limits, the result
cache and channel delivery: each comes back by itself, without restarting serve. A redis-server of
the test's own (restarting the session's would disturb the other tests), real ``serve``
subprocesses."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.processes import free_port
from support.servers import two_serve_processes

pytestmark = pytest.mark.timeout(180)

CHAT = """
export const metadata = { id: "chat", name: "Chat", version: "1.0.0", apiVersion: "1.0" };
const got = [];
let n = 0;
export async function listen(ctx) { await ctx.channel.on("msg", (d) => { got.push(d); }); return true; }
export function heard() { return got; }
export async function say(x, ctx) { return await ctx.channel.emit("msg", x); }
"""
COUNTER = """
export const metadata = { id: "counter", name: "Counter", version: "1.0.0", apiVersion: "1.0" };
let n = 0;
export function count() { return ++n; }
export function add(a, b) { return a + b; }
"""
QUOTA = 4


class Redis:
    """A redis-server on a fixed loopback port that can be restarted (its data is lost, as
    without persistence)."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import time

        import redis

        binary = shutil.which("redis-server") or "/usr/sbin/redis-server"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client, deadline = redis.Redis.from_url(self.url), time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    assert self.proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


@contextmanager
def own_redis(workdir: Path) -> Iterator[Redis]:
    server = Redis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_rate_limits_cache_and_channels_between_hosts_come_back_after_a_redis_restart(tmp_path, shared_state,
                                                                                     plugin_dir):
    plugin_dir.add("chat.js", CHAT)
    plugin_dir.add("counter.js", COUNTER)
    os.makedirs(tmp_path / "redis")
    with own_redis(tmp_path / "redis") as redis_server:
        url = redis_server.url
        (tmp_path / "host.toml").write_text(
            f'[policy]\nstorage = "{url}"\ncache_storage = "{url}"\n[state]\nchannel_storage = "{url}"\n'
            f'[plugins.counter.rate_limit]\nlimit = "{QUOTA}/hour"\nstrategy = "reject"\n'
            f'[plugins.counter.cache]\nenabled = true\nttl = 3600\nfunctions = ["count"]\n')
        with two_serve_processes(tmp_path, shared_state, plugin_dir.root, running="chat") as (one, two):
            for srv in (one, two):
                srv.wait_logged("channel delivery between hosts: subscribed")

            def through(srv, fn, *args, plugin="chat"):
                return srv.request("POST", f"/api/plugins/{plugin}/call/{fn}", {"args": list(args)})

            def exchange(word: str) -> None:
                """``two`` listens, ``one`` says ``word`` until ``two`` heard it."""
                assert through(two, "listen")[0] == 200

                def arrived():
                    through(one, "say", word)
                    _, out = through(two, "heard")
                    return True if word in (out.get("result") or []) else None
                two.poll(arrived, f"{word!r} on the other host", timeout=30)

            def shared_quota_and_cache() -> None:
                """One cache: ``count`` runs once for both hosts; one quota: spent through both
                hosts, then refused by either (a call refused while Redis is back but not asked
                again yet, host/outage.py, is waited out)."""
                first = through(one, "count", plugin="counter")
                assert first[0] == 200, first
                assert through(two, "count", plugin="counter") == first
                statuses = [through((one, two)[n % 2], "add", n, 1, plugin="counter")[0] for n in range(QUOTA)]
                assert statuses.count(200) == QUOTA - 1, statuses
                for srv in (one, two):
                    status, out = through(srv, "add", 1, 1, plugin="counter")
                    assert (status, out["error"]["type"]) == (429, "RateLimited"), out

            exchange("before")
            shared_quota_and_cache()
            redis_server.stop()
            status, out = through(one, "add", 1, 1, plugin="counter")
            assert (status, out["error"]["type"]) == (503, "PolicyStorageError"), out  # refused, typed, at once
            redis_server.start()  # empty: the counts and the cached results went with it
            exchange("after")  # the other host subscribed again by itself
            for srv in (one, two):  # refused at once for a while after the failure (host/outage.py)
                srv.poll(lambda srv=srv: True if through(srv, "count", plugin="counter")[0] == 200 else None,
                         "the rate limits answering again", timeout=30)
            redis_server.stop()
            redis_server.start()  # empty once more, now that both hosts ask it again
            shared_quota_and_cache()
            logs = one.log() + two.log()
            assert "Traceback" not in logs
