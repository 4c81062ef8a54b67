"""Balances of the relay stations: every balance plugin asked at once, each under its own
policies and deadline, the answers recorded in the balance history."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..config import BalancesConfig
from ..errors import (
    CallTimeout,
    HostClosed,
    HostError,
    InvalidConfig,
    PluginUnavailable,
    StateError,
)
from ..logs import Throttle
from ..plugins.keys import station_key
from ..plugins.lifecycle import Plugin
from ..plugins.registry import Registry
from ..plugins.settings import redacted
from .alerts import Alert, AlertState, Deliveries
from .degrade import LastBalances, degradable
from .flights import StationFlights
from .history import BalancePoint, History
from .history_writer import HistoryWriter
from .result import BALANCE_CAPABILITY, BALANCE_FUNCTION, BalanceResult, balance_limit, from_error, from_reply
from .stations import Stations

log = logging.getLogger("host")
_warn = Throttle(log)

Run = Callable[..., Awaitable[tuple[Any, float, bool]]]  # the pipeline: (result, produced at, cached)
Observe = Callable[[str, str, str, float], None]  # metrics: (plugin, function, outcome, seconds)


@dataclass(slots=True)
class Target:
    """One station to ask: its name and title, the plugin record answering for it (None: not
    installed), and the config its call carries (None: the plugin's own)."""

    name: str
    title: str
    plugin: str
    record: Plugin | None
    station: bool = False

    @property
    def priority(self) -> int:
        """The serving plugin's ``priority``: the highest is asked (and listed) first."""
        return self.record.manifest.priority if self.record is not None and self.record.manifest else 0


class Balances:
    """``query_balances`` and ``balance_history`` of a host."""

    def __init__(self, config: BalancesConfig, registry: Registry, run: Run, observe: Observe,
                 history: History, threshold: Callable[[str], float | None],
                 tasks: Callable[[], TaskGroup | None], stations: Stations) -> None:
        self.config = config
        self.stations = stations
        self._reg = registry
        self._run = run
        self._observe = observe
        self._history = history
        self._plugin_threshold = threshold  # a plugin's low_balance
        self._tasks = tasks          # where alerts are delivered, in the background
        self._alerts: AlertState | None = None  # read back from the history at the first query
        self._replay = anyio.Lock()
        self._deliveries = Deliveries(config.alerts)  # in order, in the background
        self._last = LastBalances(history)  # for the "degrade" rate-limit strategy
        self._writer = HistoryWriter(history)  # in the background: no answer waits for the history
        self._flights = StationFlights(config.min_interval)  # one call per station at a time, and per interval

    async def query_balances(self, *, refresh: bool = False, timeout: float | None = None) -> list[BalanceResult]:
        """Ask every balance plugin (``"balance"`` in its capabilities) for its balance, all in
        parallel, each under its own policies (cache, rate limit, retry, breaker) and
        ``timeout`` (default: the plugin's own call timeout if it has one, an imported
        cc-switch script's say, else ``balances.timeout``): a slow or broken station never
        delays the others. One BalanceResult per plugin id, status success, error or timeout; a
        plugin that is not running is an error result saying why. ``refresh`` bypasses the cache. A
        station is asked once at a time and at most once per ``balances.min_interval``: the
        queries meanwhile share that answer, marked ``cached`` (flights.py)."""
        if not self._reg.running:  # not an empty list: it would read as "no balance plugins"
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        results: dict[str, BalanceResult] = {}

        async def one(t: Target) -> None:
            t0 = time.perf_counter()
            outcome: BalanceResult | None = None
            budget = timeout if timeout is not None else balance_limit(self._reg.config, self._reg.limits_for(t.plugin))
            with anyio.move_on_after(budget + 0.5):  # the call's own deadline should come first
                try:
                    value, stored_at, cached = await self._ask(t, budget, refresh)
                    outcome = from_reply(t.name, t.title, value, stored_at=stored_at, cached=cached,
                                         duration=(time.perf_counter() - t0) * 1000, plugin=t.plugin)
                    if outcome.raw_data is not None:  # read-token output: an echo of the config masked
                        outcome.raw_data = redacted(outcome.raw_data, self._reg.redact_secrets)
                except HostError as exc:
                    ms = (time.perf_counter() - t0) * 1000
                    if degradable(exc):  # the last balance, marked stale, if there is one
                        outcome = await self._last.stale(t.name, t.title, exc, ms)
                    outcome = outcome or from_error(t.name, t.title, exc, duration=ms, plugin=t.plugin)
            if outcome is None:
                exc = CallTimeout(f"no answer within {budget:g}s", timeout=budget, plugin=t.plugin,
                                  function=BALANCE_FUNCTION)
                outcome = from_error(t.name, t.title, exc, duration=(time.perf_counter() - t0) * 1000,
                                     plugin=t.plugin)
            results[t.name] = outcome
            # counted like any call (metrics, the latency and error rate in PluginInfo), per station
            self._observe(t.name, BALANCE_FUNCTION, "ok" if outcome.usable else "invalid" if outcome.invalid else
                          outcome.error_type or outcome.status, time.perf_counter() - t0)

        await self._reg.loader.wait_all(self.config.timeout if timeout is None else timeout)  # loading in the background
        targets = sorted(self.targets(), key=lambda t: (-t.priority, t.name))
        self._flights.forget({t.name for t in targets})
        async with anyio.create_task_group() as tg:
            for t in targets:
                tg.start_soon(one, t)
        ordered = [results[t.name] for t in targets]
        self._last.remember(ordered)
        self._writer.add(ordered, await self._alert(ordered), self._tasks())
        return ordered

    def targets(self) -> list[Target]:
        """Every station: each balance plugin's own (unless the plugin serves stations and has no
        config of its own), then each station of a provider plugin. A usage-script station is a
        plugin of its own, so it comes first. A disabled plugin's stations are left out. A usage
        script is a balance plugin before it loads, or when it fails to: listed, with its error."""
        newest = self._reg.newest(r for r in self._reg.records  # a plugin turned off is left out
                                  if (BALANCE_CAPABILITY in r.manifest.capabilities if r.manifest is not None
                                      else r.source.usage_script is not None)
                                  and r.state != "disabled")
        stations = self.stations.all()
        served = {s.plugin for s in stations.values() if s.plugin}
        out = [Target(pid, (r.manifest.name if r.manifest else None) or pid, pid, r)
               for pid, r in newest.items() if pid not in served or self._configured(pid)]
        off = {r.id for r in self._reg.records if r.state == "disabled"}
        ids = {r.id for r in self._reg.records}
        for s in stations.values():
            if s.plugin is None:  # a usage script: the plugin of its name (in ``out`` above) is the station,
                if s.name not in newest and s.name not in off:  # or, not loaded, said (not left out)
                    out.append(Target(s.name, s.title or s.name, s.name, None, station=True))
                continue
            if s.name in ids:  # the plugin's own station wins (stations lists why)
                _warn.warning(f"clash:{s.name}", "station %s: a plugin has that id; rename the station", s.name)
            elif s.plugin not in off:
                out.append(Target(s.name, s.title or s.name, s.plugin, newest.get(s.plugin), station=True))
        return out

    def _configured(self, pid: str) -> bool:
        """The plugin has a config of its own (a damaged stored one counts: asked, it says why)."""
        try:
            return bool(self._reg.raw_config(pid))
        except StateError:
            return True

    async def _ask(self, t: Target, budget: float, refresh: bool) -> tuple[Any, float, bool]:
        """One station's queryBalance, with its own config and its own breaker."""
        r = t.record
        if r is None:
            if t.station and t.plugin == t.name:  # a usage-script station whose script did not load
                why = next((x.error for x in self._reg.records if x.id == t.name and x.error), "not loaded yet")
                raise PluginUnavailable(f"station {t.name}: its usage script: {why}", plugin=t.plugin)
            raise PluginUnavailable(f"station {t.name}: its provider plugin {t.plugin!r} is not installed "
                                    "(or has no \"balance\" capability)", plugin=t.plugin)
        if not t.station:
            config = r.pool.spec.config if r.pool is not None else None
            return await self._flights.ask(t.name, (r.pool, config), lambda: self._run(
                r.key, BALANCE_FUNCTION, [config], budget, 0, refresh))
        if t.name in r.station_errors:
            raise InvalidConfig(f"station {t.name}: {r.station_errors[t.name]}", plugin=t.plugin)
        config = r.station_configs.get(t.name)
        if config is None:  # added since the provider's pool started: it is being restarted
            raise PluginUnavailable(f"station {t.name}: its provider {t.plugin} is restarting to serve it; "
                                    "ask again in a moment", plugin=t.plugin)
        return await self._flights.ask(t.name, (r.pool, config), lambda: self._run(
            r.key, BALANCE_FUNCTION, [config], budget, 0, refresh, scope=station_key(t.name)))

    def _thresholds(self) -> Callable[[str], float | None]:
        """Each station's low_balance: its own, else its provider plugin's, else the default."""
        stations = self.stations.all()

        def threshold(name: str) -> float | None:
            station = stations.get(name)
            if station is not None and station.low_balance is not None:
                return station.low_balance
            return self._plugin_threshold(station.provider if station is not None else name)
        return threshold

    async def _alert(self, results: list[BalanceResult]) -> list[Alert]:
        """Say what changed (alerts.py): logged and delivered at once, in the background; the
        alerts returned are recorded by the history writer (a hung database holds no answer)."""
        async with self._replay:  # one read back; a query meanwhile waits for it, never judges against none
            if self._alerts is None:  # what was said before this start (bounded by the timeout)
                try:
                    said = await anyio.to_thread.run_sync(lambda: self._history.read_alerts(limit=100_000))
                except StateError as exc:  # the answers still count; judged once it can be read
                    _warn.warning("alerts", "balance alerts: %s", exc.message)
                    return []
                self._alerts = AlertState()
                self._alerts.replay(said)
        alerts = self._alerts.judge(results, self._thresholds(), dt.datetime.now(dt.UTC))
        for a in alerts:
            log.warning("balance alert: %s %s: %s", a.provider, a.kind, a.message)
        if (tg := self._tasks()) is not None:
            self._deliveries.add(alerts, tg)
        return alerts

    async def flush(self) -> None:
        """At close: the answers and alerts not yet in the history are written, and the alerts
        not yet delivered are, both within [balances] history_flush."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._writer.flush, self.config.history_flush)
            tg.start_soon(self._deliveries.flush, self.config.history_flush)

    async def balance_alerts(self, provider: str | None = None, *, limit: int = 1000) -> list[Alert]:
        """The alerts said so far (low balance, recovered, failing), oldest first."""
        await self._writer.settled(self.config.history_flush)  # the alerts of the queries before it
        return await anyio.to_thread.run_sync(lambda: self._history.read_alerts(provider, limit=limit))

    async def balance_history(self, provider: str | None = None, *, since: dt.datetime | None = None,
                              until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]:
        """The recorded balances (successful, freshly asked queries), oldest first: of one
        provider (plugin id) or all, within [since, until], at most ``limit`` newest points."""
        await self._writer.settled(self.config.history_flush)  # the points of the queries before it
        return await anyio.to_thread.run_sync(
            lambda: self._history.read(provider, since=since, until=until, limit=limit))


__all__ = ["Balances"]
