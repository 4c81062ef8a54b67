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

import threading

from .errors import HostClosed, WrongThread


class RunOnce:
    """new -> running -> closed, each step once."""

    def __init__(self) -> None:
        self.state = "new"
        self.thread = 0  # threading.get_ident() of the thread that entered it, while it serves; else 0

    def enter(self) -> None:
        """The start of ``__aenter__``: HostClosed unless this is the first entry."""
        if self.state == "running":
            raise HostClosed("this PluginHost is running already: enter it once (nested or concurrent "
                             "`async with` of one host is refused); make another PluginHost for a second")
        if self.state == "closed":
            raise HostClosed("this PluginHost has closed: a PluginHost runs once; make a new one")
        self.state = "running"
        self.thread = threading.get_ident()

    def stop(self) -> None:
        """The close began: no method but ``aclose`` serves from now on."""
        self.thread = 0

    def exit(self) -> None:
        self.state, self.thread = "closed", 0

    def check_caller(self, where: str, any_time: bool = False) -> None:
        """HostClosed if the host does not serve (unless ``any_time``: ``aclose``); WrongThread if
        it does and this is not the thread (so not the loop) it runs on."""
        if self.thread == 0:
            if any_time:
                return
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
