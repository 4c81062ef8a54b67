"""A blocking facade for programs that are not async: the host runs on an event loop in a
background thread, and each method waits for its result."""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal
from msgspec import UNSET

from .balances.alerts import Alert
from .balances.history import BalancePoint
from .balances.result import BalanceResult
from .config import HostConfig
from .errors import HostClosed, InvalidArguments, WrongThread
from .execute import ExecuteResult
from .info import EventReply, PluginInfo
from .logbook import JournalEntry, LogListener
from .plugin_host import PluginHost
from .plugins.lifecycle import PluginEvent


def _close_at_exit(host: SyncPluginHost) -> None:
    """Close ``host`` when the interpreter exits, if it is still open then: before the threads are
    joined (``threading._register_atexit``; an ``atexit`` handler runs only after, too late for a
    loop thread that never ends), through a weak reference (a host dropped is not kept alive)."""
    ref = weakref.ref(host)

    def close() -> None:
        if (alive := ref()) is not None:
            with contextlib.suppress(Exception):
                alive.close()

    register = getattr(threading, "_register_atexit", None)
    with contextlib.suppress(RuntimeError):  # the interpreter is shutting down already
        (register or atexit.register)(close)


def _start_portal(backend: str) -> tuple[BlockingPortal, threading.Thread]:
    """An event loop of ``backend`` in a thread of its own, and the portal into it (as anyio's
    start_blocking_portal, without a generator: a forked child of the process finalised that one
    at its exit, and its stop waited forever on a thread the child does not have)."""
    ready: Future[BlockingPortal] = Future()

    async def serve() -> None:
        async with BlockingPortal() as portal:
            ready.set_result(portal)
            await portal.sleep_until_stopped()

    def run() -> None:
        try:
            anyio.run(serve, backend=backend)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)

    thread = threading.Thread(target=run, daemon=True, name=f"plugin-host-{backend}")
    thread.start()
    try:
        return ready.result(), thread
    except Exception as exc:  # trio not installed
        raise InvalidArguments(f"SyncPluginHost backend {backend!r}: {exc}") from None


def _stop_portal(portal: BlockingPortal, thread: threading.Thread, *, cancel: bool) -> None:
    with contextlib.suppress(RuntimeError):  # stopped already
        portal.call(portal.stop, cancel)
    thread.join()


class SyncPluginHost:
    """``with SyncPluginHost(HostConfig(...)) as h: h.call("calc", "add", 1, 2)``"""

    def __init__(self, config: HostConfig | None = None, *, backend: str = "asyncio") -> None:
        if backend not in ("asyncio", "trio"):
            raise InvalidArguments(f"SyncPluginHost backend: 'asyncio' or 'trio' (got {str(backend)[:64]!r})")
        self.host = PluginHost(config)
        self._backend = backend
        self._thread: threading.Thread | None = None
        self._host_cm: Any = None
        self._portal: Any = None
        self._loop_thread: int | None = None
        self._pid = os.getpid()
        self._closing = threading.Lock()

    def __enter__(self) -> SyncPluginHost:
        if self._thread is not None:  # its event loop thread and the host it runs are one
            raise HostClosed("this SyncPluginHost is running already or has closed: a host runs once; "
                             "make another SyncPluginHost")
        self._pid = os.getpid()
        portal, self._thread = _start_portal(self._backend)
        try:
            # One task enters and exits the host, as its task group requires.
            self._host_cm = portal.wrap_async_context_manager(self.host)
            self._host_cm.__enter__()
        except BaseException:
            # The portal cancels its tasks, the host's start among them. A Ctrl-C while that task
            # waited left it running, and the portal's stop waited on it forever (its workers alive).
            _stop_portal(portal, self._thread, cancel=True)
            raise
        self._portal = portal
        self._loop_thread = portal.call(threading.get_ident)
        _close_at_exit(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the host (calls in flight finish, as at the end of ``with``) and its thread.
        Also done at interpreter exit for a host entered without ``with`` and never closed
        (a notebook's, an app's global): before, its event loop thread kept the program from
        ending."""
        if self._portal is None:  # not entered, or closed already
            return
        if os.getpid() != self._pid:  # a forked child: the event loop thread, the host and its workers are the parent's
            self._portal = None
            return
        if threading.get_ident() == self._loop_thread:  # a subscribe or log listener: it would wait on itself
            raise WrongThread("SyncPluginHost.close() was called on the host's own event loop thread (from a "
                              "listener): close it from another thread")
        with self._closing:
            portal, self._portal = self._portal, None
            if portal is None:  # another thread closed it meanwhile
                return
        try:
            self._host_cm.__exit__(None, None, None)
        finally:
            _stop_portal(portal, self._thread, cancel=False)

    def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the host's event loop (awaited if it is a coroutine function)."""
        if self._portal is None:
            raise HostClosed("the host is not running; use `with SyncPluginHost(...) as h:`")
        if os.getpid() != self._pid:  # its event loop thread does not exist in a forked child: it waited forever
            raise HostClosed("this SyncPluginHost belongs to the process that entered it, and this is a forked "
                             "child: make a SyncPluginHost in the child (or use the 'spawn' start method)")
        if threading.get_ident() == self._loop_thread:
            raise WrongThread("a SyncPluginHost method was called on the host's own event loop thread (from a "
                              "listener or subscriber), where it would wait on itself: call the PluginHost "
                              "(h.host) methods there, or hand the work to another thread")
        return self._portal.call(fn, *args)

    def query_balances(self, **kw: Any) -> list[BalanceResult]:
        return self._run(lambda: self.host.query_balances(**kw))

    def balance_history(self, provider: str | None = None, **kw: Any) -> list[BalancePoint]:
        return self._run(lambda: self.host.balance_history(provider, **kw))

    def balance_alerts(self, provider: str | None = None, **kw: Any) -> list[Alert]:
        return self._run(lambda: self.host.balance_alerts(provider, **kw))

    def clear_cache(self, plugin: str | None = None) -> int:
        return self._run(self.host.clear_cache, plugin)

    def call(self, plugin: str, fn: str, *args: Any, timeout: float | None = None,
             priority: int = 0, refresh: bool = False) -> Any:
        return self._run(lambda: self.host.call(plugin, fn, *args, timeout=timeout, priority=priority,
                                                refresh=refresh))

    def execute(self, code: str, input: Any = UNSET, **kw: Any) -> ExecuteResult:
        return self._run(lambda: self.host.execute(code, input, **kw))

    def plugins(self) -> list[PluginInfo]:
        return self._run(self.host.plugins)

    def emit(self, event: str, payload: Any = None, **kw: Any) -> list[EventReply]:
        return self._run(lambda: self.host.emit(event, payload, **kw))

    def set_config(self, plugin: str, values: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self._run(lambda: self.host.set_config(plugin, values, **kw))

    def get_config(self, plugin: str) -> dict[str, Any]:
        return self._run(self.host.get_config, plugin)

    def export_config(self, plugin: str | None = None, *, passphrase: str | None = None) -> dict[str, Any]:
        return self._run(lambda: self.host.export_config(plugin, passphrase=passphrase))

    def import_config(self, document: dict[str, Any], *, passphrase: str | None = None,
                      replace: bool = False) -> dict[str, dict[str, Any]]:
        return self._run(lambda: self.host.import_config(document, passphrase=passphrase, replace=replace))

    def reload(self, plugin: str) -> bool:
        return self._run(self.host.reload, plugin)

    def enable(self, plugin: str) -> None:
        self._run(self.host.enable, plugin)

    def disable(self, plugin: str) -> None:
        self._run(self.host.disable, plugin)

    def set_policy(self, plugin: str, **kw: Any) -> None:
        self._run(lambda: self.host.set_policy(plugin, **kw))


    def plugin(self, name: str) -> PluginInfo:
        return self._run(self.host.plugin, name)

    def states(self) -> dict[str, str]:
        return self._run(self.host.states)

    def logs(self, name: str, **kw: Any) -> list[JournalEntry]:
        return self._run(lambda: self.host.logs(name, **kw))

    def restart(self, plugin: str) -> bool:
        return self._run(self.host.restart, plugin)

    def unload(self, plugin: str) -> None:
        self._run(self.host.unload, plugin)

    def reset_config(self, plugin: str, **kw: Any) -> dict[str, Any]:
        return self._run(lambda: self.host.reset_config(plugin, **kw))

    def check_health(self) -> dict[str, bool]:
        return self._run(self.host.check_health)

    def settled(self, timeout: float) -> bool:
        return self._run(self.host.settled, timeout)

    def subscribe(self, fn: Callable[[PluginEvent], None]) -> Callable[[], None]:
        """``fn`` is called on the host's event loop thread: keep it quick, and thread-safe."""
        return self._run(self.host.subscribe, fn)

    def add_log_listener(self, fn: LogListener) -> Callable[[], None]:
        """``fn`` is called on the host's event loop thread: keep it quick, and thread-safe."""
        return self._run(self.host.add_log_listener, fn)
