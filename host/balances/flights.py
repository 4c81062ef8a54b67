"""One flight per station: the balance queries that would ask a station's plugin at the same
time share one call (the others wait for its answer), and within ``balances.min_interval``
seconds of an answer a query gets that answer (success or error) instead of asking again.

Without it the read token could make the host work and write at will: 50 concurrent
``GET /api/balances?refresh=1`` asked the provider 50 times and stored 50 history rows. Now
they ask it once and store one row: the answers a query shares are marked ``cached`` (the
history records only what was asked of the station then). A changed config, or a new pool of
the plugin (a restart, a reload, private networks allowed), asks again at once.
Per serve process: ``serve --processes N`` asks a station at most N times per interval."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..errors import HostError, callers_own

Answer = tuple[Any, float, bool]  # (value, unix time it was produced, cached): the pipeline's


class _Flight:
    """One call to a station's plugin: its waiters, and once it settled its answer or error."""

    __slots__ = ("answer", "at", "done", "error", "key")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.done = anyio.Event()
        self.answer: Answer | None = None
        self.error: HostError | None = None
        self.at = 0.0  # time.monotonic() it settled

    @property
    def settled(self) -> bool:
        return self.answer is not None or self.error is not None

    def shared(self) -> Answer:
        """Its outcome for a query that did not make the call: the answer marked cached, or
        the error raised again."""
        if self.error is not None:
            raise self.error
        assert self.answer is not None
        value, produced, _ = self.answer
        return value, produced, True


class StationFlights:
    """The flight of each station in the air, and the last one that settled."""

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._flying: dict[str, _Flight] = {}
        self._last: dict[str, _Flight] = {}

    async def ask(self, station: str, key: Any, call: Callable[[], Awaitable[Answer]]) -> Answer:
        """``call()``'s answer for ``station`` asked as ``key`` says (the pool and the config it
        goes to): the last one if it settled less than ``min_interval`` ago with the same key,
        the one in flight if there is one, else a new flight's. A flight cancelled before it
        settled (its query's caller went away) hands the call to one of its waiters."""
        while True:
            last = self._last.get(station)
            if last is not None and time.monotonic() - last.at < self.min_interval and last.key == key:
                return last.shared()
            flight = self._flying.get(station)
            if flight is None:
                break
            await flight.done.wait()  # within the query's own deadline (its cancel scope)
            if flight.settled and flight.key == key:
                return flight.shared()
        flight = self._flying[station] = _Flight(key)
        try:
            flight.answer = await call()
            return flight.answer
        except HostError as exc:
            if not callers_own(exc):  # a caller's own short deadline is
                flight.error = exc  # no answer of the station's: not shared, nor kept (as a cancel)
            raise
        finally:
            if flight.settled:
                flight.at = time.monotonic()
                self._last[station] = flight
            del self._flying[station]
            flight.done.set()

    def forget(self, keep: set[str]) -> None:
        """Drop the last answers of stations no longer in ``keep`` (removed ones)."""
        for name in [n for n in self._last if n not in keep]:
            del self._last[name]


__all__ = ["StationFlights"]
