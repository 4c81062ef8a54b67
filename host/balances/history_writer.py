"""Balance history written in the background: a balance query answers as soon as its stations
did, never after the history write (a ``[state] database`` that hangs held every
``GET /api/balances?refresh=1`` for its statement timeout, 10 s). Answers wait in a bounded
queue (the oldest batch is skipped when it is full, and said); a write that fails is logged
(throttled) and its points are kept in memory to go with the next write (history.Unrecorded);
at close what is queued is written within ``[balances] history_flush`` seconds. The alerts a
query raised are written the same way, after its points (kept for the next write when one fails,
at most MAX_ALERTS)."""

from __future__ import annotations

import logging
from collections import deque

import anyio
import msgspec
from anyio.abc import TaskGroup

from ..errors import StateError
from ..logs import Throttle
from .alerts import Alert
from .history import History, Unrecorded, is_recorded
from .result import BalanceResult

log = logging.getLogger("host")
_warn = Throttle(log)
QUEUE = 256  # batches (one per query) waiting to be written; more skip the oldest
MAX_ALERTS = 1000  # alerts kept while they cannot be written; more drop the oldest


class HistoryWriter:
    """Takes each query's answers at once (``add``) and writes them in a task of the host's
    task group, one write at a time; ``flush`` at close."""

    def __init__(self, history: History) -> None:
        self._history = history
        self._unrecorded = Unrecorded()  # points a write could not take: written with the next ones
        self._queue: deque[list[BalanceResult]] = deque()
        self._alerts: deque[Alert] = deque(maxlen=MAX_ALERTS)
        self._wake: anyio.Event | None = None
        self._done: anyio.Event | None = None  # set whenever the queue is empty and nothing is written
        self._running = False

    def add(self, results: list[BalanceResult], alerts: list[Alert], tg: TaskGroup | None) -> None:
        """Queue ``results`` for the history (only those it records) and the ``alerts`` they
        raised; the writer runs in ``tg`` (None: the host is closing, they wait for ``flush``).
        They wait without their rawData (up to max_result_bytes each), which the history never keeps."""
        results = [msgspec.structs.replace(r, raw_data=None) for r in results if is_recorded(r)]
        if not results and not alerts:
            return
        if len(self._queue) >= QUEUE:
            self._queue.popleft()
            _warn.warning("history-queue", "balance history: %d queries waiting to be written; the oldest "
                          "is skipped (is the [state] database slow?)", QUEUE)
        self._queue.append(results)
        self._alerts.extend(alerts)
        if self._done is None or self._done.is_set():
            self._done = anyio.Event()
        if not self._running and tg is not None:
            self._running = True
            tg.start_soon(self._run)
        if self._wake is not None:
            self._wake.set()

    async def _write_queued(self) -> None:
        batch = [r for results in self._queue for r in results]
        self._queue.clear()
        try:
            await anyio.to_thread.run_sync(self._unrecorded.append, self._history, batch)
        except StateError as exc:  # the answers still counted; the points wait for the next write
            _warn.warning("history", "balance history: %s", exc.message)
        alerts = list(self._alerts)
        self._alerts.clear()
        if not alerts:
            return
        try:
            await anyio.to_thread.run_sync(self._history.record_alerts, alerts)
        except StateError as exc:  # said and delivered already; recorded with the next write
            self._alerts = deque([*alerts, *self._alerts], maxlen=MAX_ALERTS)  # past the cap the oldest go
            _warn.warning("alerts", "balance alerts: %s", exc.message)

    async def _run(self) -> None:
        try:
            while True:
                while self._queue:
                    await self._write_queued()
                if self._done is not None:
                    self._done.set()
                self._wake = anyio.Event()
                await self._wake.wait()
        finally:
            self._running = False

    async def _written(self) -> None:
        """Until what was queued is written (the writer task running)."""
        if self._running and self._done is not None:
            await self._done.wait()

    async def settled(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until what was queued is written: a read of the
        history after a query finds its points."""
        with anyio.move_on_after(timeout):
            await self._written()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until what was queued is written, or write it here
        when the writer task is not running."""
        with anyio.move_on_after(timeout) as scope:
            await self._written()
            while self._queue:
                await self._write_queued()
        if scope.cancelled_caught and self._queue:
            log.warning("balance history: %d queries not written within [balances] history_flush (%gs) at close",
                        len(self._queue), timeout)


__all__ = ["HistoryWriter"]
