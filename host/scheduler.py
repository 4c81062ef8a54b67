"""Admission of calls under concurrency caps: one host-wide, one per plugin. When a cap is
reached callers wait, served highest priority first and in arrival order among equals."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import msgspec


class SchedulerStats(msgspec.Struct):
    """What the scheduler holds now: calls admitted (``running``: on a worker or waiting for
    one) and calls waiting for a slot (``queued``), in all and per plugin id."""

    max_concurrent_calls: int | None
    running: int
    queued: int
    running_by_plugin: dict[str, int]
    queued_by_plugin: dict[str, int]


class _Waiter:
    __slots__ = ("event", "gone", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False
        self.gone = False  # cancelled or timed out: lazily dropped from its heap


class Scheduler:
    """A priority-aware capacity limiter keyed by plugin id. ``cap_for(plugin)`` is read on
    every admission, so a cap changed in the configuration applies at once (call ``wake()``
    after raising one so that waiting callers are let in)."""

    def __init__(self, max_concurrent: int | None = None,
                 cap_for: Callable[[str], int | None] = lambda plugin: None) -> None:
        self._max = max_concurrent
        self._cap_for = cap_for
        self._running: dict[str, int] = {}
        self._queued: dict[str, int] = {}
        self._heaps: dict[str, list[tuple[int, int, _Waiter]]] = {}
        self._total = 0
        self._seq = itertools.count()

    @property
    def max_concurrent(self) -> int | None:
        return self._max

    @max_concurrent.setter
    def max_concurrent(self, value: int | None) -> None:
        if value is not None and value < 1:
            raise ValueError("max_concurrent must be >= 1 or None")
        self._max = value
        self.wake()

    def running(self, plugin: str) -> int:
        return self._running.get(plugin, 0)

    def queued(self, plugin: str) -> int:
        return self._queued.get(plugin, 0)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            max_concurrent_calls=self._max, running=self._total, queued=sum(self._queued.values()),
            running_by_plugin={k: v for k, v in self._running.items() if v},
            queued_by_plugin={k: v for k, v in self._queued.items() if v},
        )

    def _room(self, plugin: str) -> bool:
        cap = self._cap_for(plugin)
        return (self._max is None or self._total < self._max) and (
            not cap or self._running.get(plugin, 0) < cap)

    def _take(self, plugin: str) -> None:
        self._total += 1
        self._running[plugin] = self._running.get(plugin, 0) + 1

    async def acquire(self, plugin: str, priority: int = 0, deadline: float | None = None) -> None:
        """Take a slot for a call to ``plugin``; waiting past ``deadline`` (time.monotonic())
        raises TimeoutError. Cancellation while waiting gives up the place in line."""
        if not self._queued.get(plugin) and self._room(plugin):
            # After every release the waiters that fit were let in, so a caller that fits
            # now jumps no one.
            self._take(plugin)
            return
        waiter = _Waiter()
        heap = self._heaps.setdefault(plugin, [])
        heapq.heappush(heap, (-priority, next(self._seq), waiter))
        self._queued[plugin] = self._queued.get(plugin, 0) + 1
        self.wake()  # a cap may have been raised without a wake()
        try:
            if deadline is None:
                await waiter.event.wait()
            else:
                with anyio.fail_after(max(deadline - time.monotonic(), 0)):
                    await waiter.event.wait()
        except BaseException as exc:
            if waiter.granted:
                if isinstance(exc, TimeoutError):
                    return  # granted just in time
                self.release(plugin)
            else:
                waiter.gone = True
                self._queued[plugin] -= 1
                self._compact(plugin)
            raise

    def release(self, plugin: str) -> None:
        """Give back a slot taken by ``acquire``."""
        self._total -= 1
        self._running[plugin] -= 1
        self.wake()

    @asynccontextmanager
    async def slot(self, plugin: str, priority: int = 0, deadline: float | None = None) -> AsyncIterator[None]:
        await self.acquire(plugin, priority, deadline)
        try:
            yield
        finally:
            self.release(plugin)

    def wake(self) -> None:
        """Admit waiters while there is room: the best (priority, arrival) among the heads of
        the plugins whose own cap has room."""
        while self._max is None or self._total < self._max:
            best: tuple[int, int, _Waiter] | None = None
            best_plugin = ""
            for plugin, heap in self._heaps.items():
                while heap and heap[0][2].gone:
                    heapq.heappop(heap)
                if heap and self._room(plugin) and (best is None or heap[0][:2] < best[:2]):
                    best, best_plugin = heap[0], plugin
            if best is None:
                break
            heapq.heappop(self._heaps[best_plugin])
            waiter = best[2]
            waiter.granted = True
            self._queued[best_plugin] -= 1
            self._take(best_plugin)
            waiter.event.set()
        for plugin in [p for p, h in self._heaps.items() if not h]:
            del self._heaps[plugin]

    def _compact(self, plugin: str) -> None:
        heap = self._heaps.get(plugin)
        if heap is not None and len(heap) > 2 * self._queued[plugin] + 64:
            heap[:] = [e for e in heap if not e[2].gone]
            heapq.heapify(heap)


__all__ = ["Scheduler", "SchedulerStats"]
