"""The hurried embedding app: a PluginHost used before its start or after its close, from another
thread, built from what is not a HostConfig; and what it expects of the errors it gets (they
pickle, they say what the caller asked for). Real hosts over real workers."""

from __future__ import annotations

import contextlib
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


@pytest.mark.anyio
async def test_a_refusal_said_at_once_lets_the_event_loop_turn(calc, tmp_path, shared_state):
    """helper-91: a disabled plugin, an unknown one, a bad argument or timeout raised before any
    await: a caller retrying in a loop (`while True: try: await h.call(...) except
    PluginUnavailable: ...`) starved every other task, its own fail_after included, for good."""
    import anyio

    from host import HostError

    async with PluginHost(config(calc, tmp_path, shared_state)) as h:
        await h.disable("calc")
        calls = {"disabled": lambda: h.call("calc", "add", 1, 2), "unknown": lambda: h.call("nope", "add"),
                 "argument": lambda: h.call("calc", 5), "timeout": lambda: h.call("calc", "add", timeout=-1)}
        ran: list[int] = []

        async def other() -> None:
            ran.append(1)

        for name, call in calls.items():
            ran.clear()
            tries = 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(other)
                while not ran and tries < 1000:
                    tries += 1
                    with pytest.raises(HostError):
                        await call()
            assert tries <= 3, (name, tries)  # 1000 before: the other task never ran
        with anyio.move_on_after(0.2) as scope:  # the caller's own timeout fires
            while True:
                with contextlib.suppress(HostError):
                    await h.call("calc", "add", 1, 2)
        assert scope.cancelled_caught


def test_config_objects_built_wrong_in_python_are_invalid_config(calc, tmp_path):
    """helper-91: sections built in Python with a wrong type, a NUL in a path, or PluginHost given
    a path or a dict raised TypeError, AttributeError or ValueError (embedded null byte), some only
    at the start; PluginHost("") took the defaults. Each is an InvalidConfig naming what to fix."""
    from host import ExecuteConfig, InvalidConfig
    from host.config import PackagesConfig, WorkerLimits

    cases = {
        "limits.heartbeat_interval": lambda: HostConfig(limits=WorkerLimits(heartbeat_interval=None)),
        "limits.heartbeat_timeout": lambda: HostConfig(limits=WorkerLimits(heartbeat_timeout="x")),
        "execute.tools": lambda: HostConfig(execute=ExecuteConfig(tools=None)),
        "packages.trusted_keys": lambda: HostConfig(packages=PackagesConfig(trusted_keys=None)),
        "packages.trusted_keys[0]": lambda: PackagesConfig(trusted_keys=[b"x"]),
        "state_dir: holds a NUL": lambda: HostConfig(state_dir="a\x00b"),
        "plugins_dir: holds a NUL": lambda: HostConfig(plugins_dir=tmp_path / "p\x00"),
        "dev_plugins[0]: holds a NUL": lambda: HostConfig(dev_plugins=["x:/\x00"]),
        "execute.database: holds a NUL": lambda: HostConfig(execute=ExecuteConfig(database="\x00")),
        "PluginHost takes a HostConfig": lambda: PluginHost(str(calc.root)),  # type: ignore[arg-type]
        "PluginHost takes a HostConfig ": lambda: PluginHost(""),  # type: ignore[arg-type]
        "PluginHost takes a HostConfig  ": lambda: PluginHost({"plugins_dir": "x"}),  # type: ignore[arg-type]
    }
    for said, make in cases.items():
        with pytest.raises(InvalidConfig) as exc:
            make()
        assert exc.value.message.startswith(said.strip()), (said, exc.value.message)


def test_a_log_listener_raising_a_cancellation_does_not_break_the_workers_reader(calc, tmp_path, shared_state):
    """helper-91: a listener raising CancelledError (a BaseException) escaped the frame reader's
    callback: the worker's socket stopped being read, its calls timed out until it was replaced."""
    import asyncio

    import anyio

    async def main() -> list[Any]:
        async with PluginHost(config(calc, tmp_path, shared_state)) as h:
            seen: list[str] = []

            def listener(_pid: str, _worker: Any, msg: Any) -> None:
                seen.append(msg.message)
                raise asyncio.CancelledError

            h.add_log_listener(listener)
            out = [await h.call("noisy", "noisy", timeout=5) for _ in range(3)]
            return [out, len(seen)]

    calc.add("noisy.js", 'export const metadata = { id: "noisy", name: "N", version: "1.0.0", apiVersion: "1.0" };\n'
             'export function noisy() { console.log("hi"); return 7; }\n')
    out, said = anyio.run(main)
    assert out == [7, 7, 7] and said >= 3


@pytest.mark.anyio
async def test_events_read_on_another_threads_loop_is_wrong_thread(calc, tmp_path, shared_state):
    """helper-91: a stream of events() entered on another thread's event loop was sent to from
    the host's: trio refused (a RuntimeError out of restart), asyncio never woke the reader."""
    import anyio

    from host import WrongThread

    async with PluginHost(config(calc, tmp_path, shared_state)) as h:
        async def reader() -> None:
            async with h.events() as stream:
                async for _ in stream:
                    break

        def elsewhere() -> BaseException | None:
            try:
                anyio.run(reader)
            except BaseException as exc:
                return exc
            return None

        got = await anyio.to_thread.run_sync(elsewhere)
        await h.restart("calc")
        assert isinstance(got, WrongThread), got


def test_a_plugin_host_in_a_forked_child_never_touches_the_parents_workers(calc, tmp_path, shared_state):
    """A child forked while a PluginHost serves (os.fork() inside its event loop) went on with
    a copy of the host: a call went out on the parent's worker socket, and leaving `async with`
    stopped the parent's workers (their pids are the parent's children). In the child every
    method is HostClosed, said before any I/O, and the exit touches nothing."""
    import os

    import anyio

    async def main() -> tuple[int, int]:
        async with PluginHost(config(calc, tmp_path, shared_state)) as h:
            worker = h.plugin("calc").workers[0].pid
            pid = os.fork()
            if pid == 0:  # the child: drive the coroutines by hand, never its copy of the loop
                code = 3
                try:
                    h.call("calc", "add", 1, 2).send(None)
                except HostClosed as exc:
                    code = 0 if "forked child" in exc.message else 4
                except BaseException:
                    code = 5
                try:
                    h.__aexit__(None, None, None).send(None)
                except StopIteration:
                    pass
                except BaseException:
                    code = 6
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            answer = await h.call("calc", "add", 2, 2)
            assert h.plugin("calc").workers[0].pid == worker
            return os.waitstatus_to_exitcode(status), answer

    assert anyio.run(main) == (0, 4)


def test_a_host_made_before_a_fork_starts_in_the_child(calc, tmp_path, shared_state):
    """The fork guard is for hosts that serve: one made at import and started in each worker
    process (gunicorn --preload, multiprocessing's fork) was refused in the child (helper-94)."""
    import os

    import anyio

    host = PluginHost(config(calc, tmp_path, shared_state))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            async def child() -> int:
                async with host:
                    return await host.call("calc", "add", 1, 2)

            code = 0 if anyio.run(child) == 3 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
