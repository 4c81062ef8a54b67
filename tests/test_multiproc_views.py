"""One plugin's status over the ``serve --processes`` processes (multiproc_views.merge): the
counters summed, the workers listed with their process, the circuit the worst of them, latency
and error rate over the recent calls of all, and each process's part."""

from __future__ import annotations

from host.info import PluginInfo, WorkerInfo
from host.multiproc_views import merge


def _info(calls: int, circuit: str, cache_entries: int | None, exits: dict[str, int], pid: int) -> PluginInfo:
    worker = WorkerInfo(index=1, pid=pid, state="ready", calls=calls, inflight=0, last_heartbeat=None,
                        started_at=0.0)
    return PluginInfo(id="p", state="running", version="1.0.0", name="P", path="p.js", error=None, exports=["f"],
                      capabilities=[], priority=0, reload_error=None, calls=calls, crashes=1, restarts=0,
                      timeouts=0, workers=[worker], circuit=circuit, cache_entries=cache_entries,
                      worker_exits=exits, latency_p50_ms=1.0, error_rate=0.0)


def test_counters_sum_workers_keep_their_process_and_the_worst_circuit_shows():
    out = merge([(1, _info(3, "closed", 2, {"crash": 1}, 101), [(0.001, True)] * 3),
                 (0, _info(5, "open", 4, {"crash": 2, "memory": 1}, 100), [(0.009, False)] * 5)])
    assert (out.calls, out.crashes, out.cache_entries) == (8, 2, 6)
    assert out.worker_exits == {"crash": 3, "memory": 1}
    assert [(w.process, w.pid) for w in out.workers] == [(1, 101), (0, 100)]
    assert out.circuit == "open"
    assert (out.latency_p50_ms, out.error_rate) == (9.0, 0.625)  # over the 8 recent calls of both
    assert [(p.process, p.calls, p.circuit, p.workers) for p in out.processes] == [(0, 5, "open", 1),
                                                                                  (1, 3, "closed", 1)]


def test_a_shared_cache_counted_by_none_stays_uncounted():
    out = merge([(0, _info(1, "half_open", None, {}, 100), []), (1, _info(1, "closed", 3, {}, 101), [])])
    assert out.cache_entries is None and out.circuit == "half_open"
    assert (out.latency_p50_ms, out.error_rate) == (None, None)
