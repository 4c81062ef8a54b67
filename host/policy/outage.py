"""A shared storage (Redis) that did not answer, remembered for a while: the rate limits and the
result cache ask it from worker threads, each waiting up to the client's socket timeout, so a
hung Redis would cost every call that wait and hold a worker thread for it, and the threads are
the ones every other blocking operation of the host shares (sqlite plugin storage, the state
database, history). So once it has not answered, the operations of the next ``pause`` seconds do
without it (a miss for the cache, PolicyStorageError at once for the rate limits: still closed),
then one operation asks it again while the others go on doing without until that one has its
answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

PAUSE = 10.0  # seconds a storage that did not answer is done without before it is asked again


def no_answer(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage did not answer (down, hung, cut off), not that it
    answered something unusable."""
    try:
        import redis
    except ImportError:  # pragma: no cover - only redis storages get here
        return isinstance(exc, OSError)
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError))


class Outage:
    def __init__(self, pause: float = PAUSE) -> None:
        self.pause = pause
        self._until: float | None = None  # monotonic; None: it answered last time

    def skip(self) -> bool:
        """Whether to do without the storage now. Past the pause this operation asks it again,
        and the others go on doing without until that one has its answer."""
        if self._until is None:
            return False
        now = time.monotonic()
        if now < self._until:
            return True
        self._until = now + self.pause
        return False

    def watched(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn``, recording whether the storage answered, even when the caller has stopped
        waiting for it (the thread it runs in finishes within the client's socket timeout)."""
        def run(*args: Any) -> T:
            try:
                out = fn(*args)
            except BaseException as exc:
                if no_answer(exc):
                    self._until = time.monotonic() + self.pause
                raise
            self._until = None
            return out
        return run


__all__ = ["PAUSE", "Outage", "no_answer"]
