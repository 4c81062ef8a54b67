"""The hurried embedding app: a PluginHost used before its start or after its close, from another
thread, built from what is not a HostConfig; and what it expects of the errors it gets (they
pickle, they say what the caller asked for). Real hosts over real workers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support.plugins import PluginDir, fresh_state
from support.processes import deno_children

from host import HostClosed, HostConfig, PluginHost, PoolConfig

pytestmark = pytest.mark.timeout(90)

ONE = PoolConfig(min_workers=1, max_workers=1)


def config(plugin_dir: PluginDir, tmp_path: Path, shared_state: Path) -> HostConfig:
    return HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)), pool=ONE)


# What an app does to manage its plugins, each a coroutine method of the facade.
MANAGE: dict[str, Callable[[PluginHost], Awaitable[Any]]] = {
    "disable": lambda h: h.disable("calc"),
    "enable": lambda h: h.enable("calc"),
    "unload": lambda h: h.unload("calc"),
    "restart": lambda h: h.restart("calc"),
    "set_config": lambda h: h.set_config("calc", {}),
    "reset_config": lambda h: h.reset_config("calc"),
    "allow_private_network": lambda h: h.allow_private_network("calc"),
    "rescan": lambda h: h.rescan(),
    "clear_cache": lambda h: h.clear_cache(),
    "check_health": lambda h: h.check_health(),
    "settled": lambda h: h.settled(1),
}


@pytest.mark.anyio
async def test_managing_plugins_on_a_host_not_serving_is_host_closed_and_changes_nothing(
        calc, tmp_path, shared_state, caplog):
    """Before: after the close, ``disable`` stored its switch (the next host started the plugin
    disabled), ``enable``, ``restart`` and ``set_config`` tried to start a pool in a task group
    that was gone (an AssertionError logged as "start failed", the plugin left in `error`), and
    ``settled``, ``rescan``, ``clear_cache``, ``check_health`` answered as if all were well;
    before the start, some were a PluginNotFound and others answered. All are a HostClosed now,
    and so after ``aclose()`` inside the ``async with``."""
    cfg = config(calc, tmp_path, shared_state)
    fresh = PluginHost(cfg)
    for use in MANAGE.values():
        with pytest.raises(HostClosed, match="not started"):
            await use(fresh)
    async with fresh:
        assert await fresh.call("calc", "add", 1, 2, timeout=10) == 3
    caplog.set_level(logging.WARNING)
    for use in MANAGE.values():
        with pytest.raises(HostClosed, match="closed"):
            await use(fresh)
    assert not deno_children()
    assert not [r for r in caplog.records if "failed" in r.getMessage()], caplog.text
    async with PluginHost(HostConfig(plugins_dir=cfg.plugins_dir, state_dir=cfg.state_dir, pool=ONE)) as again:
        assert again.plugin("calc").state == "running"  # no switch was stored by the closed host
        await again.aclose()  # the close begins here: the rest of the body is refused too
        for use in MANAGE.values():
            with pytest.raises(HostClosed, match="closing"):
                await use(again)
        assert not deno_children()
    assert not deno_children()
