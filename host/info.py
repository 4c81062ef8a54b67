"""Snapshots of plugins and workers, as the API returns them."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .lifecycle import Plugin


class WorkerInfo(msgspec.Struct):
    index: int
    pid: int | None
    state: str
    calls: int
    inflight: int
    last_heartbeat: float | None  # unix time of the last pong
    started_at: float              # unix time


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


class EventReply(msgspec.Struct):
    """One plugin's answer to ``emit``: its reply, or the error it raised (``error`` is
    ``{"type", "message"}``)."""

    plugin: str
    version: str | None
    ok: bool
    value: Any = None
    error: dict[str, Any] | None = None
    duration: float = 0.0  # milliseconds


def plugin_info(r: Plugin) -> PluginInfo:
    """A snapshot of one plugin version: state, version, and each worker's pid, state, heartbeat."""
    now_wall, now_mono = time.time(), time.monotonic()
    pool, m = r.pool, r.manifest
    workers = pool.workers if pool is not None and r.state in ("running", "degraded") else []
    return PluginInfo(
        id=r.id, state=r.state, version=r.version, name=m.name if m else None,
        path=str(r.source.module), error=r.error if r.state in ("error", "degraded") else None,
        exports=list(r.exports), capabilities=list(m.capabilities) if m else [],
        reload_error=r.reload_error, priority=m.priority if m else 0,
        calls=pool.calls if pool else 0, crashes=pool.crashes if pool else 0,
        restarts=pool.restarts if pool else 0, timeouts=pool.timeouts if pool else 0,
        workers=[
            WorkerInfo(index=w.index, pid=w.pid, state=w.state, calls=w.calls, inflight=w.load,
                       last_heartbeat=w.last_heartbeat, started_at=now_wall - (now_mono - w.started_at))
            for w in workers
        ],
    )
