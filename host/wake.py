"""A one-shot signal for one waiting task: what a call's caller waits on until its answer (or
its failure) arrives. On asyncio it is a bare future of the running loop (anyio.Event builds an
asyncio.Event, which makes a future per wait besides, and looks up the backend each time it
is made); elsewhere a trio.Event itself (anyio's wraps one, and looks up the backend each time
one is made). Whoever makes many of them passes the loop it knows (asyncio's
``_get_running_loop`` costs a ``getpid`` system call on Python 3.11)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import trio


class Wake:
    """``set()`` once (more calls do nothing), ``await wait()`` until then; ``is_set()`` says
    whether it was set, even when the waiter was cancelled before it woke (its future then
    is cancelled, but whoever set it must still be told it was handed over)."""

    __slots__ = ("_event", "_fut", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop | bool | None = True) -> None:
        if loop is True:  # not given: the running one (None on trio, and outside any loop)
            loop = asyncio._get_running_loop()
        self.done = False
        if loop is not None:
            self._fut: asyncio.Future[None] | None = loop.create_future()  # type: ignore[union-attr]
            self._event: trio.Event | None = None
        else:  # anyio runs on asyncio or trio: no loop is trio (imported by then)
            import trio

            self._fut = None
            self._event = trio.Event()

    def set(self) -> None:
        if self.done:
            return
        self.done = True
        fut = self._fut
        if fut is None:
            assert self._event is not None
            self._event.set()
        elif not fut.done():  # cancelled: its waiter is gone already
            fut.set_result(None)

    def is_set(self) -> bool:
        return self.done

    async def wait(self) -> None:
        fut = self._fut
        if fut is None:
            assert self._event is not None
            await self._event.wait()
        else:
            await fut

    def __await__(self) -> Generator[Any, None, None]:
        """``await wake``: as ``wait()``, one coroutine frame less on asyncio."""
        fut = self._fut
        if fut is None:
            assert self._event is not None
            return self._event.wait().__await__()
        return fut.__await__()


__all__ = ["Wake"]
