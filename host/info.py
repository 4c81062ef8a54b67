"""Snapshots of plugins and workers, as the API returns them."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .plugins.lifecycle import SERVING, Plugin
from .policy.rules import PluginPolicy


def json_default(obj: Any) -> Any:
    """``enc_hook`` for JSON output (API and CLI): bytes as hex, anything else as its str."""
    return obj.hex() if isinstance(obj, bytes) else str(obj)


class WorkerInfo(msgspec.Struct):
    index: int
    pid: int | None
    state: str
    calls: int
    inflight: int
    last_heartbeat: float | None  # unix time of the last pong
    started_at: float              # unix time
    process: int | None = None     # the ``serve --processes`` process it belongs to (None: one process)


class ProcessPart(msgspec.Struct):
    """One ``serve --processes`` process's part of a plugin (multiproc_views.py)."""

    process: int
    state: str
    error: str | None
    circuit: str
    calls: int
    workers: int
    latency_p50_ms: float | None
    error_rate: float | None


class PluginInfo(msgspec.Struct):
    id: str
    state: str
    version: str | None
    name: str | None
    path: str
    error: str | None
    exports: list[str]
    capabilities: list[str]
    priority: int
    reload_error: str | None
    calls: int
    crashes: int
    restarts: int
    timeouts: int
    workers: list[WorkerInfo]
    circuit: str = "closed"      # the breaker: closed, open or half_open
    circuit_opens: int = 0       # times the breaker opened
    circuit_rejected: int = 0    # calls refused with CircuitOpen
    rate_limited: int = 0        # calls refused with RateLimited
    rate_delayed: int = 0        # calls that waited for a rate-limit slot
    retries: int = 0             # attempts beyond the first
    queued: int = 0              # calls waiting for a concurrency slot (policy caps)
    running: int = 0             # calls admitted: on a worker or waiting for a free one
    cache_hits: int = 0          # calls answered from a fresh cached result
    cache_stale: int = 0         # calls answered from a stale one (refreshed in the background)
    cache_misses: int = 0        # cacheable calls that went to the plugin
    cache_refreshes: int = 0     # background refreshes of stale results
    cache_entries: int | None = None  # results held (None: a shared redis cache, not counted)
    egress_requests: int = 0     # fetches through the egress proxy (security.egress_proxy)
    egress_bytes_in: int = 0     # bytes read from the targets
    egress_bytes_out: int = 0    # bytes written to the targets
    egress_refused: int = 0      # requests the proxy refused (private address, host not granted)
    worker_exits: dict[str, int] = {}  # workers lost by reason: crash, memory, cpu, timeout, ...
    latency_p50_ms: float | None = None  # median latency of its last 200 calls
    error_rate: float | None = None      # share of those that failed (0..1)
    permissions: dict[str, Any] = {}  # as declared in its metadata (nothing granted: {})
    permission_findings: list[str] = []  # what strict mode objects to in them (security.strict)
    # grants a newer version asks for beyond the approved ones: it waits for `approve`
    pending_approval: list[str] = []
    spares: list[int] = []  # pids of its hot spares (PoolConfig.spares): ready, not serving
    # in crash-loop `error`: the unix time it is tried again by itself ([pool] crash_loop_cooldown)
    next_retry: float | None = None
    crash_loop_retries: int = 0  # times it was tried again after a crash loop
    processes: list[ProcessPart] = []  # serve --processes: each process's part (the rest sums them)


class EventReply(msgspec.Struct):
    """One plugin's answer to ``emit``: its reply, or the error it raised (``error`` is
    ``{"type", "message"}``)."""

    plugin: str
    version: str | None
    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None
    duration: float = 0.0  # milliseconds


def plugin_info(r: Plugin, policy: PluginPolicy | None = None, queued: int = 0,
                running: int = 0, cache_entries: int | None = 0) -> PluginInfo:
    """A snapshot of one plugin version: state, version, each worker's pid, state, heartbeat,
    and what its call policies did (``policy`` belongs to the plugin id: all its versions)."""
    now_wall, now_mono = time.time(), time.monotonic()
    pool, m = r.pool, r.manifest
    workers = pool.workers if pool is not None and r.state in SERVING else []
    info = PluginInfo(
        id=r.id, state=r.state, version=r.version, name=m.name if m else None,
        path=str(r.source.module), error=r.error if r.state in ("error", "degraded", "pending", "disabled") else None,
        pending_approval=list(r.pending),
        exports=list(r.exports), capabilities=list(m.capabilities) if m else [],
        reload_error=r.reload_error, priority=m.priority if m else 0,
        calls=pool.calls if pool else 0, crashes=pool.crashes if pool else 0,
        restarts=pool.restarts if pool else 0, timeouts=pool.timeouts if pool else 0,
        worker_exits=dict(pool.exits) if pool else {},
        spares=[w.pid for w in pool.spares if w.pid is not None] if pool and r.state in SERVING else [],
        next_retry=pool.cooldown.next_retry if pool and r.state == "error" else None,
        crash_loop_retries=pool.cooldown.retries if pool else 0,
        queued=queued, running=running, cache_entries=cache_entries,
        workers=[
            WorkerInfo(index=w.index, pid=w.pid, state=w.state, calls=w.calls, inflight=w.load,
                       last_heartbeat=w.last_heartbeat, started_at=now_wall - (now_mono - w.started_at))
            for w in workers
        ],
    )
    if policy is not None:
        b = policy.breaker
        info.circuit, info.circuit_opens, info.circuit_rejected = b.state, b.opens, b.rejected
        info.rate_limited, info.rate_delayed = policy.rate_limited, policy.rate_delayed
        info.retries = policy.retries
        info.cache_hits, info.cache_stale = policy.cache_hits, policy.cache_stale
        info.cache_misses, info.cache_refreshes = policy.cache_misses, policy.cache_refreshes
    return info


def add_grants(info: PluginInfo, r: Plugin, grants: Any, max_net_hosts: int) -> None:
    """The grants the plugin's workers get (None: not started) and what strict mode finds in them."""
    if grants is None:
        return
    info.permissions = msgspec.to_builtins(grants)
    info.permission_findings = (r.manifest.findings(max_net_hosts=max_net_hosts, grants=grants)
                                if r.manifest is not None else grants.findings(max_net_hosts=max_net_hosts))


def add_egress(info: PluginInfo, c: Any) -> None:
    """The egress proxy's counters of the plugin."""
    info.egress_requests, info.egress_refused = c.requests, c.refused
    info.egress_bytes_in, info.egress_bytes_out = c.bytes_in, c.bytes_out
