"""A shared service (Redis, the state database) that did not answer, remembered for a while: the
host asks them from worker threads, each waiting up to a timeout, so a hung one would cost every
call that wait and hold a worker thread for it, and the threads are the ones every other blocking
operation of the host shares. So once it has not answered, the operations of the next ``pause``
seconds do without it (a miss for the result cache; for the rate limits PolicyStorageError at
once, still closed; for the state database its StateError or StorageError at once), then one
operation asks it again while the others go on doing without until that one has its answer.
Before that first failure is known, the calls that find the service hung all wait their timeout:
they wait in at most SERVICE_THREADS threads (``limiter``), so the others stay for the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

PAUSE = 10.0  # seconds a service that did not answer is done without before it is asked again
SERVICE_THREADS = 16  # of anyio's 40 worker threads, the most one service's operations wait in


def no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` says the Redis did not answer (down, hung, cut off), not that it
    answered something unusable."""
    try:
        import redis
    except ImportError:  # pragma: no cover - only redis storages get here
        return isinstance(exc, OSError)
    # A refused password is an answer (redis-py files it under ConnectionError): said as it is
    # on every call, not as "did not answer a moment ago" (helper-100).
    if isinstance(exc, redis.AuthenticationError):
        return False
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))


class Skipped(Exception):
    """The service did not answer a moment ago: done without, not asked (``Outage.run``)."""


class Outage:
    def __init__(self, pause: float = PAUSE) -> None:
        self.pause = pause
        self._until: float | None = None  # monotonic; None: it answered last time
        self._failed_at: float | None = None  # monotonic: the last time it did not answer, since the last answer
        self._limiter: anyio.CapacityLimiter | None = None

    def limiter(self) -> anyio.CapacityLimiter:
        """The threads this service's operations run in (``to_thread.run_sync(limiter=)``);
        made on first use, in the event loop that uses it."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(SERVICE_THREADS)
        return self._limiter

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, one of this service's (``limiter``), recording whether
        the service answered (``watched``); the caller gives it up on cancel, and the thread
        finishes within the client's socket timeout. Skipped, without asking, while the service
        is done without, also when that became known while this waited for a thread."""
        async with self.limiter():
            if self.skip():
                raise Skipped
            return await anyio.to_thread.run_sync(self.watched(fn), *args, abandon_on_cancel=True)

    def skip(self) -> bool:
        """Whether to do without the service now. Past the pause this operation asks it again,
        and the others go on doing without until that one has its answer."""
        if self._until is None:
            return False
        now = time.monotonic()
        if now < self._until:
            return True
        self._until = now + self.pause
        return False

    def failed(self) -> None:
        self._failed_at = time.monotonic()
        self._until = self._failed_at + self.pause

    def answered(self) -> None:
        self._until = self._failed_at = None

    def failed_since(self, t: float) -> bool:
        """Whether the service was found not answering after ``t`` (monotonic) and has not
        answered since: an operation that queued from ``t`` behind the one that found it."""
        return self._failed_at is not None and self._failed_at >= t

    def watched(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn``, recording whether the Redis answered, even when the caller has stopped
        waiting for it (the thread it runs in finishes within the client's socket timeout)."""
        def run(*args: Any) -> T:
            try:
                out = fn(*args)
            except BaseException as exc:
                if no_answer(exc):
                    self.failed()
                raise
            self.answered()
            return out
        return run


__all__ = ["PAUSE", "SERVICE_THREADS", "Outage", "Skipped", "no_answer"]
