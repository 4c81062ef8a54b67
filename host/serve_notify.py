"""``serve`` under systemd (``Type=notify``, sd_notify.py): what it says and when.

- ``READY=1`` once ``/healthz/ready`` says 200, that is, listening and no plugin still starting
  (one in error or disabled is settled: it shows in ``STATUS=``, not as a host never ready). With
  ``--processes N`` the parent alone says it, once each of the N answers ready on its private
  socket. Until then a ``STATUS=`` line says how far the start is, and each plugin (process)
  settled sends ``EXTEND_TIMEOUT_USEC=`` (START_EXTEND): a start that goes on moving is not cut
  by ``TimeoutStartSec=``, one stuck is.
- ``STOPPING=1`` when the drain begins, with ``EXTEND_TIMEOUT_USEC=`` the drain's own bound, so
  a ``TimeoutStopSec=`` shorter than ``[server] shutdown_grace`` plus the hooks does not kill
  calls the host promised to let finish (systemd only extends: a longer TimeoutStopSec stands).
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC``, from a task of the event loop: a loop that
  stops turning (a blocking call, a deadlock, a write to a stalled journal) sends none, and
  systemd restarts the service. A ping also needs the host healthy enough to serve: its plugin
  host running (started, not closing) and, with ``--processes N``, one serve process at least
  answering its liveness probe within half the interval (one down or stuck is the parent's to
  start again, multiproc.py, while its siblings serve on: a restart of the service would stop
  them too and mend nothing). Plugins in error, crashing or
  restarting do not stop the pings: their pools restart them, and a restart of the service
  would stop every healthy plugin with them and mend none (``STATUS=`` shows them).
- No ``RELOADING=1``: SIGHUP drains and stops ``serve`` (a terminal closing), and plugins reload
  on their own when their files change; the unit has no ``ExecReload=``. No ``MAINPID=``: the
  process systemd started is the main one."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import anyio

from .plugins.lifecycle import STARTING
from .sd_notify import Notifier

if TYPE_CHECKING:
    from aiohttp import web

    from .plugin_host import PluginHost

T = TypeVar("T")

READY_POLL = 0.1     # seconds between looks at readiness while the start goes on
START_TICK = 5.0     # seconds between STATUS= lines while the start goes on
START_EXTEND = 60.0  # seconds EXTEND_TIMEOUT_USEC= grants the start each time a plugin (process) settled
STATUS_EVERY = 10.0  # seconds between looks at whether STATUS= changed, once ready


class Look(NamedTuple):
    """How the service is: ready as /healthz/ready says it, how many of its parts settled."""

    ready: bool
    settled: int
    total: int
    status: str


class Service(Protocol):
    async def look(self) -> Look: ...
    async def healthy(self) -> bool: ...


def plugin_counts(states: Iterable[str]) -> str:
    """``plugins: 2 running, 1 error`` (``plugins: none``) of the plugins' ``states``."""
    counts = Counter(states)
    return "plugins: " + (", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none")


class OneServer:
    """``serve`` as one process: its host and the app whose readiness it reports."""

    def __init__(self, host: PluginHost, app: web.Application, where: Callable[[], str]) -> None:
        self.host, self.app, self.where = host, app, where

    async def look(self) -> Look:
        from .server import serving_ready

        states = self.host.states().values()
        settled = sum(state not in STARTING for state in states)
        if serving_ready(self.app, self.host):
            return Look(True, settled, len(states), f"serving on {self.where()}; {plugin_counts(states)}")
        return Look(False, settled, len(states), f"starting: {settled} of {len(states)} plugins settled")

    async def healthy(self) -> bool:
        return self.host.running


class Processes:
    """``serve --processes N`` seen from its parent: the children's private sockets."""

    def __init__(self, sockets: Sequence[str], within: float) -> None:
        self.sockets, self.within = sockets, within  # ``within``: seconds a liveness probe may take

    async def _each(self, ask: Callable[[str], Awaitable[T]], within: float) -> list[T | None]:
        """``ask(socket)`` of every child at once, within ``within`` seconds (None: no answer)."""
        said: list[T | None] = [None] * len(self.sockets)

        async def one(k: int) -> None:
            said[k] = await ask(self.sockets[k])

        with anyio.move_on_after(within):
            async with anyio.create_task_group() as tg:
                for k in range(len(self.sockets)):
                    tg.start_soon(one, k)
        return said

    async def look(self) -> Look:
        from .multiproc_watch import PEER_TIMEOUT, peer_get

        said = await self._each(lambda path: peer_get(path, "/ready"), PEER_TIMEOUT)
        n, ready = len(said), [got for got in said if got is not None and got[0] == 200]
        if len(ready) < n:
            return Look(False, len(ready), n, f"starting: {len(ready)} of {n} serve processes ready")
        return Look(True, n, n, f"{n} serve processes serving; {ready[0][1]}")

    async def healthy(self) -> bool:
        from .multiproc_watch import answers

        return any(await self._each(lambda path: answers(path, self.within), self.within))


class Notice:
    """What ``serve`` tells systemd through ``notifier`` about ``service``."""

    def __init__(self, notifier: Notifier, service: Service) -> None:
        self.notifier, self.service = notifier, service
        self.ready = anyio.Event()
        self._stopping = False
        self._status = ""

    def stopping(self, status: str, budget: float) -> None:
        """The drain begins; it ends within ``budget`` seconds."""
        self._stopping = True
        self.notifier.send("STOPPING=1", f"STATUS={status}", f"EXTEND_TIMEOUT_USEC={round(budget * 1e6)}")

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            await self._start()
            await self._statuses()

    async def _start(self) -> None:
        """READY=1 once ready; a STATUS= line each START_TICK meanwhile, and more time for the
        start each time it moved."""
        moved, said = 0, 0.0
        while not self._stopping:
            look = await self.service.look()
            if self._stopping:
                return
            if look.ready:
                self._status = look.status
                self.notifier.send("READY=1", f"STATUS={look.status}")
                self.ready.set()
                return
            now = time.monotonic()
            if look.settled > moved:
                moved, said = look.settled, now
                self.notifier.send(f"STATUS={look.status}", f"EXTEND_TIMEOUT_USEC={round(START_EXTEND * 1e6)}")
            elif now - said >= START_TICK:
                said = now
                self.notifier.send(f"STATUS={look.status}")
            await anyio.sleep(READY_POLL)

    async def _statuses(self) -> None:
        while not self._stopping:
            await anyio.sleep(STATUS_EVERY)
            look = await self.service.look()
            if look.status != self._status and not self._stopping:
                self._status = look.status
                self.notifier.send(f"STATUS={look.status}")

    async def _watchdog(self) -> None:
        """WATCHDOG=1 every interval from READY=1 on, while healthy; during the drain, while the
        loop turns (the drain's own deadline bounds it)."""
        if (interval := self.notifier.watchdog) is None:
            return
        await self.ready.wait()
        due = time.monotonic() + interval
        while True:
            await anyio.sleep(max(0.0, due - time.monotonic()))
            if self._stopping or await self.service.healthy():
                self.notifier.send("WATCHDOG=1")
            due += interval
            if due < time.monotonic():  # the loop was held up: no burst of pings to make up for it
                due = time.monotonic() + interval


@asynccontextmanager
async def notifying(notifier: Notifier, service: Service) -> AsyncIterator[Notice]:
    """Tell systemd about ``service`` while the block runs (nothing without a notifier)."""
    notice = Notice(notifier, service)
    if not notifier.enabled:
        yield notice
        return
    async with anyio.create_task_group() as tg:
        tg.start_soon(notice.run)
        try:
            yield notice
        finally:
            tg.cancel_scope.cancel()


__all__ = ["Look", "Notice", "OneServer", "Processes", "Service", "notifying", "plugin_counts"]
