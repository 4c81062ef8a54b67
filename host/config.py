"""Host configuration: typed sections with defaults that work with no file at all."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from .balances.alerts import AlertsConfig
from .balances.stations import StationConfig, check_station
from .config_errors import check_directory_name
from .config_types import MAX_COUNT, Amount, Count, Delay, Seconds, checked, nul_in
from .errors import InvalidConfig
from .execute_config import CryptoToolConfig, ExecuteConfig, check_execute
from .plugins.dev import dev_entries
from .plugins.package_archive import PackagesConfig
from .policy.config import (
    CACHE_ALL,
    NEVER_CACHED,
    RETRYABLE,
    STORAGE_SCHEMES,
    BreakerConfig,
    CacheConfig,
    PolicyConfig,
    RateLimitConfig,
    RetryConfig,
    check_limit,
    check_policy,
    check_storage,
    redact_uri,
    storage_failure,
)
from .protocol import DEFAULT_MAX_FRAME
from .security.grant_entries import problems
from .security.permission_names import override_hint
from .security.permissions import KINDS, Permissions
from .server_config import ServerConfig, check_server
from .state_config import StateConfig, check_state

T = TypeVar("T")
MIN_MAX_FRAME = 64 * 1024  # frames must hold a handshake and a modest result
StrictMode = Literal["off", "warn", "refuse"]  # what strict mode does with risky grants


class PoolConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Workers of one plugin."""

    min_workers: Amount = 1
    max_workers: Count = 4
    max_inflight: Count = 1         # calls in flight per worker
    idle_timeout: Delay = 60.0     # seconds before a worker above min_workers is stopped
    max_calls_per_worker: Amount = 0  # recycle a worker after this many calls; 0 = never
    restart_backoff: Delay = 0.1   # first delay after consecutive crashes, doubled each time
    restart_backoff_max: Delay = 5.0
    crash_loop_threshold: Count = 5  # crashes within crash_loop_window put the plugin in `error`
    crash_loop_window: Seconds = 60.0
    # a crash loop is tried again after this (doubled by each crash loop in a row, up to the max);
    # 0: it stays in `error` until restarted (pool_cooldown.py)
    crash_loop_cooldown: Delay = 30.0
    crash_loop_cooldown_max: Delay = 300.0
    drain_timeout: Delay = 10.0    # wait this long for calls in flight on close
    # Hot spares: workers started and ready (plugin loaded) but not serving, beyond max_workers.
    # A crash, a recycle or a scale-up takes one at once; a new one starts in the background.
    spares: Amount = 0


# RLIMIT_DATA a Web Worker needs to start and do some work: V8 reserves each isolate's code range
# against the limit (measured with Deno 2.9: two Workers need about 1700 MiB, four about 3300).
WEB_WORKER_DATA_MB = 704
MAX_DATA_MB = 2**40  # MiB (an exbibyte): RLIMIT_DATA in bytes, Web Workers' share added, fits a C long
MAX_WEB_WORKERS = 1024


class WorkerLimits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Per-worker deadlines and resource caps, and the cap on the plugin's storage (given per
    plugin with ``[plugins.<id>.limits]``, like the rest)."""

    call_timeout: Seconds = 30.0
    handshake_timeout: Seconds = 10.0
    heartbeat_interval: Seconds = 1.0
    heartbeat_timeout: Seconds = 10.0
    cancel_grace: Delay = 1.0     # a cancelled call must settle within this, or the worker dies
    shutdown_grace: Delay = 2.0
    # onStop / onConfigChange may take this long; past it the worker is killed (and, for a
    # config change, replaced by one started with the new config): nothing waits on a hook.
    hook_timeout: Seconds = 5.0
    heap_mb: Annotated[int, Meta(ge=16, le=MAX_COUNT)] = 128            # V8 old-space cap
    data_limit_mb: Annotated[int, Meta(le=MAX_DATA_MB)] | None = 1024  # RLIMIT_DATA: bounds ArrayBuffers, which the heap cap does not
    cpu_seconds: Count | None = None   # RLIMIT_CPU backstop
    max_frame: Annotated[int, Meta(ge=MIN_MAX_FRAME, le=MAX_COUNT)] = DEFAULT_MAX_FRAME
    max_log_entries: Amount = 1000
    max_log_bytes: Amount = 1024 * 1024
    max_result_bytes: Count = 8 * 1024 * 1024  # a bigger result fails with PayloadTooLarge
    max_web_workers: Annotated[int, Meta(ge=0, le=MAX_WEB_WORKERS)] = 2      # Workers (V8 isolates) a plugin may keep alive at once
    stderr_tail_bytes: Amount = 4096
    # Host calls (cache, storage, channel, ...) a worker may have in flight: the runtime refuses
    # more with ResourceLimitExceeded; a worker that sends more anyway is killed.
    max_host_calls: Count = 64
    # Bytes the host lets wait for a worker to read before it sends (and even encodes) another
    # reply to the worker's own requests: a worker that stops reading cannot make the host hold
    # more than this plus one frame, and one that reads none of it for heartbeat_timeout is killed.
    max_write_buffer_bytes: Annotated[int, Meta(ge=64 * 1024, le=MAX_COUNT)] = 4 * 1024 * 1024
    # Everything the plugin keeps in its persistent storage (ctx.storage), keys and values as
    # stored plus a little per entry: a storage.set past it fails with StorageFull.
    storage_max_bytes: Amount = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        # the host looks every heartbeat_interval for an answer within heartbeat_timeout: one not
        # longer than the interval finds every idle worker silent and kills it at each look (a value
        # that is no number is HostConfig's to refuse, naming the field: not a TypeError here)
        numbers = all(type(v) in (int, float) for v in (self.heartbeat_timeout, self.heartbeat_interval))
        if numbers and self.heartbeat_timeout <= self.heartbeat_interval:
            raise InvalidConfig(f"limits.heartbeat_timeout ({self.heartbeat_timeout:g} s) must be longer than "
                                f"limits.heartbeat_interval ({self.heartbeat_interval:g} s), or every idle worker "
                                "is taken for dead and killed; make it at least twice the interval")

    @property
    def rlimit_data_mb(self) -> int | None:
        """The RLIMIT_DATA a worker gets: ``data_limit_mb`` plus WEB_WORKER_DATA_MB for each
        Worker it may start, since every V8 isolate reserves its code range against the limit."""
        if self.data_limit_mb is None:
            return None
        return self.data_limit_mb + WEB_WORKER_DATA_MB * self.max_web_workers


class HealthConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Calls to each plugin's optional ``healthCheck`` export; a failure marks it `degraded`."""

    interval: Delay = 30.0   # seconds between rounds; 0 disables
    timeout: Seconds = 5.0


class ReloadConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Hot reload: the plugin directories are polled for new, changed and removed plugins."""

    enabled: bool = True
    interval: Seconds = 1.0  # seconds between polls
    # A plugin found changed, gone or new is acted on once its files have not changed for this
    # long (an editor's save or a copy still writing), at most ``interval`` later (watch.py).
    settle: Delay = 0.1


class EventsConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``emit``: how long each plugin's ``onEvent`` may take."""

    timeout: Seconds = 5.0


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Overrides for one plugin (``[plugins.<id>]``); a section given replaces the default one."""

    # false: the plugin is loaded and listed but not started until enabled (plugins/switches.py)
    enabled: bool | None = None
    # The operator narrowing what the plugin declares: {kind: true | false | [entries]}; a kind
    # named keeps only what both allow, e.g. {net = ["api.example.com"], run = false}.
    permissions: dict[str, bool | list[str] | None] | None = None
    pool: PoolConfig | None = None
    limits: WorkerLimits | None = None
    config: dict[str, object] = {}
    rate_limit: RateLimitConfig | None = None
    retry: RetryConfig | None = None
    breaker: BreakerConfig | None = None
    max_concurrent: Amount | None = None  # calls admitted at once; None: the policy's; 0: no cap
    cache: CacheConfig | None = None
    # Lift the deny list of loopback and private addresses for this plugin (a relay station on
    # the LAN, a local fake in tests): the operator's opt-in, whatever the plugin declares.
    allow_private_network: bool = False
    # A balance below this raises a low_balance alert ([balances.alerts]); None: the default there.
    low_balance: float | None = None
    # "127.0.0.1:9229": run this plugin as one worker under the Deno inspector (loopback only),
    # with no heartbeat deadline and an hour per call, so that it can sit at a breakpoint.
    inspect: str | None = None
    # true: --inspect-brk, the worker runs nothing (the handshake included) until a debugger
    # attaches and resumes; it may wait a day for that.
    inspect_brk: bool = False


def check_override(override: dict[str, Any], where: str) -> None:
    """``[plugins.ID.permissions]``: known kinds, each true, false or a list of valid entries."""
    if unknown := sorted(set(override) - set(KINDS)):
        raise InvalidConfig(f"{where}.{unknown[0]}: not a permission kind{override_hint(unknown[0], where)}; "
                            f"kinds: {', '.join(KINDS)}")
    try:
        perms = Permissions.parse({k: v for k, v in override.items() if isinstance(v, list)}, where=where)
    except InvalidConfig as exc:  # "permissions.net: ..." as the setting to change: "plugins.x.permissions.net: ..."
        raise InvalidConfig(f"{where.removesuffix('.permissions')}.{exc.message}") from None
    for kind, entry, why in problems(perms):  # as a manifest's: one Deno reads otherwise is refused
        raise InvalidConfig(f"{where}.{kind}: {entry!r} {why}")


INSPECT_HOSTS = ("127.0.0.1", "localhost", "[::1]")
INSPECT_WAIT = 24 * 3600.0  # seconds a worker under the inspector may sit at a breakpoint unheard
INSPECT_CALL_TIMEOUT = 3600.0  # a call's default deadline under the inspector (a stepped call is slow)


def check_inspect(address: str, where: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or host not in INSPECT_HOSTS or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidConfig(f"{where}: the inspector address must be 127.0.0.1:PORT "
                            f"(loopback only), got {address!r}")


class UsageScriptConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[usage_scripts.<id>]``: a cc-switch usage script run as balance plugin ``<id>``, given
    as text (``script``) or as a file (``file``); ``name`` is its display name."""

    script: str | None = None
    file: str | None = None
    name: str | None = None


class BalancesConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``query_balances``: each balance plugin's ``queryBalance`` runs with this timeout, each
    station asked at most once per ``min_interval``; the successful answers are kept
    ``history_days`` in ``<state_dir>/balances.sqlite3`` (0: kept for ever)."""

    timeout: Seconds = 10.0
    history_days: Delay = 365.0
    history_flush: Delay = 10.0  # at close, the answers not yet in the history get this long to be written
    # Seconds within which a station is not asked again: a query (a refresh too) gets its last
    # answer, and concurrent queries share one call (balances/flights.py). 0: every query asks.
    min_interval: Delay = 10.0
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)  # [balances.alerts]
    # Calls in flight per worker of a provider that serves stations ([stations.NAME]), unless
    # [plugins.<id>.pool] says otherwise: a balance query mostly waits on the network, so one
    # worker serves many stations at once.
    station_inflight: Count = 32


class EgressConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[security.egress]``: how the egress proxy shares itself between plugins (host/security/egress.py)."""

    max_connections: Count = 256             # connections whose request head is not read yet
    head_timeout: Seconds = 10.0             # seconds a new connection has to send its head
    max_upstream: Count = 256                # open upstream connections, all plugins together
    max_connections_per_plugin: Count = 32   # per plugin id; more wait in its queue
    max_queued_per_plugin: Amount = 256       # waiting connections per plugin; more get 503 at once
    queue_timeout: Seconds = 30.0            # longest wait for a slot, then 503


class SecurityConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[security]``: how strictly plugin permissions are judged, the audit log, the network
    options and where the key that encrypts secrets at rest comes from."""

    # "off", "warn" (log and record each finding, load anyway) or "refuse" (the plugin goes to
    # `error`): findings are whole-network or whole-filesystem grants, wildcards, more than
    # max_net_hosts hosts, and loopback or private hosts in the net allow list.
    strict: StrictMode = "warn"
    max_net_hosts: Count = 10
    audit_log: str = "audit.jsonl"   # JSON lines, relative to state_dir; "" turns it off
    audit_max_bytes: Annotated[int, Meta(ge=4096, le=MAX_COUNT)] = 10 * 1024 * 1024  # then it is rotated: audit.jsonl.1, .2, ...
    audit_keep: Count = 5             # rotated files kept (the oldest goes)
    https_only: bool = False         # net grants without a port are narrowed to port 443
    egress_proxy: bool = False       # fetch traffic goes through a host-side counting proxy
    max_response_bytes: Count = 10 * 1024 * 1024  # per proxied response (or CONNECT tunnel)
    egress: EgressConfig = msgspec.field(default_factory=EgressConfig)
    secret_key_env: str = "PLUGIN_HOST_SECRET_KEY"  # a Fernet key; else secret_key_file
    secret_key_file: str = "secret.key"  # relative to state_dir; created 0600 on first use


def _check_apart(config: HostConfig) -> None:
    """The /execute db tool's database must not be where the host keeps its own state: code
    with ``tools: ["db"]`` would read every plugin's storage and stored (sealed) configs."""
    from .db_backends import POSTGRES_SCHEMES
    from .db_identity import may_be_same_database

    db = config.execute.database
    if db is None:
        return
    state_db = config.state.database
    if state_db is not None and db.startswith(POSTGRES_SCHEMES) and may_be_same_database(
            db, state_db, settings=("execute.database", "state.database")):
        raise InvalidConfig("execute.database (or $DATABASE_URL) names the same database as state.database, "
                            "or may (libpq's reading; every name of this machine is one host): /execute code "
                            "would read the host's own tables; give /execute a database of its own")
    path = None if "://" in db and not db.startswith("sqlite:///") else db.removeprefix("sqlite://")
    if path:
        real, state = os.path.realpath(path), os.path.realpath(config.state_path)
        if os.path.commonpath([real, state]) == state:
            raise InvalidConfig(f"execute.database ({path}) lies in the state directory: /execute code would read "
                                "the host's own files; give it a database outside state_dir")


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
    policy: PolicyConfig = msgspec.field(default_factory=PolicyConfig)
    balances: BalancesConfig = msgspec.field(default_factory=BalancesConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    plugins: dict[str, PluginSettings] = {}
    usage_scripts: dict[str, UsageScriptConfig] = {}
    stations: dict[str, StationConfig] = {}  # [stations.NAME]: relay stations (balances/stations.py)
    dev_plugins: list[str] = []  # ["name:path"]: plugins run from a source path (plugins/dev.py)
    packages: PackagesConfig = msgspec.field(default_factory=PackagesConfig)  # [packages]: install/update
    state: StateConfig = msgspec.field(default_factory=StateConfig)  # [state]: shared state (PostgreSQL)
    load: Literal["auto", "wait", "background"] = "auto"  # plugins/loading.py; auto: serve's background

    def revalidated(self) -> HostConfig:
        """This config checked again as it is now (a host starts on it): a Struct's fields can be
        set after it was made (``cfg.pool.min_workers = 9`` with max_workers 1), unchecked."""
        self.__post_init__()
        return self

    def __post_init__(self) -> None:
        # Every section is validated here, given as a dict (``HostConfig(pool={"max_workers":
        # 8})``) or as a Struct built in Python, which msgspec does not check on construction:
        # the range constraints of its fields (config_types) hold however it was made.
        # The other fields too: a section given as a str or None, a path as an int, were taken as
        # they came and failed later with an AttributeError (a pathlib.Path is a path: taken as str).
        if where := nul_in(self, ""):
            raise InvalidConfig(f"{where}: holds a NUL character (U+0000), which no path, name or setting may")
        for f in msgspec.structs.fields(self):
            value = _fspath(getattr(self, f.name))
            if f.name in KEYED and isinstance(value, dict):  # {id: section}
                kind = KEYED[f.name]
                if odd := [k for k in value if not isinstance(k, str)]:
                    raise InvalidConfig(f"{f.name}: its keys are names, strings; got {odd[0]!r}")
                setattr(self, f.name, {k: checked(v, kind, f"{f.name}.{k}") for k, v in value.items()})
            else:
                setattr(self, f.name, checked(value, f.type, f.name))
        for name, path in [("state_dir", self.state_dir)] + [("plugins_dir", d) for d in (
                self.plugins_dir if isinstance(self.plugins_dir, list) else [self.plugins_dir])]:
            if isinstance(path, str):
                check_directory_name(name, path)
        if self.load not in ("auto", "wait", "background"):
            raise InvalidConfig(f'load: expected "auto", "wait" or "background", got {self.load!r}')
        _check_pool(self.pool, "pool")
        dev_entries(self.dev_plugins)  # each "name:path" names a plugin that is there
        check_execute(self.execute)
        check_state(self.state)
        _check_apart(self)
        _check_worker_limits(self.limits, "limits")
        check_server(self.server)
        _check_alerts(self.balances.alerts)
        pol = self.policy
        check_policy(pol.rate_limit, "policy")
        check_limit(pol.global_limit, "policy.global_limit")
        check_storage(pol.storage, "policy.storage")
        check_storage(pol.cache_storage, "policy.cache_storage")
        for sid, u in self.usage_scripts.items():
            if (u.script is None) == (u.file is None):
                raise InvalidConfig(f"usage_scripts.{sid}: give exactly one of script and file")
        for name, st in self.stations.items():
            check_station(name, st, f"stations.{name}")
            if name in self.usage_scripts:
                raise InvalidConfig(f"stations.{name}: usage_scripts.{name} has that name already")
        for pid, s in self.plugins.items():
            if s.pool:
                _check_pool(s.pool, f"plugins.{pid}.pool")
            if s.limits:
                _check_worker_limits(s.limits, f"plugins.{pid}.limits")
            check_policy(s.rate_limit, f"plugins.{pid}")
            if s.inspect is not None:
                check_inspect(s.inspect, f"plugins.{pid}.inspect")
            if s.permissions is not None:
                check_override(s.permissions, f"plugins.{pid}.permissions")

    @property
    def state_path(self) -> Path:
        """``state_dir`` with ``~`` expanded, absolute: where every piece of state lives."""
        return Path(self.state_dir).expanduser().resolve()

    @property
    def plugin_dirs(self) -> list[Path]:
        dirs = [self.plugins_dir] if isinstance(self.plugins_dir, str) else self.plugins_dir
        return [Path(d).resolve() for d in dirs]

    def _override(self, plugin_id: str, section: str, default: T) -> T:
        """``plugins.<id>.<section>`` when given, else ``default``."""
        s = self.plugins.get(plugin_id)
        value = None if s is None else getattr(s, section)
        return default if value is None else value

    def allow_private_network_for(self, plugin_id: str) -> bool:
        return self._override(plugin_id, "allow_private_network", False)

    def inspect_for(self, plugin_id: str) -> str | None:
        return self._override(plugin_id, "inspect", None)

    def inspect_flag(self, plugin_id: str) -> str | None:
        """The Deno flag that puts the plugin's worker under the inspector, or None."""
        address = self.inspect_for(plugin_id)
        if address is None:
            return None
        return f"--inspect-brk={address}" if self._override(plugin_id, "inspect_brk", False) else f"--inspect={address}"

    def pool_for(self, plugin_id: str) -> PoolConfig:
        pool = self._override(plugin_id, "pool", self.pool)
        if self.inspect_for(plugin_id):  # one inspector port: one worker (and no spare)
            pool = msgspec.structs.replace(pool, min_workers=1, max_workers=1, spares=0)
        return pool

    def limits_for(self, plugin_id: str) -> WorkerLimits:
        limits = self._override(plugin_id, "limits", self.limits)
        if self.inspect_for(plugin_id):  # paused at a breakpoint, it answers no heartbeat
            brk = self._override(plugin_id, "inspect_brk", False)  # no hello before a debugger resumes it
            limits = msgspec.structs.replace(limits, heartbeat_timeout=INSPECT_WAIT, call_timeout=INSPECT_CALL_TIMEOUT,
                                             handshake_timeout=INSPECT_WAIT if brk else limits.handshake_timeout)
        return limits

    def rate_limit_for(self, plugin_id: str) -> RateLimitConfig:
        return self._override(plugin_id, "rate_limit", self.policy.rate_limit)

    def retry_for(self, plugin_id: str) -> RetryConfig:
        return self._override(plugin_id, "retry", self.policy.retry)

    def low_balance_for(self, plugin_id: str) -> float | None:
        """The balance below which the plugin's station raises a low_balance alert."""
        own = self.plugins[plugin_id].low_balance if plugin_id in self.plugins else None
        return own if own is not None else self.balances.alerts.low_balance

    def max_concurrent_for(self, plugin_id: str) -> int:
        """The plugin's cap on calls admitted at once; 0: no cap."""
        return self._override(plugin_id, "max_concurrent", self.policy.max_concurrent)

    def breaker_for(self, plugin_id: str) -> BreakerConfig:
        return self._override(plugin_id, "breaker", self.policy.breaker)

    def cache_for(self, plugin_id: str) -> CacheConfig:
        return self._override(plugin_id, "cache", self.policy.cache)


KEYED: dict[str, type] = {"plugins": PluginSettings, "usage_scripts": UsageScriptConfig, "stations": StationConfig}


def _check_alerts(a: AlertsConfig) -> None:
    if a.webhook is not None and not re.match(r"^https?://[^/\s]+", a.webhook):
        raise InvalidConfig(f"balances.alerts.webhook must be an http(s) URL, got {a.webhook[:80]!r}")
    if a.command is not None and not (a.command and all(isinstance(x, str) and x for x in a.command)):
        raise InvalidConfig("balances.alerts.command must be a non-empty list of strings (argv)")


def checked_config(config: Any) -> HostConfig:
    """What PluginHost was given, as a HostConfig (None: the defaults); anything else is
    InvalidConfig (a path given for the config was an AttributeError; "" took the defaults)."""
    if config is None:
        return HostConfig()
    if not isinstance(config, HostConfig):
        raise InvalidConfig(f"PluginHost takes a HostConfig, as PluginHost(HostConfig(plugins_dir=...)) "
                            f"(got {type(config).__name__})")
    return config


def _fspath(value: Any) -> Any:
    """A path object (or a list of them) as the str the field holds."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return value


def _check_pool(p: PoolConfig, where: str) -> None:
    if p.min_workers > p.max_workers:
        raise InvalidConfig(f"{where}: min_workers ({p.min_workers}) must not exceed max_workers ({p.max_workers})")


# Deno 2.9 cannot reserve its code range under 512 MiB of RLIMIT_DATA and starts from 544 MiB
# (measured with Deno 2.9); 600 leaves it a little room to work.
MIN_DATA_LIMIT_MB = 600


def _check_worker_limits(lim: WorkerLimits, where: str) -> None:
    if lim.data_limit_mb is not None and lim.data_limit_mb < MIN_DATA_LIMIT_MB:
        raise InvalidConfig(f"{where}.data_limit_mb: Deno cannot start under {MIN_DATA_LIMIT_MB} MiB "
                            f"(got {lim.data_limit_mb}); None lifts the cap")


__all__ = [
    "CACHE_ALL", "checked_config", "NEVER_CACHED", "RETRYABLE", "STORAGE_SCHEMES", "check_storage",
    "redact_uri", "storage_failure", "BalancesConfig", "BreakerConfig", "CacheConfig", "EventsConfig",
    "CryptoToolConfig", "EgressConfig", "UsageScriptConfig", "StationConfig", "ExecuteConfig",
    "HealthConfig", "ReloadConfig", "HostConfig", "Permissions", "PluginSettings", "PolicyConfig",
    "PackagesConfig", "PoolConfig", "RateLimitConfig", "RetryConfig", "ServerConfig", "WorkerLimits"
]
