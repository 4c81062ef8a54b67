"""How a worker's end is told: one the host retired on purpose is never reported as a crash."""

from __future__ import annotations

import logging

import pytest
from support.plugins import vault_plugin

from host import WorkerLimits

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


async def test_config_set_retires_workers_without_a_false_crash_warning(make_host, plugin_dir, caplog):
    # The worker asked to shut down exits 0 at once; a heartbeat ping written before the host
    # saw that exit finds the socket closed. That used to be told as "crashed (exit code 0)"
    # (about one `config set` in eight with the default heartbeat; nearly every few with 1 ms).
    plugin_dir.add("vault.js", vault_plugin("export function region(c) { return c.region; }"))
    caplog.set_level(logging.DEBUG)
    async with make_host(limits=WorkerLimits(heartbeat_interval=0.001)) as host:
        for region in ["us", "eu"] * 8:
            await host.set_config("vault", {"apiKey": "sk-test-123456", "region": region})
        assert host.plugin("vault").state == "running"
        await host.reset_config("vault")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [w for w in warnings if "exited" in w or "crashed" in w], warnings
    retired = [r.getMessage() for r in caplog.records if "exited (shutdown)" in r.getMessage()]
    assert len(retired) >= 17  # each restart retired the previous worker, told at debug level
