"""PluginHost: the embedding API. An async context manager (anyio: asyncio or trio) that owns
one pool per plugin plus pools for ad-hoc ``execute``."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import protocol as p
from .balances.history import BalanceHistory, BalancePoint
from .balances.result import BALANCE_CAPABILITY, BALANCE_FUNCTION, BalanceResult, from_error, from_reply
from .config import (
    BreakerConfig,
    CacheConfig,
    HostConfig,
    PluginSettings,
    PoolConfig,
    RateLimitConfig,
    RetryConfig,
    database_path,
)
from .db_tool import DbTool
from .errors import (
    ApprovalChanged,
    CallTimeout,
    FunctionNotFound,
    HostClosed,
    HostError,
    InvalidConfig,
    PluginError,
    PluginNotFound,
    PluginUnavailable,
    StateError,
)
from .execute import EXECUTE_EGRESS, ExecutePools, ExecuteResult
from .info import EventReply, PluginInfo, plugin_info
from .logbook import JournalEntry, LogBook
from .logs import LOGGING_LEVEL, Throttle
from .metrics import UNKNOWN, HostMetrics
from .plugins.dependencies import resolve
from .plugins.discovery import PluginSource, load_manifest
from .plugins.lifecycle import EventHub, Plugin, PluginEvent
from .plugins.manifest import Manifest
from .plugins.reload import fingerprint
from .plugins.settings import MASK, ConfigStore, apply_schema, mask, redact, secret_keys, secret_values
from .plugins.usage_scripts import discover_sources
from .policy.cache import digest
from .policy.pipeline import CallPipeline
from .policy.scheduler import SchedulerStats
from .pool import Pool
from .runtime import Runtime
from .security.approvals import ApprovalStore, declared
from .security.egress import EgressProxy
from .security.permissions import Permissions, reserved_entries
from .security.private_files import check_state_dir
from .security.secrets import EXPORT_FORMAT, SecretBox, export_cipher, import_cipher
from .services import HostServices
from .worker import Worker, WorkerSpec

log = logging.getLogger("host")
_warn = Throttle(log)
plugin_log = logging.getLogger("host.plugin")



LogListener = Callable[[str, Worker, p.Log], None]


class PluginHost:
    """Run plugins in sandboxed Deno workers.

    >>> async with PluginHost(HostConfig(plugins_dir="plugins")) as h:
    ...     await h.call("calc", "add", 1, 2)
    """

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = config or HostConfig()
        self._records: list[Plugin] = []
        self._reload_lock = anyio.Lock()
        self._hub = EventHub()
        self.logbook = LogBook()  # each plugin's recent console and lifecycle: logs(), the dashboard
        self._hub.subscribe(self._journal_event)
        self._exec: ExecutePools | None = None  # ad-hoc code's pools, while running
        self._listeners: list[LogListener] = []
        self._runtime: Runtime | None = None
        self._services: HostServices | None = None
        self._store: ConfigStore | None = None
        self._secrets: dict[str, list[str]] = {}  # plugin id → secret values to redact
        self._box = SecretBox(self.config)  # the key that seals secret config values at rest
        self._tg: TaskGroup | None = None
        # the call path: cache, rate limits, concurrency caps, breaker, retries
        self._pipeline = CallPipeline(self.config, self._pool,
                                      lambda: self._tg if self._running else None)
        self._history = BalanceHistory(self.config.state_path, keep_days=self.config.balances.history_days)
        self._egress: EgressProxy | None = None  # security.egress_proxy
        self.metrics = HostMetrics(self.plugins)  # Prometheus: GET /metrics, or metrics.render()
        self._running = False
        self._reserved: set[str] = set()  # host:port refused to every worker (reserve_address)
        self._approvals: ApprovalStore | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> PluginHost:
        check_state_dir(self.config.state_path)  # writable, with room: or a StateError saying why
        self._runtime = Runtime.create(self.config, redact=self._redact_secrets)
        self._runtime.reserved_addresses[:] = sorted(self._reserved)
        self._services = HostServices(self.config.state_path)
        if (database := self.config.execute.database) is not None:
            path = database_path(database)
            assert path is not None  # HostConfig refuses a database that names no sqlite file
            self._services.db = DbTool(path, max_rows=self.config.execute.db_max_rows)
        self._store = ConfigStore(self.config.state_path, self._box)
        store = self._store
        self._box.sealed_exist = lambda: store.has_sealed
        self._approvals = ApprovalStore(self.config.state_path, self._runtime.audit)
        warmed = self._pipeline.cache.warm_up()
        if warmed:
            log.info("result cache: %d entries loaded from %s", warmed, self.config.state_path)
        self._cm = anyio.create_task_group()
        self._tg = await self._cm.__aenter__()
        tg = self._tg
        self._exec = ExecutePools(self.config.execute, self.config.security, self.config.limits, self._runtime,
                                  self._new_pool, lambda pool: tg.start(pool.serve),
                                  lambda pool: tg.start_soon(pool.stop))
        self._running = True
        try:
            self._store.verify()  # a wrong secret key fails the start, before any worker
            if self.config.security.egress_proxy:  # before any spawn: workers get its URL
                await self._start_egress()
            await self._load(self._discover())
            self._seal_stored_secrets()
            if self.config.health.interval > 0:
                self._tg.start_soon(self._health_loop)
            if self.config.reload.enabled:
                self._tg.start_soon(self._watch_loop)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.aclose()
        finally:
            if self._runtime is not None:
                self._runtime.egress = None  # the proxy stops with the task group
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                cm, self._tg = self._cm, None
                await cm.__aexit__(None, None, None)
            if self._runtime is not None:
                self._runtime.close()
            if self._services is not None:  # every worker is gone: no host call uses them
                self._services.close()
            self._pipeline.close()
            self._history.close()

    async def aclose(self) -> None:
        """Drain every pool (calls in flight finish), then stop all workers. Callable from
        any task; leaving ``async with`` does it too."""
        self._running = False
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for r in self._records:
                    if r.pool is not None:
                        tg.start_soon(r.pool.stop)
                for pool in self._exec.pools() if self._exec is not None else ():
                    tg.start_soon(pool.stop)

    def reserve_address(self, host: str, port: int) -> None:
        """Refuse ``host:port`` to every worker spawned from now on, private network allowed or
        not (``serve`` reserves the address its HTTP API listens on): a wildcard host stands for
        every address of the machine; a name, for the addresses it resolves to."""
        self._reserved.update(reserved_entries(host, port))
        if self._runtime is not None:
            self._runtime.reserved_addresses[:] = sorted(self._reserved)

    async def _start_egress(self) -> None:
        assert self._tg is not None and self._runtime is not None
        sec = self.config.security
        runtime = self._runtime
        self._egress = EgressProxy(audit=runtime.audit, permissions_for=self._egress_grants,
                                   max_response_bytes=sec.max_response_bytes, https_only=sec.https_only,
                                   reserved=lambda: runtime.reserved_addresses,
                                   **msgspec.structs.asdict(sec.egress))
        await self._tg.start(self._egress.serve)
        self._runtime.egress = self._egress

    def _egress_grants(self, plugin_id: str) -> Permissions | None:
        """What the egress proxy enforces for ``plugin_id``: its newest manifest's grants, or
        for ad-hoc ``execute`` code (``execute+<digest>``, a name no plugin id can take) the
        permissions of that execute pool. None: unknown, so private addresses are refused."""
        if plugin_id.startswith(EXECUTE_EGRESS):
            return self._exec.permissions_of(plugin_id) if self._exec is not None else None
        newest = _newest(r for r in self._records if r.id == plugin_id and r.manifest is not None)
        return self._grants(newest[plugin_id]) if plugin_id in newest else None

    def _discover(self) -> list[PluginSource]:
        """The plugins in the plugin directories, and the cc-switch usage scripts as plugins."""
        return discover_sources(self.config)

    async def _load(self, sources: list[PluginSource]) -> None:
        """Discovered → loaded (metadata read in a worker with no permissions, validated) →
        dependencies resolved → running, level by level in dependency order."""
        records = [Plugin(src, self._hub.emit) for src in sources]
        self._records.extend(records)
        async with anyio.create_task_group() as tg:
            for r in records:
                tg.start_soon(self._inspect, r)
        seen: dict[str, Plugin] = {}
        for r in records:
            if r.state == "loaded":
                if r.key in seen:
                    r.set_state("error", f"duplicate of {seen[r.key].source.module}")
                else:
                    seen[r.key] = r
        newest = _newest(r for r in self._records if r.manifest is not None and r.state != "error")
        levels, errors = resolve({pid: r.manifest for pid, r in newest.items()})
        for r in records:
            if r.state == "loaded" and r.id in errors:
                r.set_state("error", errors[r.id])
        for level in levels:
            async with anyio.create_task_group() as tg:
                for r in records:
                    if r.id in level and r.state == "loaded":
                        tg.start_soon(self._start, r)

    async def _read_manifest(self, record: Plugin, fp: tuple | None = None) -> tuple[Manifest, list[str]]:
        """Load the plugin's current code in a worker with no permissions and validate it.
        ``fp``: its fingerprint, when the caller just took it."""
        src = record.source
        assert self._runtime is not None
        record.fingerprint = fingerprint(src.root) if fp is None else fp  # before reading: a later edit is seen
        manifest, exports = await load_manifest(src, self._runtime, self.config.limits_for(src.id),
                                                https_only=self.config.security.https_only)
        self._judge_permissions(src, manifest)
        return manifest, exports

    def _judge_permissions(self, src: PluginSource, manifest: Manifest) -> None:
        """Strict mode: record (and log, or refuse with InvalidConfig) what is risky in the
        plugin's grants. (Grants no plugin may have are refused in every mode by
        ``load_manifest``.)"""
        sec, runtime = self.config.security, self._runtime
        assert runtime is not None
        findings = [] if sec.strict == "off" else manifest.findings(max_net_hosts=sec.max_net_hosts)
        if not findings:
            return
        refused = sec.strict == "refuse"
        runtime.audit.record("strict", plugin=src.id, version=manifest.version, findings=findings,
                             action="refused" if refused else "warned")
        if refused:
            raise InvalidConfig("refused by security.strict: " + "; ".join(findings), plugin=src.id)
        log.warning("plugin %s@%s: risky permissions: %s", src.id, manifest.version, "; ".join(findings))

    async def _inspect(self, record: Plugin) -> None:
        try:
            record.manifest, record.exports = await self._read_manifest(record)
        except Exception as exc:  # whatever one plugin's load raises stays with that plugin
            record.set_state("error", _failure(record, "load", exc))
            return
        record.set_state("loaded")

    def _raw_config(self, plugin_id: str) -> dict[str, Any]:
        """HostConfig's ``plugins.<id>.config``, overlaid by what ``set_config`` stored."""
        base = dict(self.config.plugins[plugin_id].config) if plugin_id in self.config.plugins else {}
        assert self._store is not None
        return {**base, **(self._store.get(plugin_id) or {})}

    def _redact_secrets(self, text: str) -> str:
        """``text`` with the secret values of every plugin masked."""
        return redact(text, sorted((s for values in self._secrets.values() for s in values),
                                   key=len, reverse=True))

    def _seal_stored_secrets(self) -> None:
        """Encrypt the secrets a config.json from before encryption at rest holds in plaintext
        (host.toml's ``plugins.<id>.config`` is not rewritten)."""
        assert self._store is not None
        keys = {r.id: secret_keys(r.manifest.config_schema) for r in self._records if r.manifest is not None}
        if sealed := self._store.migrate(keys):
            log.info("config.json: encrypted the plaintext secrets of %s", ", ".join(sealed))

    def _effective_config(self, plugin_id: str, manifest: Manifest) -> dict[str, Any]:
        """The config the plugin's workers get: validated against its configSchema, defaults
        filled in. Remembers its secret values so that they are redacted everywhere."""
        values = self._box.reveal(self._raw_config(plugin_id), plugin=plugin_id)
        self._secrets[plugin_id] = secret_values(manifest.config_schema, values)
        return apply_schema(manifest.config_schema, values, plugin=plugin_id)

    def _spec(self, record: Plugin, manifest: Manifest, config: dict[str, Any] | None = None,
              **extra: Any) -> WorkerSpec:
        """What the plugin's workers run: its module, with ``config`` and the permissions
        ``manifest`` declares (config references resolved with ``config``)."""
        src = record.source
        grants = manifest.grants_for(config, allow_private_network=self.config.allow_private_network_for(src.id))
        assert self._runtime is not None
        return WorkerSpec(plugin_id=src.id, module=src.module, base_dir=self._runtime.data_dir(src.id),
                          read_paths=[str(src.root)], permissions=grants, config=config,
                          limits=self.config.limits_for(src.id), inspect=self.config.inspect_for(src.id),
                          journal=self._journal_worker, **extra)

    def _grants(self, record: Plugin) -> Permissions | None:
        """What the plugin's workers may do: as its pool was started, else as declared."""
        if record.pool is not None:
            return record.pool.spec.permissions
        return record.manifest.grants if record.manifest is not None else None

    async def _open_pool(self, record: Plugin, manifest: Manifest) -> Pool:
        """Start a pool for ``record`` with the permissions ``manifest`` declares and its
        validated config (InvalidConfig if the config does not satisfy the schema)."""
        assert self._tg is not None
        src, cfg = record.source, self.config
        spec = self._spec(record, manifest, config=self._effective_config(src.id, manifest),
                          redact=lambda text, pid=src.id: redact(text, self._secrets.get(pid, [])))
        spec.cache_salt = digest(manifest.version, spec.config)
        pool = self._new_pool(spec, cfg.pool_for(src.id), on_state=record.sync_with_pool)
        await self._tg.start(pool.serve)
        return pool

    def _needs_approval(self, record: Plugin, manifest: Manifest) -> list[str]:
        """What ``manifest`` declares beyond the plugin's approved grants (empty: nothing, and
        a plugin seen for the first time is approved as it is)."""
        assert self._approvals is not None
        asked = declared(manifest)
        added = self._approvals.beyond(record.id, asked)
        if added is None:
            self._approvals.approve(record.id, asked, version=manifest.version, by="first load")
            return []
        return added

    def _hold_for_approval(self, record: Plugin, manifest: Manifest, exports: list[str],
                           added: list[str]) -> None:
        """Keep ``manifest`` aside until the operator approves ``added``: a running version
        keeps serving; otherwise the plugin waits in `pending`."""
        record.hold(manifest, exports, added)
        if record.state not in ("running", "degraded"):
            record.set_state("pending", f"asks for {', '.join(added)} beyond its approved grants; "
                                        f"approve with `python -m host approve {record.id}`")

    async def approve(self, name: str, *, by: str = "python", grants: list[str] | None = None) -> bool:
        """Approve the grants the plugin's pending version asks for (audited), then load it.
        ``grants``: the ones the operator was shown; if what waits differs now, ApprovalChanged
        and nothing is approved. InvalidConfig when nothing waits for approval. True when the
        plugin serves afterwards."""
        record = self._record(name)
        if record.pending_manifest is None:
            raise InvalidConfig("nothing to approve: the plugin asks for no grant beyond its approved ones",
                                plugin=record.id)
        if grants is not None and sorted(grants) != sorted(record.pending):
            raise ApprovalChanged(f"the waiting version now asks for {', '.join(record.pending)}, not "
                                  f"{', '.join(grants) or 'nothing'}: look again before approving", plugin=record.id)
        assert self._approvals is not None
        manifest = record.pending_manifest
        self._approvals.approve(record.id, declared(manifest), version=manifest.version, by=by)
        log.warning("plugin %s: grants approved (%s): %s", record.id, by, ", ".join(record.pending))
        if record.state in ("running", "degraded"):
            return await self.reload(name)
        await self.enable(name)
        return record.state in ("running", "degraded")

    async def _start(self, record: Plugin) -> None:
        """Start the plugin's pool with the permissions its manifest declares (once approved)."""
        assert record.manifest is not None
        if added := self._needs_approval(record, record.manifest):
            self._hold_for_approval(record, record.manifest, record.exports, added)
            return
        record.release()
        try:
            record.pool = await self._open_pool(record, record.manifest)
        except InvalidConfig as exc:
            record.set_state("error", f"invalid config: {exc.message}")
            return
        except Exception as exc:  # a state directory that fails, say: this plugin only
            record.set_state("error", _failure(record, "start", exc))
            return
        if record.pool.state == "error":
            record.set_state("error", record.pool.error)
        else:
            record.set_state("running")

    # ------------------------------------------------------------------ hot reload

    @property
    def running(self) -> bool:
        """Between the start of ``async with`` and the start of its close."""
        return self._running

    async def rescan(self) -> None:
        """Look at the plugin directories now: load new plugins, reload changed ones, stop
        removed ones. The watcher calls this every ``reload.interval`` seconds."""
        async with self._reload_lock:
            if not self._running:
                return
            known = {r.source.module for r in self._records}
            fresh = [s for s in self._discover() if s.module not in known]
            assert self._approvals is not None and self._store is not None
            for pid in self._store.refresh():  # configs another process stored (the CLI)
                for r in self._records:
                    if r.id == pid and r.state in ("running", "degraded"):
                        await self._reload(r)
            if self._approvals.refresh():  # approved from outside (the CLI): load what waited
                for r in list(self._records):
                    if r.pending_manifest is not None:
                        await (self._reload(r) if r.state in ("running", "degraded") else self.enable(r.key))
            for r in list(self._records):
                if not r.source.module.exists():
                    await self._stop(r, "stopped", "removed from disk")
                    self._records.remove(r)
                elif r.state not in ("disabled", "stopped") and (fp := fingerprint(r.source.root)) != r.fingerprint:
                    await self._reload(r, fp)
            if fresh:
                await self._load(fresh)

    async def reload(self, name: str) -> bool:
        """Load the plugin's code anew: a new pool starts, new calls go to it, the old pool
        drains. If the new code fails to load, the old version keeps serving and the failure
        is reported (``PluginInfo.reload_error``, a ``reload_failed`` event). True on success."""
        async with self._reload_lock:
            if not self._running:
                raise HostClosed("the host is not running")
            return await self._reload(self._record(name))

    async def _reload(self, record: Plugin, fp: tuple | None = None) -> bool:
        try:
            manifest, exports = await self._read_manifest(record, fp)
            if (why := self._dependency_error(record, manifest)) is not None:
                raise InvalidConfig(why, plugin=record.id)
            if added := self._needs_approval(record, manifest):
                self._hold_for_approval(record, manifest, exports, added)
                return False
            record.release()
            pool = await self._open_pool(record, manifest)
            if pool.state == "error":
                await pool.stop()
                raise PluginUnavailable(pool.error or "new version failed to start", plugin=record.id)
        except Exception as exc:
            why = _failure(record, "reload", exc)
            if record.state in ("running", "degraded"):
                record.reload_failed(why)  # the old version keeps serving
            else:
                record.set_state("error", why)
            return False
        old, record.pool = record.pool, pool
        record.manifest, record.exports = manifest, exports
        record.reloaded()
        if old is not None:
            assert self._tg is not None
            self._tg.start_soon(old.stop)  # drains: calls in flight there finish
        return True

    async def _watch_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.reload.interval)
            try:
                await self.rescan()
            except Exception as exc:  # a watcher bug must not take the host down, nor flood the log
                _warn.warning("rescan", "plugin rescan failed: %s: %s", type(exc).__name__, exc)
                log.debug("plugin rescan failed", exc_info=exc)

    def _new_pool(self, spec: WorkerSpec, config: PoolConfig, **kw: Any) -> Pool:
        assert self._runtime is not None and self._services is not None
        return Pool(spec, self._runtime, config, on_log=self._on_log,
                    host_call=self._services.handle, **kw)

    # ------------------------------------------------------------------ logs

    def add_log_listener(self, fn: LogListener) -> Callable[[], None]:
        """Receive every worker log line as ``fn(plugin_id, worker, log)``; returns a remover."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def logs(self, name: str, *, level: str = "debug", after: int = 0, limit: int = 200) -> list[JournalEntry]:
        """The plugin's recent log, what ``--debug`` shows: its workers' console lines and the
        lifecycle of the plugin and its workers, oldest first; ``level`` and above, entries
        after sequence number ``after``, at most ``limit``."""
        record = self._record(name)
        return self.logbook.read(record.id, level=level, after=after, limit=limit)

    def _journal_event(self, event: PluginEvent) -> None:
        what = {"reloaded": "reloaded", "reload_failed": "reload failed, the old version keeps serving",
                "approval_pending": f"version {event.version} waits for approval"}.get(
            event.kind, event.state if event.previous is None else f"{event.previous} -> {event.state}")
        level = "warning" if event.state == "error" or event.kind in ("reload_failed", "approval_pending") else "info"
        self.logbook.add(event.plugin, level, what + (f" ({event.reason})" if event.reason else ""))

    def _journal_worker(self, worker: Worker, level: str, text: str) -> None:
        self.logbook.add(worker.spec.plugin_id, level, text, worker=worker.describe())

    def _on_log(self, worker: Worker, msg: p.Log) -> None:
        """A worker's log line, its secrets already redacted by the worker (WorkerSpec.redact)."""
        if worker.spec.role != "execute":  # ad-hoc code's output belongs to its caller alone
            self.logbook.add(worker.spec.plugin_id, msg.level, msg.message, worker=worker.describe(),
                             kind="console")
        if plugin_log.isEnabledFor(LOGGING_LEVEL.get(msg.level, logging.INFO)):
            plugin_log.log(LOGGING_LEVEL.get(msg.level, logging.INFO), "[plugin:%s] %s",
                           worker.describe(), msg.message, extra=worker.log_extra)
        for fn in list(self._listeners):
            fn(worker.spec.plugin_id, worker, msg)

    # ------------------------------------------------------------------ calls

    def _record(self, name: str) -> Plugin:
        """``id@version`` exactly, or the highest installed version of ``id``."""
        pid, _, version = name.partition("@")
        versions = [r for r in self._records if r.id == pid]
        if len(versions) == 1 and not version:
            return versions[0]
        if version:
            versions = [r for r in versions if r.version == version]
        if not versions:
            installed = sorted({r.key for r in self._records}) or ["none"]
            raise PluginNotFound(f"no plugin {name!r} (installed: {', '.join(installed)})", plugin=pid)
        return max(versions, key=lambda r: r.order)

    def _pool(self, plugin: str) -> Pool:
        if not self._running:
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        record = self._record(plugin)
        if record.state not in ("running", "degraded") or record.pool is None:
            why = f": {record.error}" if record.error else ""
            raise PluginUnavailable(f"plugin is {record.state}{why}", plugin=record.id)
        return record.pool

    async def call(self, plugin: str, fn: str, *args: Any, timeout: float | None = None,
                   priority: int = 0, refresh: bool = False) -> Any:
        """Call ``fn(*args)`` exported by ``plugin``; ``timeout`` (seconds) covers rate-limit
        waits, queueing, running and retries; past it the worker is killed and CallTimeout
        raised. The plugin's policies apply in order: result cache (a cached result returns at
        once, with no quota used), rate limit (RateLimited), concurrency caps (a slot held
        until the call ends), circuit breaker (CircuitOpen), then the call, retried per its
        RetryConfig. ``refresh`` skips the cached result and caches the new one. Where calls
        queue (for a slot under the caps, for a free worker), higher ``priority`` goes first.
        Cancelling the caller cancels the call: a queued one never runs, a running one has its
        ``context.signal`` aborted."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return (await self._pipeline.run(plugin, fn, list(args), timeout, priority, refresh))[0]
        except BaseException as exc:
            outcome = type(exc).__name__ if isinstance(exc, HostError) else "Cancelled"
            if isinstance(exc, PluginNotFound):
                plugin = fn = UNKNOWN  # names nobody installed: keep the label sets bounded
            elif isinstance(exc, FunctionNotFound):
                fn = UNKNOWN
            raise
        finally:
            self.metrics.observe(plugin, fn, outcome, time.perf_counter() - started)

    async def clear_cache(self, name: str | None = None) -> int:
        """Drop the cached results of one plugin (every plugin's when None); returns how many
        entries went."""
        return await self._pipeline.cache.clear(None if name is None else self._record(name).id)

    async def query_balances(self, *, refresh: bool = False, timeout: float | None = None) -> list[BalanceResult]:
        """Ask every balance plugin (``"balance"`` in its capabilities) for its balance, all in
        parallel, each under its own policies (cache, rate limit, retry, breaker) and
        ``timeout`` (default ``balances.timeout``): a slow or broken station never delays the
        others. One BalanceResult per plugin id, status success, error or timeout; a plugin
        that is not running is an error result saying why. ``refresh`` bypasses the cache."""
        budget = self.config.balances.timeout if timeout is None else timeout
        newest = _newest(r for r in self._records
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
                    value, stored_at, cached = await self._pipeline.run(r.key, BALANCE_FUNCTION, [config], budget,
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
            self.metrics.observe(r.id, BALANCE_FUNCTION, "ok" if outcome.status == "success" else
                                 outcome.error_type or outcome.status, time.perf_counter() - t0)

        async with anyio.create_task_group() as tg:
            for r in newest.values():
                tg.start_soon(one, r)
        ordered = [results[pid] for pid in sorted(results)]
        try:
            await anyio.to_thread.run_sync(self._history.append, ordered)
        except StateError as exc:  # the answers still count; the history misses them
            _warn.warning("history", "balance history: %s", exc.message)
        return ordered

    async def balance_history(self, provider: str | None = None, *, since: dt.datetime | None = None,
                              until: dt.datetime | None = None, limit: int = 10_000) -> list[BalancePoint]:
        """The recorded balances (successful, freshly asked queries), oldest first: of one
        provider (plugin id) or all, within [since, until], at most ``limit`` newest points."""
        return await anyio.to_thread.run_sync(
            lambda: self._history.read(provider, since=since, until=until, limit=limit))

    def set_policy(self, name: str, *, rate_limit: RateLimitConfig | None = None,
                   retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                   max_concurrent: int | None = None, cache: CacheConfig | None = None) -> None:
        """Override the plugin's policies from now on (the sections given; the others keep
        their current setting). ``max_concurrent`` caps its calls admitted at once (0: no
        cap). The breaker's state, the cached results and the counters carry over."""
        pid = self._record(name).id
        current = self.config.plugins.get(pid) or PluginSettings()
        changes = {k: v for k, v in (("rate_limit", rate_limit), ("retry", retry), ("breaker", breaker),
                                     ("max_concurrent", max_concurrent), ("cache", cache)) if v is not None}
        settings = msgspec.structs.replace(current, **changes)
        check = HostConfig(plugins={pid: settings})  # validates the sections
        self.config.plugins = {**self.config.plugins, pid: check.plugins[pid]}
        self._pipeline.scheduler.wake()  # a raised cap lets waiting calls in

    def set_max_concurrent_calls(self, limit: int | None) -> None:
        """Cap the calls admitted at once over all plugins (None: no cap), from now on; calls
        already running above a lowered cap finish."""
        if limit is not None and limit < 1:
            raise InvalidConfig("max_concurrent_calls must be >= 1 (None: no cap)")
        self.config.policy.max_concurrent_calls = limit
        self._pipeline.scheduler.max_concurrent = limit

    def scheduler_stats(self) -> SchedulerStats:
        """Calls admitted and queued under the concurrency caps, in all and per plugin id."""
        return self._pipeline.scheduler.stats()

    async def execute(
        self,
        code: str,
        input: Any = msgspec.UNSET,
        *,
        entry: str = "default",
        timeout: float | None = None,
        permissions: Any = None,
        tools: list[str] | None = None,
    ) -> ExecuteResult:
        """Run module ``code`` and call its export ``entry`` with ``input`` (seed 001's Isolate
        contract): errors come back as ``exception`` log entries, never raised. ``input``
        left out reaches the code as ``undefined``; ``None`` as ``null``. ``permissions``: a
        Permissions, a dict, ``"none"``, or a list of those merged by seed 001's rules
        (``Permissions.merge``, e.g. the user's grants and a tool's), within what the operator
        allows (``[execute] allow``; GrantRefused beyond it)."""
        return await self._executor().run(code, input, entry=entry, timeout=timeout, permissions=permissions,
                                          tools=tools, running=self._running)

    async def warm_execute(self) -> None:
        """Start the pool for code without permissions now (``execute.min_workers`` warm), so
        that the first ``execute`` finds a worker ready."""
        if not self._running:
            raise HostClosed("the host is not running")
        await self._executor().pool_for(Permissions())

    def _executor(self) -> ExecutePools:
        if self._exec is None:
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        return self._exec

    # ------------------------------------------------------------------ introspection

    def plugins(self) -> list[PluginInfo]:
        """A snapshot of every plugin version: state, version, and each worker's pid, state,
        heartbeat."""
        return [self._info(r) for r in self._sorted_records()]

    def states(self) -> dict[str, str]:
        """Plugin id -> state (of its newest version): what ``plugins()`` says of each, without
        building the snapshots (health checks ask this often)."""
        return {r.id: r.state for r in self._sorted_records()}

    def _sorted_records(self) -> list[Plugin]:
        return sorted(self._records, key=lambda r: (r.id, r.order))

    def plugin(self, name: str) -> PluginInfo:
        """The snapshot of one plugin (``id`` = its highest version, or ``id@version``)."""
        return self._info(self._record(name))

    def _info(self, r: Plugin) -> PluginInfo:
        sched = self._pipeline.scheduler
        info = plugin_info(r, self._pipeline.policies.get(r.id), sched.queued(r.id), sched.running(r.id),
                           self._pipeline.cache.size(r.id))
        info.latency_p50_ms, info.error_rate = self.metrics.recent_stats(r.id)
        if (grants := self._grants(r)) is not None:
            info.permissions = msgspec.to_builtins(grants)
            info.permission_findings = (
                r.manifest.findings(max_net_hosts=self.config.security.max_net_hosts, grants=grants)
                if r.manifest is not None else grants.findings(max_net_hosts=self.config.security.max_net_hosts))
        if self._egress is not None:
            c = self._egress.counters(r.id)
            info.egress_requests, info.egress_refused = c.requests, c.refused
            info.egress_bytes_in, info.egress_bytes_out = c.bytes_in, c.bytes_out
        return info

    def pool(self, name: str) -> Pool:
        """The pool of one plugin, whatever its state (for operations such as ``reset()``)."""
        record = self._record(name)
        if record.pool is None:
            raise PluginUnavailable(f"plugin is {record.state}", plugin=record.id)
        return record.pool

    # ------------------------------------------------------------------ events and health

    async def emit(self, event: str, payload: Any = None, *, timeout: float | None = None,
                   stop_at_first: bool = False) -> list[EventReply]:
        """Deliver ``event`` to every running plugin whose capabilities list it, highest
        ``priority`` first (ties by id), each call ``onEvent(event, payload, context)`` with
        its own timeout. With ``stop_at_first``, stop after the first plugin that returns a
        value other than null/undefined."""
        budget = self.config.events.timeout if timeout is None else timeout
        targets = [r for r in self._records
                   if r.state in ("running", "degraded") and r.manifest is not None
                   and event in r.manifest.capabilities]
        ordered = sorted(_newest(targets).values(), key=lambda r: (-r.manifest.priority, r.id))  # type: ignore[union-attr]
        replies: list[EventReply] = []
        for r in ordered:
            t0 = time.perf_counter()
            try:
                value = await self.call(r.key, "onEvent", event, payload, timeout=budget)
            except HostError as exc:
                replies.append(EventReply(plugin=r.id, version=r.version, ok=False, error=exc.to_dict(),
                                          duration=round((time.perf_counter() - t0) * 1000, 3)))
                continue
            replies.append(EventReply(plugin=r.id, version=r.version, ok=True, value=value,
                                      duration=round((time.perf_counter() - t0) * 1000, 3)))
            if stop_at_first and value is not None:
                break
        return replies

    async def check_health(self) -> dict[str, bool]:
        """Call ``healthCheck(config)`` on every running plugin that exports it; a false
        answer, ``{healthy: false}``, an error or a timeout marks it `degraded`, a healthy
        answer brings it back to `running`. Returns plugin key → healthy."""
        out: dict[str, bool] = {}

        async def one(r: Plugin) -> None:
            reason = None
            try:
                config = r.pool.spec.config if r.pool is not None else None
                value = await self.call(r.key, "healthCheck", config, timeout=self.config.health.timeout)
                if value is False or (isinstance(value, dict) and value.get("healthy") is False):
                    reason = "healthCheck: " + str(value.get("message", "unhealthy") if isinstance(value, dict)
                                                   else "returned false")
            except HostError as exc:
                reason = f"healthCheck failed: {exc}"
            if r.state not in ("running", "degraded"):
                return  # changed meanwhile (disabled, crashed)
            out[r.key] = reason is None
            r.set_state("running" if reason is None else "degraded", reason)

        async with anyio.create_task_group() as tg:
            for r in self._records:
                if r.state in ("running", "degraded") and "healthCheck" in r.exports:
                    tg.start_soon(one, r)
        return out

    async def _health_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.health.interval)
            await self.check_health()

    # ------------------------------------------------------------------ configuration

    def config_schema(self, name: str) -> dict[str, Any]:
        """The plugin's configSchema as JSON-ready dicts: ``{field: {type, required, secret,
        default?, enum?, description?, title?}}`` (what the dashboard builds its form from)."""
        record = self._record(name)
        if record.manifest is None:
            return {}
        return {k: {"required": f.required, "secret": f.secret, **msgspec.to_builtins(f)}
                for k, f in record.manifest.config_schema.items()}

    def get_config(self, name: str) -> dict[str, Any]:
        """The plugin's config as stored, with every ``secret`` field masked."""
        record = self._record(name)
        raw = self._raw_config(record.id)
        return mask(record.manifest.config_schema, raw) if record.manifest else {}

    async def set_config(self, name: str, values: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Validate ``values`` (merged into the stored config unless ``replace``; a secret sent
        back masked keeps its stored value) against the configSchema, then with the plugin's
        own ``validateConfig``; store it and restart the plugin's workers with it. Raises
        InvalidConfig (never echoing a secret). Returns the masked config."""
        record = self._record(name)
        manifest, raw = await self._checked_config(record, values, replace=replace)
        assert self._store is not None
        self._store.set(record.id, raw, secret_keys(manifest.config_schema))
        async with self._reload_lock:
            await self._reload(record)
        return mask(manifest.config_schema, raw)

    async def _checked_config(self, record: Plugin, values: dict[str, Any], *,
                              replace: bool) -> tuple[Manifest, dict[str, Any]]:
        """What ``set_config`` would store for ``values``, checked against the configSchema
        and by the plugin's ``validateConfig``; secrets in it are decrypted."""
        manifest = _loaded(record)
        if not isinstance(values, dict):
            raise InvalidConfig("config must be an object", plugin=record.id)
        current, secret = self._raw_config(record.id), secret_keys(manifest.config_schema)
        incoming = {k: current.get(k) if v == MASK and k in secret else v for k, v in values.items()}
        raw = self._box.reveal(incoming if replace else {**current, **incoming}, plugin=record.id)
        secrets = secret_values(manifest.config_schema, raw)
        checked = apply_schema(manifest.config_schema, raw, plugin=record.id)
        if "validateConfig" in record.exports:
            await self._plugin_validates(record, manifest, checked, secrets)
        return manifest, raw

    async def export_config(self, name: str | None = None, *,
                            passphrase: str | None = None) -> dict[str, Any]:
        """``{"format": "plugin-host-config/1", "encryption": {...}, "plugins": {id: config}}``
        for one plugin or every plugin with a config. Secret fields are only ever in it
        encrypted: with the host key, or with a key derived from ``passphrase`` (scrypt, its
        salt in the document) so that the export can be imported on another machine."""
        if name is not None:
            records = [self._record(name)]
            _loaded(records[0])
        else:
            records = [r for r in _newest(self._records).values() if r.manifest is not None]
        cipher, header = await anyio.to_thread.run_sync(export_cipher, self._box, passphrase)
        plugins: dict[str, dict[str, Any]] = {}
        for r in records:
            assert r.manifest is not None
            values = self._box.reveal(self._raw_config(r.id), plugin=r.id)
            if values or name is not None:
                plugins[r.id] = cipher.seal_fields(values, secret_keys(r.manifest.config_schema))
        return {"format": EXPORT_FORMAT, "encryption": header, "plugins": plugins}

    async def import_config(self, document: dict[str, Any], *, passphrase: str | None = None,
                            replace: bool = False) -> dict[str, dict[str, Any]]:
        """Import an ``export_config`` document: every plugin's values are decrypted and
        checked as ``set_config`` checks them, then all are stored at once and the plugins
        restarted. A wrong passphrase or key (SecretsError), an unknown format (InvalidConfig)
        or plugin (PluginNotFound), or any invalid config changes nothing. Returns the masked
        configs by plugin id."""
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise InvalidConfig(f"not a config export: its format must be {EXPORT_FORMAT!r}")
        plugins = document.get("plugins")
        if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
            raise InvalidConfig("a config export's plugins must be an object of {id: config object}")
        records = {pid: self._record(pid) for pid in plugins}
        cipher = await anyio.to_thread.run_sync(import_cipher, self._box, document.get("encryption"), passphrase)
        opened = {pid: cipher.reveal(values, plugin=records[pid].id) for pid, values in plugins.items()}
        checked = {pid: await self._checked_config(records[pid], opened[pid], replace=replace) for pid in opened}
        assert self._store is not None
        self._store.set_many({records[pid].id: raw for pid, (_, raw) in checked.items()},
                             {records[pid].id: secret_keys(m.config_schema) for pid, (m, _) in checked.items()})
        async with self._reload_lock:
            for pid in checked:
                await self._reload(records[pid])
        return {records[pid].id: mask(m.config_schema, raw) for pid, (m, raw) in checked.items()}

    async def _plugin_validates(self, record: Plugin, manifest: Manifest, config: dict[str, Any],
                                secrets: list[str]) -> None:
        """Ask the plugin's ``validateConfig(config)``: false, ``{valid: false, message}`` or a
        throw rejects the config."""
        try:
            if record.state in ("running", "degraded"):
                verdict = await self.call(record.key, "validateConfig", config)
            else:  # not running (e.g. its config was missing): ask a one-off worker
                verdict = await self._call_once(record, manifest, "validateConfig", [config], config=config)
        except PluginError as exc:
            raise InvalidConfig(f"rejected by the plugin: {redact(exc.message, secrets)}",
                                plugin=record.id) from None
        if verdict is False or (isinstance(verdict, dict) and verdict.get("valid") is False):
            why = verdict.get("message") or verdict.get("errors") if isinstance(verdict, dict) else None
            raise InvalidConfig(f"rejected by the plugin: {redact(str(why or 'invalid'), secrets)}",
                                plugin=record.id)

    async def _call_once(self, record: Plugin, manifest: Manifest, fn: str, args: list[Any], *,
                         config: dict[str, Any] | None = None) -> Any:
        """``fn(*args)`` on a one-off worker of the plugin, started with ``config``."""
        assert self._runtime is not None
        spec = self._spec(record, manifest, config)
        worker = Worker(spec, self._runtime)
        result: Any = None
        error: HostError | None = None
        async with anyio.create_task_group() as tg:  # errors are kept out of its exception group
            try:
                await tg.start(worker.run)
                try:
                    result = await worker.call(fn, args, spec.limits.call_timeout)
                finally:
                    await worker.shutdown()
            except HostError as exc:
                error = exc
        if error is not None:
            raise error
        return result

    # ------------------------------------------------------------------ lifecycle control

    def subscribe(self, fn: Callable[[PluginEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` on every plugin state change; returns an unsubscribe function."""
        return self._hub.subscribe(fn)

    def events(self, buffer: int = 1000) -> Any:
        """``async with h.events() as stream: async for event in stream: ...``"""
        return self._hub.stream(buffer)

    async def disable(self, name: str) -> None:
        """Stop the plugin's workers (calls in flight finish) and refuse calls until enabled."""
        await self._stop(self._record(name), "disabled", "disabled by user")

    async def unload(self, name: str) -> None:
        """Release every worker of the plugin; it stays listed as `stopped` until enabled."""
        await self._stop(self._record(name), "stopped", "unloaded")

    async def enable(self, name: str) -> None:
        """Start a disabled, stopped or failed plugin again (its metadata is read anew)."""
        record = self._record(name)
        if record.state in ("running", "degraded"):
            return
        await self._stop(record, record.state, None)
        await self._inspect(record)
        if record.state != "loaded":
            return
        assert record.manifest is not None
        if (why := self._dependency_error(record, record.manifest)) is not None:
            record.set_state("error", why)
            return
        await self._start(record)

    def _dependency_error(self, record: Plugin, manifest: Manifest) -> str | None:
        """Why ``manifest``'s dependencies are not met by the plugins serving now, or None."""
        others = {r.id: r.manifest for r in self._records
                  if r.manifest is not None and r.state in ("running", "degraded") and r.id != record.id}
        _, errors = resolve({**others, record.id: manifest})
        return errors.get(record.id)

    async def restart(self, name: str) -> bool:
        """Fresh workers for the plugin: a running one gets a new pool (its code and metadata
        read anew; calls in flight finish on the old workers), a disabled, stopped or failed
        one (a crash loop included) starts again. True when it serves afterwards."""
        record = self._record(name)
        if record.state in ("running", "degraded"):
            if not await self.reload(name):
                raise PluginUnavailable(f"restart failed: {record.reload_error}", plugin=record.id)
        else:
            await self.enable(name)
        return record.state in ("running", "degraded")

    def reset(self, name: str) -> None:
        """Leave a crash loop: the pool starts workers again."""
        self.pool(name).reset()

    async def _stop(self, record: Plugin, state: str, reason: str | None) -> None:
        pool, record.pool = record.pool, None
        if pool is not None:
            await pool.stop()
        if state != record.state:
            record.set_state(state, reason)


def _failure(record: Plugin, what: str, exc: Exception) -> str:
    """What failed, for the plugin's error: a HostError says it itself; anything else is a bug
    or an OS failure, logged with its traceback and contained to this plugin."""
    if isinstance(exc, HostError):
        return str(exc)
    log.error("plugin %s: %s failed", record.id, what, exc_info=exc)
    return f"{what} failed: {type(exc).__name__}: {exc}"


def _loaded(record: Plugin) -> Manifest:
    """The plugin's manifest; PluginUnavailable when it never loaded (its config cannot be
    checked or exported)."""
    if record.manifest is None:
        raise PluginUnavailable(f"plugin is {record.state}: {record.error}", plugin=record.id)
    return record.manifest


def _newest(records: Iterable[Plugin]) -> dict[str, Plugin]:
    """The highest version of each plugin id among ``records``."""
    return {r.id: r for r in sorted(records, key=lambda r: r.order)}


__all__ = ["PluginHost"]
