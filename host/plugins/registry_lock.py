"""The registry's lock: one rescan, reload or config change decides at a time, and a pool
starting steps out of it.

A new pool's start runs each worker's ``onStart`` within ``[limits] hook_timeout`` (5 s): held
under the lock, one plugin's hanging hook delayed every other plugin's reload, ``set_config`` and
rescan by that long. So the holder steps out while it waits for a start (``stepped_out``) and takes
the lock back before it swaps the new pool in; what it decided before may have changed meanwhile,
which the swap checks (swap.py). Only the task that holds the lock steps out of it: anywhere else
``stepped_out`` changes nothing (a plugin started by the loader's own tasks, or by ``enable``
outside any lock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import anyio


class RegistryLock:
    """An ``anyio.Lock`` that knows its holder, which may step out of it for a while."""

    def __init__(self) -> None:
        self._lock = anyio.Lock()
        self._holder: int | None = None  # the id of the task holding it

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        self._holder = anyio.get_current_task().id

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._holder = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def stepped_out(self) -> AsyncIterator[None]:
        """Release the lock meanwhile if this task holds it; it is held again afterwards, even
        when the task is cancelled (its ``async with`` releases it once more on the way out)."""
        me = anyio.get_current_task().id
        if self._holder != me:
            yield
            return
        self._holder = None
        self._lock.release()
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._lock.acquire()
            self._holder = me

    @asynccontextmanager
    async def holding(self, lock: anyio.Lock) -> AsyncIterator[None]:
        """Hold ``lock`` (a plugin's ``Plugin.starting``), waited for stepped out of this one, so
        that neither holder waits for the other's."""
        async with self.stepped_out():
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()


__all__ = ["RegistryLock"]
