"""Probes of the short call path (issue 20): what a plugin can make the answer-reading callback
do. A call must never hang and the loop must keep serving, on both backends."""

from __future__ import annotations

import anyio
import pytest
from support.plugins import vault_plugin

from host import HostError, PoolConfig
from host.config import PluginSettings

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)
PIN = "4242424242"  # a numeric secret (an account PIN): its JSON form is a bare number


async def test_an_error_whose_details_hold_a_numeric_secret_fails_the_call_instead_of_hanging(
        plugin_dir, make_host):
    # The worker's error details are JSON-encoded, redacted and decoded again: masking a number
    # leaves invalid JSON. The call's answer must still arrive (an error with the secret masked).
    plugin_dir.add("vault.js", vault_plugin("""
export function fail(ctx) { throw new PluginError("AUTH_ERROR", "no", { pin: Number(ctx.config.apiKey) }); }
export function ok() { return 1; }
"""))
    async with make_host(pool=ONE, plugins={"vault": PluginSettings(config={"apiKey": PIN})}) as h:
        with anyio.fail_after(10):  # a hang shows up as TimeoutError here
            with pytest.raises(HostError) as e:
                await h.call("vault", "fail", timeout=5)
        assert PIN not in str(e.value.to_dict())
        assert await h.call("vault", "ok") == 1


async def test_a_log_listener_that_raises_does_not_take_the_worker_down(plugin_dir, make_host):
    # Log listeners run where the worker's frames are read (on asyncio, the loop's readable
    # callback): an embedder's bug there must not end the worker or the call that logged.
    plugin_dir.add("talk.js", 'export function talk() { console.log("hello"); return 7; }')
    async with make_host(pool=ONE) as h:
        pid = h.plugin("talk").workers[0].pid

        def broken(plugin, worker, msg):
            raise RuntimeError("listener bug")

        h.add_log_listener(broken)
        with anyio.fail_after(10):
            assert await h.call("talk", "talk") == 7
        assert [w.pid for w in h.plugin("talk").workers] == [pid]
