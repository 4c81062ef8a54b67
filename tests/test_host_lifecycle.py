"""A careless app's lifecycle: one PluginHost entered twice (nested, from two tasks, after its
close), and the methods that ask every plugin called on a host that is not running
(host/run_once.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import anyio
import pytest
from support.plugins import PluginDir, fresh_state
from support.processes import deno_children

from host import (
    HostClosed,
    HostConfig,
    HostError,
    InvalidArguments,
    InvalidConfig,
    PluginHost,
    PoolConfig,
    StateError,
    SyncPluginHost,
)

pytestmark = pytest.mark.timeout(60)

ONE = PoolConfig(min_workers=1, max_workers=1)


def config(plugin_dir: PluginDir, tmp_path: Path, shared_state: Path) -> HostConfig:
    return HostConfig(plugins_dir=str(plugin_dir.root), state_dir=str(fresh_state(tmp_path, shared_state)), pool=ONE)


@pytest.mark.anyio
async def test_entering_a_running_host_again_is_host_closed_and_it_serves_on(calc, tmp_path, shared_state):
    h = PluginHost(config(calc, tmp_path, shared_state))
    async with h:
        pid = await h.call("calc", "pid", timeout=10)
        with pytest.raises(HostClosed, match="running already"):
            async with h:
                pass
        assert h.running and await h.call("calc", "pid", timeout=10) == pid
    assert not deno_children()


@pytest.mark.anyio
async def test_two_tasks_entering_one_host_at_once_one_is_refused(calc, tmp_path, shared_state):
    h = PluginHost(config(calc, tmp_path, shared_state))
    outcomes: list[object] = []

    async def use() -> None:
        try:
            async with h:
                outcomes.append(await h.call("calc", "add", 1, 2, timeout=10))
                await anyio.sleep(0.3)
        except HostClosed as exc:
            outcomes.append(type(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(use)
        tg.start_soon(use)
    assert sorted(map(str, outcomes)) == sorted(["3", str(HostClosed)])


@pytest.mark.anyio
async def test_a_closed_host_entered_again_says_it_runs_once(calc, tmp_path, shared_state):
    h = PluginHost(config(calc, tmp_path, shared_state))
    async with h:
        assert await h.call("calc", "add", 1, 2, timeout=10) == 3
    with pytest.raises(HostClosed, match="runs once"):
        async with h:
            pass
    assert not deno_children()


@pytest.mark.anyio
async def test_emit_and_balances_on_a_host_not_running_are_host_closed_not_empty(calc, tmp_path, shared_state):
    """They answered [] before the start and, after the close, one HostClosed reply per plugin:
    an app could not tell "nobody handles it" from "you forgot ``async with``"."""
    h = PluginHost(config(calc, tmp_path, shared_state))
    for _ in range(2):
        with pytest.raises(HostClosed):
            await h.emit("message.incoming", {"content": "hi"})
        with pytest.raises(HostClosed):
            await h.query_balances()
        async with h:
            assert await h.emit("message.incoming", {"content": "hi"}) == []
        h = PluginHost(config(calc, tmp_path / "again", shared_state))


def test_a_sync_host_entered_twice_is_refused_and_still_closes_cleanly(calc, tmp_path, shared_state):
    threads = threading.active_count()
    s = SyncPluginHost(config(calc, tmp_path, shared_state))
    with s:
        with pytest.raises(HostClosed, match="running already"):
            s.__enter__()
        assert s.call("calc", "add", 1, 2, timeout=10) == 3
    assert not deno_children()
    with pytest.raises(HostClosed):
        s.__enter__()
    with pytest.raises(HostClosed):
        s.call("calc", "add", 1, 2)
    assert threading.active_count() <= threads  # no event loop thread left behind


@pytest.mark.anyio
async def test_a_plugins_dir_that_is_a_file_fails_the_start_and_a_missing_one_is_said(tmp_path, shared_state, caplog):
    # Before: an embedding app got a host with no plugins and no word why (serve alone checked).
    state = str(fresh_state(tmp_path / "s", shared_state))
    (tmp_path / "plugins.txt").write_text("")
    with pytest.raises(InvalidConfig) as e:
        async with PluginHost(HostConfig(plugins_dir=str(tmp_path / "plugins.txt"), state_dir=state)):
            pass
    assert "plugins.txt is not a directory" in e.value.message and "plugins_dir" in e.value.message
    async with PluginHost(HostConfig(plugins_dir=str(tmp_path / "later"), state_dir=state)) as h:
        assert h.plugins() == []
    assert any("later does not exist" in r.getMessage() for r in caplog.records)
    assert not deno_children()


@pytest.mark.anyio
async def test_a_listener_that_is_not_callable_is_refused_and_removing_twice_is_harmless(calc, tmp_path, shared_state):
    # Before: subscribe(5) was taken, and failed with a logged traceback at every event to come;
    # calling the remover a second time raised ValueError.
    async with PluginHost(config(calc, tmp_path, shared_state)) as h:
        for add in (h.subscribe, h.add_log_listener):
            with pytest.raises(InvalidArguments):
                add(5)
        seen: list = []
        remove = h.subscribe(seen.append)
        remove()
        remove()
        unlisten = h.add_log_listener(lambda *a: None)
        unlisten()
        unlisten()
        await h.restart("calc")
        assert seen == []


@pytest.mark.anyio
async def test_a_host_whose_start_failed_at_its_state_directory_says_it_has_closed(calc, tmp_path):
    # Before: the state directory check ran before the start's cleanup was armed, so the host
    # stayed "running" and entering it again said so ("running already") of a host never started.
    (tmp_path / "file").write_text("")
    h = PluginHost(HostConfig(plugins_dir=str(calc.root), state_dir=str(tmp_path / "file" / "state"), pool=ONE))
    with pytest.raises(StateError):
        async with h:
            pass
    with pytest.raises(HostClosed, match="has closed"):
        async with h:
            pass
    assert not deno_children()


@pytest.mark.anyio
async def test_a_host_used_from_another_threads_event_loop_refuses_and_serves_on(calc, tmp_path, shared_state):
    """``asyncio.run(h.execute(...))`` in a thread of its own (a web framework's worker, a
    thread pool) ran the host's code on a second loop: its pools were started from there and the
    host's own task group was cancelled ("Cancelled via cancel scope") under the caller that owned
    it. Every coroutine method of the facade now refuses a caller on another thread's loop with a
    HostError naming what to use instead; the host goes on serving its own loop."""
    import asyncio

    h = PluginHost(config(calc, tmp_path, shared_state))
    async with h:
        assert await h.call("calc", "add", 1, 2, timeout=10) == 3
        seen: dict[str, BaseException | object] = {}

        def elsewhere() -> None:
            for name, make in (("execute", lambda: h.execute("export default (x) => x * 2", input=21)),
                               ("call", lambda: h.call("calc", "add", 2, 3)), ("balances", h.query_balances)):
                try:
                    seen[name] = asyncio.run(asyncio.wait_for(make(), 10))
                except BaseException as exc:  # what the caller gets is the test
                    seen[name] = exc

        await anyio.to_thread.run_sync(elsewhere)
        assert all(isinstance(e, HostError) and "SyncPluginHost" in str(e) for e in seen.values()), seen
        assert await h.call("calc", "add", 1, 2, timeout=10) == 3
        assert (await h.execute("export default (x) => x * 2", input=21)).result == 42
    assert not deno_children()
