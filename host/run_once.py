"""A PluginHost runs once: its parts (registry, pools, task group) are built for one ``async
with``. Entering it again while it runs (nested, or from two tasks at once) used to replace its
task group under the running one (anyio's RuntimeError, and a close of the running host), and
entering it after its close failed deep inside ("plugin is closing"): both are a HostClosed now,
said before anything is touched.

It also runs on one event loop: the one of the thread that entered it. A coroutine method called
on another thread's loop (``asyncio.run(h.execute(...))`` in a worker thread) ran the host's code
there: pools started from that loop, a worker killed, the host's task group cancelled under its
owner. The facade's boundary (api_args.checked_api) asks ``caller_check`` first: a WrongThread.

And it serves only while it runs: a coroutine method awaited before its start or once its close
began (``aclose``, the end of ``async with``) is a HostClosed. Most said so from deep inside, but
the plugins' management went on: ``disable`` stored its switch for the next start, ``enable`` and
``set_config`` tried to start a pool (an AssertionError, logged, and the plugin left in `error`).
The check costs the call path nothing: ``thread`` is 0 whenever the host does not serve, so the
boundary's one comparison (the caller's thread with ``thread``) sends every such call here."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref

import anyio

from .errors import HostClosed, WrongThread

_LIVE: weakref.WeakSet[RunOnce] = weakref.WeakSet()


def _forked() -> None:
    """In a child of ``os.fork()``: no host of the parent serves there. Its event loop, its
    workers and their sockets are the parent's; a call from the child went out on the parent's
    worker socket (answered, or read by the parent), or waited forever on a loop thread the child
    does not have."""
    for once in list(_LIVE):
        if once.state == "running":  # one made and not entered yet may start in the child (gunicorn --preload)
            once.state, once.thread = "forked", 0


os.register_at_fork(after_in_child=_forked)


_FORKED = ("this PluginHost belongs to the process that entered it, and this is a forked child (its event "
           "loop, workers and sockets are the parent's): make a PluginHost in the child, or use the 'spawn' "
           "start method")


def ungrouped(exc: BaseException) -> BaseException:
    """``exc``, or what an exception group (trio's nurseries make one of a Ctrl-C) holds that a
    caller of the facade catches: its KeyboardInterrupt or SystemExit, else its one exception."""
    try:
        cancelled: type[BaseException] = anyio.get_cancelled_exc_class()
    except Exception:  # no event loop running
        cancelled = asyncio.CancelledError
    while isinstance(exc, BaseExceptionGroup):
        leaves = [e for e in _leaves(exc) if not isinstance(e, cancelled)]
        stop = [e for e in leaves if isinstance(e, (KeyboardInterrupt, SystemExit))]
        if stop:
            return stop[0]
        if len(leaves) != 1:
            return exc
        exc = leaves[0]
    return exc


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


class RunOnce:
    """new -> running -> closed, each step once (or forked: in a child process, never again)."""

    def __init__(self) -> None:
        self.state = "new"
        self.thread = 0  # threading.get_ident() of the thread that entered it, while it serves; else 0
        _LIVE.add(self)

    def enter(self) -> None:
        """The start of ``__aenter__``: HostClosed unless this is the first entry."""
        if self.state == "running":
            raise HostClosed("this PluginHost is running already: enter it once (nested or concurrent "
                             "`async with` of one host is refused); make another PluginHost for a second")
        if self.state in ("closed", "forked"):
            raise HostClosed("this PluginHost has closed: a PluginHost runs once; make a new one" if
                             self.state == "closed" else _FORKED)
        self.state = "running"
        self.thread = threading.get_ident()

    def stop(self) -> str:
        """The close began: no method but ``aclose`` serves from now on. Returns the state."""
        self.thread = 0
        return self.state

    def exit(self) -> str:
        """Closed (a forked child's stays "forked"); returns the state it was in."""
        was = self.state
        self.state, self.thread = "forked" if was == "forked" else "closed", 0
        return was

    def check_caller(self, where: str, any_time: bool = False) -> None:
        """HostClosed if the host does not serve (unless ``any_time``: ``aclose``); WrongThread if
        it does and this is not the thread (so not the loop) it runs on."""
        if self.thread == 0:
            if any_time:
                return
            if self.state == "forked":
                raise HostClosed(f"{where}: {_FORKED}")
            said = {"new": "not started yet", "running": "closing"}.get(self.state, "closed")
            raise HostClosed(f"{where}: the host is not running ({said}); use it inside `async with PluginHost(...)`")
        if threading.get_ident() != self.thread:
            raise WrongThread(f"{where}: this PluginHost runs on the event loop of the thread that entered it, and "
                              "was called from another thread's loop, where its code would run beside its own: "
                              "from another thread use SyncPluginHost, or hand the call to the host's loop "
                              "(anyio.from_thread with a portal, asyncio.run_coroutine_threadsafe)")


def caller_check(obj: object, where: str, any_time: bool = False) -> None:
    """``obj``'s RunOnce (its ``_once``, as PluginHost keeps it) checks the calling thread."""
    once = getattr(obj, "_once", None)
    if isinstance(once, RunOnce):
        once.check_caller(where, any_time)


__all__ = ["RunOnce", "caller_check"]
