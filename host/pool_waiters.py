"""Callers waiting for a slot in a pool, and their deadlines: one timer for all of them instead
of a cancel scope with a deadline per waiter (a timer handle each, and anyio's scope
bookkeeping): a heap of (deadline, order, waiter) that one task sleeps on (pool.py)."""

from __future__ import annotations

import heapq
import itertools
import math
import time
from typing import Any

import anyio

from .errors import HostError
from .policy.scheduler import Waiter, WaitQueue
from .worker import Lease


class PoolWaiter(Waiter):
    __slots__ = ("error", "lease", "timed_out")

    def __init__(self, loop: Any) -> None:
        super().__init__(loop)
        self.lease: Lease | None = None
        self.error: HostError | None = None
        self.timed_out = False  # its deadline passed in the queue (WaiterDeadlines.expire)


class WaiterDeadlines:
    """The deadlines of the callers in ``queue``: ``add`` one, ``expire`` runs as a task and
    takes out of the queue (``timed_out``) each one still waiting when its deadline passes."""

    def __init__(self, queue: WaitQueue[PoolWaiter]) -> None:
        self._queue = queue
        self._heap: list[tuple[float, int, PoolWaiter]] = []
        self._order = itertools.count()
        self._target = math.inf
        self._wake = anyio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, waiter: PoolWaiter) -> None:
        self._prune()
        heapq.heappush(self._heap, (deadline, next(self._order), waiter))
        if deadline < self._target:
            self._wake.set()

    async def expire(self) -> None:
        """Sleep until the earliest deadline of a waiting caller; one still waiting then leaves
        the queue and its ``acquire`` raises TimeoutError."""
        heap = self._heap
        while True:
            now = time.monotonic()
            while heap and (heap[0][2].event.is_set() or heap[0][2].gone or heap[0][0] <= now):
                waiter = heapq.heappop(heap)[2]
                if not (waiter.event.is_set() or waiter.gone):  # still queued: its deadline passed
                    self._queue.drop(waiter)
                    waiter.timed_out = True
                    waiter.event.set()
            self._prune()
            self._target = heap[0][0] if heap else math.inf
            self._wake = anyio.Event()
            with anyio.move_on_after(self._target - now):
                await self._wake.wait()

    def _prune(self) -> None:
        """Drop the entries of served waiters once they outnumber those still waiting (the
        expiry task sleeps until the earliest deadline; every waiter adds one meanwhile)."""
        heap = self._heap
        if len(heap) > 2 * len(self._queue) + 64:
            heap[:] = [e for e in heap if not (e[2].event.is_set() or e[2].gone)]
            heapq.heapify(heap)


__all__ = ["PoolWaiter", "WaiterDeadlines"]
