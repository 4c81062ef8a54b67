"""Admission of calls under concurrency caps: one host-wide, one per plugin. When a cap is
reached callers wait, served highest priority first and in arrival order among equals."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import anyio
import msgspec

from ..wake import Wake


class SchedulerStats(msgspec.Struct):
    """What the scheduler holds now: calls admitted (``running``: on a worker or waiting for
    one) and calls waiting for a slot (``queued``), in all and per plugin id."""

    max_concurrent_calls: int | None
    running: int
    queued: int
    running_by_plugin: dict[str, int]
    queued_by_plugin: dict[str, int]


class Waiter:
    """A caller waiting in a WaitQueue; ``event`` is set once it is served."""

    __slots__ = ("event", "gone")

    def __init__(self, loop: Any = True) -> None:  # the running asyncio loop when known (wake.py)
        self.event = Wake(loop)
        self.gone = False  # gave up (cancelled, timed out): dropped lazily from its queue


W = TypeVar("W", bound=Waiter)
_arrivals = itertools.count()  # one order for every queue, so that the heads of queues compare


class WaitQueue(Generic[W]):
    """Waiters served highest priority first, and in arrival order among equals. ``len()``
    counts those still waiting; one that gives up (``drop``) is skipped when it comes up."""

    __slots__ = ("_heap", "_live")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, W]] = []  # (-priority, arrival, waiter)
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def push(self, waiter: W, priority: int = 0) -> None:
        heapq.heappush(self._heap, (-priority, next(_arrivals), waiter))
        self._live += 1

    def peek(self) -> tuple[int, int] | None:
        """The place in line of the next waiter, (-priority, arrival): smaller goes first."""
        heap = self._heap
        while heap and heap[0][2].gone:
            heapq.heappop(heap)
        return heap[0][:2] if heap else None

    def pop(self) -> W | None:
        """Take the next waiter to serve, or None."""
        while self._heap:
            waiter = heapq.heappop(self._heap)[2]
            if not waiter.gone:
                self._live -= 1
                return waiter
        return None

    def drop(self, waiter: W) -> None:
        """``waiter``, still queued, gives up its place."""
        waiter.gone = True
        self._live -= 1
        if len(self._heap) > 2 * self._live + 64:
            self._heap = [e for e in self._heap if not e[2].gone]
            heapq.heapify(self._heap)


class Scheduler:
    """A priority-aware capacity limiter keyed by plugin id. ``cap_for(plugin)`` is read on
    every admission, so a cap changed in the configuration applies at once (call ``wake()``
    after raising one so that waiting callers are let in)."""

    def __init__(self, max_concurrent: int | None = None,
                 cap_for: Callable[[str], int | None] = lambda plugin: None) -> None:
        self._max = max_concurrent
        self._cap_for = cap_for
        self._running: dict[str, int] = {}
        self._queues: dict[str, WaitQueue[Waiter]] = {}
        self._total = 0

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
        queue = self._queues.get(plugin)
        return 0 if queue is None else len(queue)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            max_concurrent_calls=self._max, running=self._total,
            queued=sum(len(q) for q in self._queues.values()),
            running_by_plugin={k: v for k, v in self._running.items() if v},
            queued_by_plugin={k: len(q) for k, q in self._queues.items() if q},
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
        if self.try_take(plugin):
            return
        waiter = Waiter()
        queue = self._queues.setdefault(plugin, WaitQueue())
        queue.push(waiter, priority)
        self.wake()  # a cap may have been raised without a wake()
        try:
            with anyio.fail_after(None if deadline is None else max(deadline - time.monotonic(), 0)):
                await waiter.event.wait()
        except BaseException as exc:
            if waiter.event.is_set():  # granted
                if isinstance(exc, TimeoutError):
                    return  # granted just in time
                self.release(plugin)
            else:
                queue.drop(waiter)  # still waiting, so wake() kept its queue
            raise

    def try_take(self, plugin: str) -> bool:
        """Take a slot for a call to ``plugin`` if one is free now and nobody waits for it."""
        if self._queues.get(plugin):
            return False
        # After every release the waiters that fit were let in, so a caller that fits now
        # jumps no one. (``_room`` and ``_take``, inline: this runs on every call.)
        if self._max is not None and self._total >= self._max:
            return False
        running = self._running.get(plugin, 0)
        cap = self._cap_for(plugin)
        if cap and running >= cap:
            return False
        self._total += 1
        self._running[plugin] = running + 1
        return True

    def release(self, plugin: str) -> None:
        """Give back a slot taken by ``acquire`` or ``try_take``."""
        self._total -= 1
        self._running[plugin] -= 1
        if self._queues:  # nobody waits: nothing to wake
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
            best: tuple[int, int] | None = None
            best_plugin = ""
            for plugin, queue in self._queues.items():
                head = queue.peek()
                if head is not None and self._room(plugin) and (best is None or head < best):
                    best, best_plugin = head, plugin
            if best is None:
                break
            waiter = self._queues[best_plugin].pop()
            assert waiter is not None
            self._take(best_plugin)
            waiter.event.set()
        for plugin in [p for p, q in self._queues.items() if not q]:
            del self._queues[plugin]


__all__ = ["Scheduler", "SchedulerStats", "WaitQueue", "Waiter"]
