"""The ``degrade`` rate-limit strategy of balance queries (the balance plugin document's third
strategy, beside queue-wait and reject): a query its plugin's rate limit refuses answers the
station's last successful balance, marked ``stale`` with its ``age`` in seconds, instead of an
error. The last balance is the one this host last saw, else the newest in the balance history
(so it survives a restart). With none to give, the query is the RateLimited error as before.

Only balance queries degrade: any other call of a plugin whose strategy is ``degrade`` is refused
with RateLimited at once, as with ``reject``."""

from __future__ import annotations

import datetime as dt

import anyio
import msgspec

from ..errors import HostError, RateLimited, StateError
from .history import History
from .result import BalanceResult


def degradable(exc: HostError) -> bool:
    """Whether ``exc`` lets the query answer a stale balance instead."""
    return isinstance(exc, RateLimited) and exc.strategy == "degrade"


class LastBalances:
    """The last successful answer of each station."""

    def __init__(self, history: History) -> None:
        self._history = history
        self._last: dict[str, BalanceResult] = {}

    def remember(self, results: list[BalanceResult]) -> None:
        for r in results:
            if r.usable and not r.stale:
                self._last[r.provider] = r

    async def stale(self, name: str, title: str, exc: HostError, duration: float) -> BalanceResult | None:
        """The station's last balance as the answer to a query ``exc`` refused, or None."""
        last = self._last.get(name)
        if last is None:
            try:
                points = await anyio.to_thread.run_sync(lambda: self._history.read(name, limit=1))
            except StateError:
                points = []
            if not points:
                return None
            pt = points[-1]
            last = BalanceResult(provider=name, provider_name=title, status="success", last_updated=pt.time,
                                 balance=pt.balance, currency=pt.currency, quota=pt.quota, used_quota=pt.used_quota)
        age = max((dt.datetime.now(dt.UTC) - last.last_updated).total_seconds(), 0.0)
        return msgspec.structs.replace(
            last, stale=True, cached=True, age=round(age, 3), duration=round(duration, 3),
            error_message=f"{exc.message}: the last balance, {age:.0f}s old (rate_limit.strategy = \"degrade\")")


__all__ = ["LastBalances", "degradable"]
