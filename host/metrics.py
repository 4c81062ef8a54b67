"""Prometheus metrics of one PluginHost (prometheus_client, a registry of its own): calls by
plugin, function and outcome with latency histograms, observed as calls end; the rest (workers
alive, restarts by reason, timeouts, rate limiting, circuit states, cache, egress) read from the
host's snapshots at scrape time, so the call path pays for two counter updates only: plain
integers and a bisect here (prometheus_client's own Counter and Histogram take a lock per
update and walk the buckets in Python, ~1 µs a call), turned into samples at each scrape."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .errors import FunctionNotFound, HostError, PluginNotFound, callers_own
from .plugins.lifecycle import SERVING

if TYPE_CHECKING:
    from .info import PluginInfo

Snapshot = Callable[[], "list[PluginInfo]"]  # what the host reports of its plugins, read at each scrape

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; warm calls take ~0.1 ms, plugins doing network I/O up to their timeout.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RECENT = 200  # calls per plugin behind PluginInfo.latency_p50_ms and error_rate
UNKNOWN = "(unknown)"  # the label of names that are not installed (bounded label sets)
_CIRCUIT_STATES = ("closed", "open", "half_open")


# Outcomes that say how long the caller would wait, or that the host's own shared storage failed,
# not how the plugin did: counted, but left out of the plugin's latency and error rate (a client
# with a 1 ms timeout, or a Redis down, is no plugin failing).
CALLERS_OWN = frozenset({"Cancelled", "CallerTimeout", "PolicyStorageError"})


def outcome_of(exc: BaseException) -> str:
    """A failed call's ``outcome`` label: its error type; ``CallerTimeout`` for a deadline the
    caller chose shorter than the plugin's own, ``Cancelled`` for a caller that went away."""
    if not isinstance(exc, HostError):
        return "Cancelled"
    return "CallerTimeout" if callers_own(exc) else type(exc).__name__


def window_stats(recent: Collection[tuple[float, bool]]) -> tuple[float | None, float | None]:
    """(p50 latency in ms, share of failed calls) of (seconds, ok) calls; (None, None) of none."""
    if not recent:
        return None, None
    times = sorted(t for t, _ in recent)
    failed = sum(1 for _, ok in recent if not ok)
    return round(times[len(times) // 2] * 1000, 3), round(failed / len(recent), 4)


def failure_labels(plugin: str, fn: str, exc: BaseException, record: Callable[[str], Any]) -> tuple[str, str]:
    """The (plugin, function) labels of a failed call: a name the plugin does not export is
    UNKNOWN, whatever the failure (before, only FunctionNotFound was: a call refused before the
    function was looked up, by a caller's short timeout, a disabled plugin, a rate limit or an
    open breaker, kept the caller's name, so 600 calls with made-up names on a disabled plugin
    made 600 series, 1.1 MB of /metrics, held for the host's life). ``record``: the registry's
    lookup of a plugin version. Only failed calls pay for it."""
    if isinstance(exc, PluginNotFound):
        return UNKNOWN, UNKNOWN
    if isinstance(exc, FunctionNotFound):
        return plugin, UNKNOWN
    try:
        r = record(plugin)
    except HostError:
        return UNKNOWN, UNKNOWN
    return plugin, fn if r.exported(fn) else UNKNOWN


class HostMetrics:
    """Counters the call path feeds (``observe``), and at each scrape what ``snapshot`` reports."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls = _Calls()
        self.registry.register(self._calls)
        self.registry.register(_Snapshot(snapshot))
        self._recent: dict[str, deque[tuple[float, bool]]] = {}  # plugin -> last RECENT (seconds, ok)

    def observe(self, plugin: str, function: str, outcome: str, seconds: float) -> None:
        key = (plugin, function, outcome)
        series = self._calls.series.get(key)
        if series is None:
            series = self._calls.add(key)
        series[0] += 1
        hist = series[1]
        hist[bisect_left(BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        hist[-1] += seconds
        if outcome in CALLERS_OWN:
            return
        recent = self._recent.get(plugin)
        if recent is None:
            recent = self._recent[plugin] = deque(maxlen=RECENT)
        recent.append((seconds, outcome == "ok"))

    def recent_stats(self, plugin: str) -> tuple[float | None, float | None]:
        """(p50 latency in ms, share of failed calls) over the plugin's last RECENT calls;
        (None, None) before its first."""
        return window_stats(self._recent.get(plugin, ()))

    def recent(self, plugin: str) -> list[tuple[float, bool]]:
        """The plugin's last RECENT calls: (seconds, ok) each."""
        return list(self._recent.get(plugin, ()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Calls(Collector):
    """``plugin_host_calls_total`` by (plugin, function, outcome) and the latency histogram by
    (plugin, function), as prometheus_client's Counter and Histogram would write them."""

    def __init__(self) -> None:
        # (plugin, function, outcome) -> [count, the histogram of (plugin, function), created]
        self.series: dict[tuple[str, str, str], list[Any]] = {}
        # (plugin, function) -> [count per bucket (not cumulative; the last: +Inf), sum], created
        self.hists: dict[tuple[str, str], tuple[list[float], float]] = {}

    def add(self, key: tuple[str, str, str]) -> list[Any]:
        hist = self.hists.get(key[:2])
        if hist is None:
            hist = self.hists[key[:2]] = ([0] * (len(BUCKETS) + 1) + [0.0], time.time())
        series = self.series[key] = [0, hist[0], time.time()]
        return series

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("plugin_host_calls", "Calls by plugin, function and outcome (ok, the "
                                    "error type, CallerTimeout: the caller's own shorter deadline, Cancelled)", labels=["plugin", "function", "outcome"])
        for key, (count, _, created) in list(self.series.items()):
            calls.add_metric(list(key), count, created=created)
        hist = HistogramMetricFamily("plugin_host_call_duration_seconds", "Call latency, queueing and "
                                     "retries included", labels=["plugin", "function"])
        bounds = [floatToGoString(b) for b in (*BUCKETS, float("inf"))]
        for key, (counts, created) in list(self.hists.items()):
            counts = list(counts)
            cumulative, buckets = 0, []
            for bound, n in zip(bounds, counts[:-1], strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            hist.add_metric(list(key), buckets, counts[-1])
            hist.add_sample(hist.name + "_created", dict(zip(("plugin", "function"), key, strict=True)), created)
        yield calls
        yield hist


class _Snapshot(Collector):
    """Gauges and counters the host already keeps, read when Prometheus scrapes."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        label = ["plugin", "version"]
        alive = GaugeMetricFamily("plugin_host_workers", "Worker processes alive", labels=label)
        state = GaugeMetricFamily("plugin_host_plugin_up", "1 if the plugin is running or degraded",
                                  labels=[*label, "state"])
        restarts = CounterMetricFamily("plugin_host_worker_restarts", "Workers started to replace "
                                       "lost ones", labels=label)
        exits = CounterMetricFamily("plugin_host_worker_exits", "Workers lost, by reason (crash, "
                                    "memory, cpu, timeout, heartbeat, protocol, eof, ...)",
                                    labels=[*label, "reason"])
        timeouts = CounterMetricFamily("plugin_host_call_timeouts", "Calls killed at their deadline",
                                       labels=label)
        limited = CounterMetricFamily("plugin_host_rate_limited", "Calls refused by a rate limit",
                                      labels=["plugin"])
        circuit = GaugeMetricFamily("plugin_host_circuit_state", "1 for the breaker's current state",
                                    labels=["plugin", "state"])
        cache = CounterMetricFamily("plugin_host_cache_hits", "Calls answered from the result cache",
                                    labels=["plugin"])
        egress = CounterMetricFamily("plugin_host_egress_bytes", "Bytes through the egress proxy",
                                     labels=["plugin", "direction"])
        seen: set[str] = set()
        for info in self._snapshot():
            v = [info.id, info.version or ""]
            alive.add_metric(v, len(info.workers))
            state.add_metric([*v, info.state], 1.0 if info.state in SERVING else 0.0)
            restarts.add_metric(v, info.restarts)
            timeouts.add_metric(v, info.timeouts)
            for reason, n in sorted(info.worker_exits.items()):
                exits.add_metric([*v, reason], n)
            if info.id in seen:  # policies belong to the plugin id, not to each version
                continue
            seen.add(info.id)
            limited.add_metric([info.id], info.rate_limited)
            for s in _CIRCUIT_STATES:
                circuit.add_metric([info.id, s], 1.0 if info.circuit == s else 0.0)
            cache.add_metric([info.id], info.cache_hits)
            egress.add_metric([info.id, "in"], info.egress_bytes_in)
            egress.add_metric([info.id, "out"], info.egress_bytes_out)
        yield from (alive, state, restarts, exits, timeouts, limited, circuit, cache, egress)
