"""Balances of the relay stations: every balance plugin asked at once, each under its own
policies and deadline, the answers recorded in the balance history."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..config import BalancesConfig
from ..errors import CallTimeout, HostError, StateError
from ..logs import Throttle
from ..plugins.lifecycle import Plugin
from ..plugins.registry import Registry
from .alerts import Alert, AlertState, deliver
from .history import BalanceHistory, BalancePoint
from .result import BALANCE_CAPABILITY, BALANCE_FUNCTION, BalanceResult, from_error, from_reply

log = logging.getLogger("host")
_warn = Throttle(log)

Run = Callable[..., Awaitable[tuple[Any, float, bool]]]  # the pipeline: (result, produced at, cached)
Observe = Callable[[str, str, str, float], None]  # metrics: (plugin, function, outcome, seconds)


class Balances:
    """``query_balances`` and ``balance_history`` of a host."""

    def __init__(self, config: BalancesConfig, registry: Registry, run: Run, observe: Observe,
                 history: BalanceHistory, threshold: Callable[[str], float | None],
                 tasks: Callable[[], TaskGroup | None]) -> None:
        self.config = config
        self._reg = registry
        self._run = run
        self._observe = observe
        self._history = history
        self._threshold = threshold  # a station's low_balance
        self._tasks = tasks          # where alerts are delivered, in the background
        self._alerts: AlertState | None = None  # read back from the history at the first query

    async def query_balances(self, *, refresh: bool = False, timeout: float | None = None) -> list[BalanceResult]:
        """Ask every balance plugin (``"balance"`` in its capabilities) for its balance, all in
        parallel, each under its own policies (cache, rate limit, retry, breaker) and
        ``timeout`` (default ``balances.timeout``): a slow or broken station never delays the
        others. One BalanceResult per plugin id, status success, error or timeout; a plugin
        that is not running is an error result saying why. ``refresh`` bypasses the cache."""
        budget = self.config.timeout if timeout is None else timeout
        newest = self._reg.newest(r for r in self._reg.records
                         if r.manifest is not None and BALANCE_CAPABILITY in r.manifest.capabilities)
        results: dict[str, BalanceResult] = {}

        async def one(r: Plugin) -> None:
            assert r.manifest is not None
            name = r.manifest.name or r.id
            t0 = time.perf_counter()
            outcome: BalanceResult | None = None
            with anyio.move_on_after(budget + 0.5):  # the call's own deadline should come first
                try:
                    config = r.pool.spec.config if r.pool is not None else None
                    value, stored_at, cached = await self._run(r.key, BALANCE_FUNCTION, [config], budget,
                                                                        0, refresh)
                    outcome = from_reply(r.id, name, value, stored_at=stored_at, cached=cached,
                                         duration=(time.perf_counter() - t0) * 1000)
                except HostError as exc:
                    outcome = from_error(r.id, name, exc, duration=(time.perf_counter() - t0) * 1000)
            if outcome is None:
                exc = CallTimeout(f"no answer within {budget:g}s", timeout=budget, plugin=r.id,
                                  function=BALANCE_FUNCTION)
                outcome = from_error(r.id, name, exc, duration=(time.perf_counter() - t0) * 1000)
            results[r.id] = outcome
            # counted like any call (metrics, the latency and error rate in PluginInfo)
            self._observe(r.id, BALANCE_FUNCTION, "ok" if outcome.status == "success" else
                                 outcome.error_type or outcome.status, time.perf_counter() - t0)

        async with anyio.create_task_group() as tg:
            for r in newest.values():
                tg.start_soon(one, r)
        ordered = [results[pid] for pid in sorted(results)]
        try:
            await anyio.to_thread.run_sync(self._history.append, ordered)
        except StateError as exc:  # the answers still count; the history misses them
            _warn.warning("history", "balance history: %s", exc.message)
        await self._alert(ordered)
        return ordered

    async def _alert(self, results: list[BalanceResult]) -> None:
        """Say what changed (alerts.py): recorded, then delivered in the background."""
        try:
            if self._alerts is None:
                self._alerts = AlertState()
                self._alerts.replay(await anyio.to_thread.run_sync(lambda: self._history.read_alerts(limit=100_000)))
            alerts = self._alerts.judge(results, self._threshold, dt.datetime.now(dt.UTC))
            if alerts:
                await anyio.to_thread.run_sync(self._history.record_alerts, alerts)
        except StateError as exc:  # the answers still count
            _warn.warning("alerts", "balance alerts: %s", exc.message)
            return
        for a in alerts:
            log.warning("balance alert: %s %s: %s", a.provider, a.kind, a.message)
        tg = self._tasks()
        if alerts and tg is not None:
            tg.start_soon(deliver, alerts, self.config.alerts)

    async def balance_alerts(self, provider: str | None = None, *, limit: int = 1000) -> list[Alert]:
        """The alerts said so far (low balance, recovered, failing), oldest first."""
        return await anyio.to_thread.run_sync(lambda: self._history.read_alerts(provider, limit=limit))

    async def balance_history(self, provider: str | None = None, *, since: dt.datetime | None = None,
                              until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]:
        """The recorded balances (successful, freshly asked queries), oldest first: of one
        provider (plugin id) or all, within [since, until], at most ``limit`` newest points."""
        return await anyio.to_thread.run_sync(
            lambda: self._history.read(provider, since=since, until=until, limit=limit))


__all__ = ["Balances"]
