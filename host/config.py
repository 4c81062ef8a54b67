"""Host configuration: typed sections with defaults that work with no file at all."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .errors import InvalidConfig
from .permissions import Permissions
from .protocol import DEFAULT_MAX_FRAME


class PoolConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Workers of one plugin."""

    min_workers: int = 1
    max_workers: int = 4
    max_inflight: int = 1          # calls in flight per worker
    idle_timeout: float = 60.0     # seconds before a worker above min_workers is stopped
    max_calls_per_worker: int = 0  # recycle a worker after this many calls; 0 = never
    restart_backoff: float = 0.1   # first delay after consecutive crashes, doubled each time
    restart_backoff_max: float = 5.0
    crash_loop_threshold: int = 5  # crashes within crash_loop_window put the plugin in `error`
    crash_loop_window: float = 60.0
    drain_timeout: float = 10.0    # wait this long for calls in flight on close


class WorkerLimits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Per-worker deadlines and resource caps."""

    call_timeout: float = 30.0
    handshake_timeout: float = 10.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 10.0
    cancel_grace: float = 1.0      # a cancelled call must settle within this, or the worker dies
    shutdown_grace: float = 2.0
    heap_mb: int = 128             # V8 old-space cap
    data_limit_mb: int | None = 4096  # RLIMIT_DATA: bounds ArrayBuffers, which the heap cap does not
    cpu_seconds: int | None = None    # RLIMIT_CPU backstop
    max_frame: int = DEFAULT_MAX_FRAME
    max_log_entries: int = 1000
    max_log_bytes: int = 1024 * 1024
    stderr_tail_bytes: int = 4096


class ExecuteConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Ad-hoc code execution (seed 001's Isolate contract)."""

    pooled: bool = True            # warm pooled workers; False = a fresh worker per call
    min_workers: int = 0
    max_workers: int = 4
    idle_timeout: float = 120.0
    max_calls_per_worker: int = 200  # each distinct code string stays in the module cache
    timeout: float = 5.0
    max_code_bytes: int = 1024 * 1024


class HealthConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Calls to each plugin's optional ``healthCheck`` export; a failure marks it `degraded`."""

    interval: float = 30.0   # seconds between rounds; 0 disables
    timeout: float = 5.0


class ReloadConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Hot reload: the plugin directories are polled for new, changed and removed plugins."""

    enabled: bool = True
    interval: float = 1.0  # seconds between polls


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``emit``: how long each plugin's ``onEvent`` may take."""

    timeout: float = 5.0


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Overrides for one plugin (``[plugins.<id>]``)."""

    pool: PoolConfig | None = None
    limits: WorkerLimits | None = None
    config: dict[str, object] = {}


def _default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return os.path.join(base, "plugin-host")


class HostConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Everything PluginHost needs; every field has a working default."""

    plugins_dir: str | list[str] = "plugins"
    state_dir: str = msgspec.field(default_factory=_default_state_dir)
    deno_path: str | None = None   # default: the binary of the `deno` PyPI wheel
    runtime_entry: str | None = None  # default: worker_runtime/worker.ts shipped with host
    pool: PoolConfig = msgspec.field(default_factory=PoolConfig)
    limits: WorkerLimits = msgspec.field(default_factory=WorkerLimits)
    execute: ExecuteConfig = msgspec.field(default_factory=ExecuteConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)
    reload: ReloadConfig = msgspec.field(default_factory=ReloadConfig)
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    plugins: dict[str, PluginSettings] = {}

    def __post_init__(self) -> None:
        _check_pool(self.pool, "pool")
        for pid, s in self.plugins.items():
            if s.pool:
                _check_pool(s.pool, f"plugins.{pid}.pool")

    @property
    def plugin_dirs(self) -> list[Path]:
        dirs = [self.plugins_dir] if isinstance(self.plugins_dir, str) else self.plugins_dir
        return [Path(d).resolve() for d in dirs]

    def pool_for(self, plugin_id: str) -> PoolConfig:
        s = self.plugins.get(plugin_id)
        return s.pool if s and s.pool else self.pool

    def limits_for(self, plugin_id: str) -> WorkerLimits:
        s = self.plugins.get(plugin_id)
        return s.limits if s and s.limits else self.limits


def _check_pool(p: PoolConfig, where: str) -> None:
    if p.min_workers < 0 or p.max_workers < 1 or p.min_workers > p.max_workers:
        raise InvalidConfig(f"{where}: need 0 <= min_workers <= max_workers and max_workers >= 1")
    if p.max_inflight < 1:
        raise InvalidConfig(f"{where}: max_inflight must be >= 1")


__all__ = [
    "EventsConfig",
    "ExecuteConfig",
    "HealthConfig",
    "ReloadConfig",
    "HostConfig",
    "Permissions",
    "PluginSettings",
    "PoolConfig",
    "WorkerLimits",
]
