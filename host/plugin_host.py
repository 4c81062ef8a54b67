"""PluginHost: the embedding API, a facade. An async context manager (anyio: asyncio or trio)
that owns the task group and builds the parts, each of which imports nothing of it:

- ``plugins.registry.Registry``: discovery, loading, approvals, hot reload, enable/disable/stop;
- ``policy.pipeline.CallPipeline``: the call path (cache, rate limits, caps, breaker, retries);
- ``execute.ExecutePools``: ad-hoc code; ``plugins.admin.ConfigAdmin``: plugins' config;
- ``balances.query.Balances``; ``plugins.events.Events`` (events, health); ``logbook.LogRouter``.

See docs/architecture.md for how a call flows through them."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from .api_args import Limit, Port, Priority, Timeout, Wait, any_time, checked_api
from .balances.alerts import Alert
from .balances.history import BalancePoint
from .balances.history_pg import open_history
from .balances.query import Balances
from .balances.result import BalanceResult
from .balances.station_admin import StationAdmin
from .balances.stations import Stations
from .config import (
    BreakerConfig,
    CacheConfig,
    HostConfig,
    PluginSettings,
    PoolConfig,
    RateLimitConfig,
    RetryConfig,
    checked_config,
)
from .errors import HostClosed, InvalidConfig, PluginError
from .execute import ExecuteResult
from .execute_pools import ExecutePools
from .info import EventReply, PluginInfo, add_egress, add_grants, plugin_info
from .logbook import JournalEntry, LogBook, LogListener, LogRouter
from .metrics import HostMetrics, failure_labels, outcome_of
from .plugins.admin import ConfigAdmin
from .plugins.config_store import seal_stored_secrets
from .plugins.events import Events
from .plugins.host_lists import move_bare_station_configs, open_stores
from .plugins.lifecycle import STARTING, EventHub, Plugin, PluginEvent
from .plugins.overrides import GrantOverrides
from .plugins.packages import PackageAdmin
from .plugins.registry import Registry
from .plugins.switches import Switches
from .policy.pipeline import CallPipeline
from .policy.scheduler import SchedulerStats
from .pool import Pool
from .run_once import RunOnce, ungrouped
from .runtime import Runtime
from .security.egress import EgressProxy
from .security.egress_start import egress_grants, start_proxy
from .security.permissions import Permissions, reserved_entries
from .security.private_files import check_state_dir
from .security.secrets import SecretBox
from .security.state_addresses import state_addresses
from .services import HostServices
from .worker import WorkerSpec

log = logging.getLogger("host")


@checked_api
class PluginHost:
    """Run plugins in sandboxed Deno workers.

    >>> async with PluginHost(HostConfig(plugins_dir="plugins")) as h:
    ...     await h.call("calc", "add", 1, 2)
    """

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = checked_config(config).revalidated()  # fields set since it was made, too
        self._running, self._once = False, RunOnce()
        self._found = False  # the first scan of the plugin directories is done (readiness needs it)
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._runtime: Runtime | None = None
        self._services: HostServices | None = None
        self._exec: ExecutePools | None = None  # ad-hoc code's pools, while running
        self._egress: EgressProxy | None = None  # security.egress_proxy
        self._reserved: set[str] = set()  # host:port refused to every worker (reserve_address)
        self._hub = EventHub()
        self.logbook = LogBook()  # each plugin's recent console and lifecycle: logs(), the dashboard
        self._logs = LogRouter(self.logbook)
        self._hub.subscribe(self._logs.event)
        self._box = SecretBox(self.config)  # the key that seals secret config values at rest
        self._registry = Registry(self.config, self._hub, self._box, self._new_pool, self._logs.worker_event)
        self._pipeline = CallPipeline(self.config, self._registry.pool_of, lambda: self._tg if self._running else None)
        self._pipeline.loading, self._pipeline.settle = self._registry.loader.busy, self._registry.settle
        self.metrics = HostMetrics(self.plugins)  # Prometheus: GET /metrics, or metrics.render()
        self._history = open_history(self.config)
        self._stations = stations = Stations(self.config.stations)
        self._registry.stations_of = lambda pid: [s.name for s in stations.of_plugin(pid)]
        self._registry.station_base, self._registry.station_scripts = stations.configured_config, stations.scripts
        self._registry.stations_refresh, self._registry.note = stations.refresh, self.logbook.note
        self._switches = Switches(self.config)
        self._registry.disabled, self._registry.switched = self._switches.disabled, self._switches.refresh
        self._registry.private_network, self._registry.limits_for = self._switches.private_network, self._switches.limits
        self.grant_overrides = GrantOverrides(self.config, self._switches, self._registry, self._audit)  # get/set
        self._balances = Balances(self.config.balances, self._registry, self._pipeline.run, self.metrics.observe,
                                  self._history, self.config.low_balance_for,
                                  lambda: self._tg if self._running else None, stations)
        self._admin = ConfigAdmin(self._registry, self._box, self.call)
        self.stations = StationAdmin(self._registry, stations, self._admin, self._registry.rescan)
        self._admin.stations = lambda: {s.name: s.plugin for s in stations.all().values() if s.plugin}
        self._events = Events(self.config, self._registry, self.call)
        self.packages = PackageAdmin(self.config, self._registry)  # install, update, uninstall (audited)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> PluginHost:
        self._once.enter()  # before the try: a refused entry must not close the running host
        try:  # a start that fails, from its first step on, closes what __init__ opened (the host has run)
            check_state_dir(self.config.state_path)  # writable, with room: or a StateError saying why
            self._runtime = Runtime.create(self.config, redact=self._registry.redact_secrets)
            with contextlib.suppress(OSError):  # now, while the interpreter surely exists; else at a spawn
                self._runtime.reaper.start()
            for host, port in state_addresses(self.config):  # its Redis and PostgreSQL: no worker's
                self.reserve_address(host, port)
            self._runtime.reserved_addresses[:] = sorted(self._reserved)
            self._services = HostServices(self.config.state_path, database=self.config.state.database,
                                          channel=self.config.state.channel_storage, execute=self.config.execute)
            if warmed := self._pipeline.cache.warm_up():
                log.info("result cache: %d entries loaded from %s", warmed, self.config.state_path)
            self._stack = stack = AsyncExitStack()
            self._tg = tg = await stack.enter_async_context(anyio.create_task_group())
            self._registry.open(self._runtime, tg)
            self._services.open(tg)
            self._exec = ExecutePools(self.config.execute, self.config.security, self.config.limits, self._runtime,
                                      self._new_pool, lambda pool: tg.start(pool.serve), tg.start_soon)
            self._services.tools = self._exec.tools
            self._running = self._registry.running = True
            self._hub.closed = False  # events() streams from now until aclose
            assert self._registry.store is not None
            await self._registry.store.verify()  # a wrong secret key fails the start, before any worker
            await open_stores(self.config, stack, self._stations, self._switches)
            if self.config.security.egress_proxy:  # before any spawn: workers get its URL
                self._egress = await start_proxy(tg, self._runtime, self.config.security,
                                                 lambda pid: egress_grants(pid, self._exec, self._registry))
            await self._registry.load(await move_bare_station_configs(  # stations of before, then the plugins
                self.config, self._registry.store, self._stations, self._registry.discover(first=True)),
                background=self.config.load == "background")
            self._found = True
            await seal_stored_secrets(self._registry.store, self._registry.records)
            if self.config.health.interval > 0:
                tg.start_soon(self._events.health_loop)
            if self.config.reload.enabled or self.config.state.database:
                tg.start_soon(self._registry.watch_loop)
        except BaseException as exc:
            await self.__aexit__(None, None, None)
            raise ungrouped(exc)  # trio's Ctrl-C in a start's task group: KeyboardInterrupt, not a group
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._once.exit() == "forked":  # a forked child: the workers it would stop are the parent's
            return
        try:
            await self.aclose()
        finally:
            if self._runtime is not None:
                self._runtime.egress = None  # the proxy stops with the task group
            try:  # a cancelled caller (trio raises at every await): what follows still runs
                if self._tg is not None and self._stack is not None:
                    self._tg.cancel_scope.cancel()
                    stack, self._tg, self._stack = self._stack, None, None
                    await stack.aclose()
            finally:
                self._registry.close()
                if self._runtime is not None:
                    self._runtime.close()
                if self._services is not None:  # every worker is gone: no host call uses them
                    self._services.close()
                self._pipeline.close()
                self._history.close()

    @any_time
    async def aclose(self) -> None:
        """Drain every pool (calls in flight finish), then stop all workers. Callable from any task; leaving ``async with`` does it too."""
        if self._once.stop() == "forked":  # a forked child: the workers it would stop are the parent's
            return
        self._running = self._registry.running = self._found = False
        with anyio.CancelScope(shield=True):
            try:
                async with anyio.create_task_group() as tg:
                    for pool in [r.pool for r in self._registry.records if r.pool is not None]:
                        tg.start_soon(pool.stop)
                    for pool in self._exec.pools() if self._exec is not None else ():
                        tg.start_soon(pool.stop)
                await self._balances.flush()  # the history's last points (written in the background)
            finally:
                self._hub.close()  # readers of events() stop with the host, its last events read

    def reserve_address(self, host: str, port: Port) -> None:
        """Refuse ``host:port`` to every worker spawned from now on, private network allowed or not
        (``serve``'s own address): a wildcard host is every address of the machine, a name its addresses."""
        self._reserved.update(reserved_entries(host, port))
        if self._runtime is not None:
            self._runtime.reserved_addresses[:] = sorted(self._reserved)

    @property
    def running(self) -> bool:
        """Between the start of ``async with`` and the start of its close."""
        return self._running

    @property
    def ready(self) -> bool:
        """Running, its plugins found, none still loading or starting: what /healthz/ready says."""
        return self._running and self._found and not self._starting()

    def _starting(self) -> bool:
        return any(state in STARTING for state in self.states().values())

    def _new_pool(self, spec: WorkerSpec, config: PoolConfig, **kw: Any) -> Pool:
        assert self._runtime is not None and self._services is not None
        return Pool(spec, self._runtime, config, on_log=self._logs.line, host_call=self._services.handle, **kw)

    # ------------------------------------------------------------------ plugins (plugins/registry.py)

    async def rescan(self, files: bool = True) -> None:
        """Look at the plugin directories (unless not ``files``) and the shared state now: load new
        plugins, reload changed ones, stop removed ones (the watcher: every ``reload.interval``)."""
        await self._registry.rescan(files)

    async def reload(self, name: str) -> bool:
        """Load the plugin's code anew (a new pool, the old draining): True, or False with the old
        version serving on (``PluginInfo.reload_error``)."""
        return await self._registry.reload(name)

    async def approve(self, name: str, *, by: str = "python", grants: list[str] | None = None) -> bool:
        """Approve the grants the plugin's pending version asks for, then load it (see
        ``Registry.approve``); ApprovalChanged if ``grants`` is not what waits now."""
        return await self._registry.approve(name, by=by, grants=grants)

    async def enable(self, name: str, *, by: str = "python") -> None:
        """Start a disabled, stopped or failed plugin again (metadata read anew); kept enabled (audited)."""
        await self._switch(name, True, by)

    async def disable(self, name: str, *, by: str = "python") -> None:
        """Stop the plugin's workers (calls in flight finish), refuse calls until enabled; kept (audited)."""
        await self._switch(name, False, by)

    async def _switch(self, name: str, on: bool, by: str) -> None:
        pid = self._registry.record(name).id
        await self._switches.set(pid, on, by)
        self._audit("enable" if on else "disable", plugin=pid, by=by)
        await (self._registry.enable if on else self._registry.disable)(name)

    async def allow_private_network(self, name: str, allow: bool = True, *, by: str = "python") -> bool:
        """Let the plugin reach private and loopback addresses (a relay station on the LAN), or
        not: the operator's opt-in, kept across restarts and audited; its workers restart with
        it. True when it serves afterwards."""
        pid = self._registry.record(name).id
        await self._switches.set_private_network(pid, allow, by)
        self._audit("allow_private_network", plugin=pid, allow=allow, by=by)
        return await self._registry.restart(name)

    def _audit(self, event: str, **fields: Any) -> None:
        if self._runtime is not None:
            self._runtime.audit.record(event, **fields)

    async def unload(self, name: str) -> None:
        """Release every worker of the plugin; it stays listed as `stopped` until enabled."""
        await self._registry.unload(name)

    async def restart(self, name: str) -> bool:
        """Fresh workers for the plugin (a new pool, or a start again after a failure); True if it serves."""
        return await self._registry.restart(name)

    def reset(self, name: str) -> None:
        """Leave a crash loop: the pool starts workers again."""
        self._registry.reset(name)

    def pool(self, name: str) -> Pool:
        """The pool of one plugin, whatever its state (for operations such as ``reset()``)."""
        return self._registry.pool(name)

    # ------------------------------------------------------------------ logs

    def add_log_listener(self, fn: LogListener) -> Callable[[], None]:
        """Receive every worker log line as ``fn(plugin_id, worker, log)``; returns a remover."""
        return self._logs.add_listener(fn)

    def logs(self, name: str, *, level: str = "debug", after: Limit = 0, limit: Limit = 200) -> list[JournalEntry]:
        """The plugin's recent log, what ``--debug`` shows: its workers' console lines and the
        lifecycle of the plugin and its workers, oldest first; ``level`` and above, entries
        after sequence number ``after``, at most ``limit``."""
        return self.logbook.read(self._registry.record(name).id, level=level, after=after, limit=limit)

    # ------------------------------------------------------------------ calls (policy/pipeline.py)

    async def call(self, plugin: str, fn: str, *args: Any, timeout: Timeout | None = None,
                   priority: Priority = 0, refresh: bool = False) -> Any:
        """Call ``fn(*args)`` exported by ``plugin``; ``timeout`` (seconds) covers rate-limit waits, queueing,
        running and retries; past it the worker is killed and CallTimeout raised. The plugin's policies apply
        in order: result cache (a cached result returns at once, with no quota used), rate limit
        (RateLimited), concurrency caps (a slot held until the call ends), circuit breaker (CircuitOpen), then
        the call, retried per its RetryConfig. ``refresh`` skips the cached result and caches the new one.
        Where calls queue (for a slot under the caps, for a free worker), higher ``priority`` goes first.
        Cancelling the caller cancels the call: a queued one never runs, a running one has its
        ``context.signal`` aborted."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await self._pipeline.value(plugin, fn, list(args), timeout, priority, refresh)
        except BaseException as exc:
            outcome = outcome_of(exc)
            if isinstance(exc, PluginError):  # a failed call shows in the plugin's log, with where it threw
                self._logs.call_failed(plugin.partition("@")[0], fn, exc)
            plugin, fn = failure_labels(plugin, fn, exc, self._registry.record)  # keep the label sets bounded
            raise
        finally:
            self.metrics.observe(plugin, fn, outcome, time.perf_counter() - started)

    async def clear_cache(self, name: str | None = None) -> int:
        """Drop the cached results of one plugin (every plugin's when None); how many entries went."""
        return await self._pipeline.cache.clear(None if name is None else self._registry.record(name).id)

    def set_policy(self, name: str, *, rate_limit: RateLimitConfig | None = None,
                   retry: RetryConfig | None = None, breaker: BreakerConfig | None = None,
                   max_concurrent: int | None = None, cache: CacheConfig | None = None) -> None:
        """Override the plugin's policies from now on (the sections given; the others keep
        their current setting). ``max_concurrent`` caps its calls admitted at once (0: no
        cap). The breaker's state, the cached results and the counters carry over."""
        pid = self._registry.record(name).id
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
        timeout: Timeout | None = None,
        permissions: Any = None,
        tools: list[Any] | None = None,
        language: str = "javascript", by: str = "python",
    ) -> ExecuteResult:
        """Run module ``code``, calling its export ``entry`` with ``input`` (Isolate's contract):
        errors come back as ``exception`` log entries, never raised. ``input`` left out reaches
        the code as ``undefined``; ``None`` as ``null``. ``permissions``: a Permissions, a dict,
        ``"none"``, or a list of those merged by Isolate's rules (``Permissions.merge``), within
        ``[execute] allow`` (GrantRefused beyond it). ``tools``: names or ``[name, settings]``,
        left out: crypto (ToolRegistry.read). ``language="typescript"``: types stripped, not
        checked (InvalidCode if it does not parse). ``by``: who asked (audit)."""
        return await self._executor().run(code, input, entry=entry, timeout=timeout, permissions=permissions,
                                          tools=tools, running=self._running, language=language, by=by)

    async def format_execute(self, answer: dict[str, Any], out: ExecuteResult) -> Any:
        """The HTTP answer of an execution, as the ``[execute.hooks] format`` hook reshapes it."""
        return await self._executor().hooks.format(answer, out)

    async def warm_execute(self) -> None:
        """Start the pool for code without permissions now (``execute.min_workers`` warm), so
        that the first ``execute`` finds a worker ready (HostClosed unless it serves: api_args)."""
        await self._executor().pool_for(Permissions())

    def _executor(self) -> ExecutePools:
        if self._exec is None:
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        return self._exec

    # ------------------------------------------------------------------ introspection

    def plugins(self) -> list[PluginInfo]:
        """A snapshot of every plugin version: state, version, each worker's pid, state, heartbeat."""
        return [self._info(r) for r in self._registry.sorted_records()]

    def states(self) -> dict[str, str]:
        """Plugin id -> state (of its newest version): what ``plugins()`` says of each, without
        building the snapshots (health checks ask this often)."""
        return {r.id: r.state for r in self._registry.sorted_records()}

    def plugin(self, name: str) -> PluginInfo:
        """The snapshot of one plugin (``id`` = its highest version, or ``id@version``)."""
        return self._info(self._registry.record(name))

    def _info(self, r: Plugin) -> PluginInfo:
        sched = self._pipeline.scheduler
        info = plugin_info(r, self._pipeline.policies.get(r.id), sched.queued(r.id), sched.running(r.id),
                           self._pipeline.cache.size(r.id))
        info.latency_p50_ms, info.error_rate = self.metrics.recent_stats(r.id)
        add_grants(info, r, self._registry.grants(r), self.config.security.max_net_hosts)
        if self._egress is not None:
            add_egress(info, self._egress.counters(r.id))
        return info

    # ------------------------------------------------------------------ balances, events, config

    async def query_balances(self, *, refresh: bool = False, timeout: Timeout | None = None) -> list[BalanceResult]:
        """Every balance plugin asked in parallel, each under its own policies and ``timeout``
        (default ``balances.timeout``); one BalanceResult per plugin id; ``refresh``: not cached."""
        return await self._balances.query_balances(refresh=refresh, timeout=timeout)

    async def balance_history(self, provider: str | None = None, *, since: dt.datetime | None = None,
                              until: dt.datetime | None = None, limit: Limit = 10_000) -> list[BalancePoint]:
        """The recorded balances, oldest first: of one provider or all, within [since, until]."""
        return await self._balances.balance_history(provider, since=since, until=until, limit=limit)

    async def balance_alerts(self, provider: str | None = None, *, limit: Limit = 1000) -> list[Alert]:
        """The balance alerts said so far (low_balance, balance_recovered, failing, recovered),
        oldest first; ``[balances.alerts]`` says where each also went."""
        return await self._balances.balance_alerts(provider, limit=limit)

    async def emit(self, event: str, payload: Any = None, *, timeout: Timeout | None = None,
                   stop_at_first: bool = False) -> list[EventReply]:
        """Deliver ``event`` to every running plugin whose capabilities list it, highest
        ``priority`` first, each ``onEvent(event, payload, context)`` with its own timeout;
        ``stop_at_first``: stop at the first that returns a value."""
        return await self._events.emit(event, payload, timeout=timeout, stop_at_first=stop_at_first)

    async def check_health(self) -> dict[str, bool]:
        """``healthCheck(config)`` of every running plugin exporting it: unhealthy marks it
        `degraded`, healthy brings it back to `running`. Returns plugin key → healthy."""
        return await self._events.check_health()

    def config_schema(self, name: str) -> dict[str, Any]:
        """The plugin's configSchema as JSON-ready dicts (what the dashboard builds its form from)."""
        return self._admin.config_schema(name)

    def get_config(self, name: str) -> dict[str, Any]:
        """The plugin's config as stored, with every ``secret`` field masked."""
        return self._admin.get_config(name)

    async def set_config(self, name: str, values: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Validate ``values`` (schema, then the plugin's ``validateConfig``), store them and
        restart the plugin with them; InvalidConfig never echoes a secret. Returns the masked config."""
        return await self._admin.set_config(name, values, replace=replace)

    def effective_config(self, name: str) -> dict[str, Any]:
        """The config the plugin's workers got: stored values over host.toml's, secrets opened,
        defaults filled in (what ``queryBalance(config)`` is called with). Never log it."""
        return dict(self._registry.pool_of(name).spec.config or {})

    def masked(self, text: str) -> str:
        """``text`` with every secret a plugin's config holds replaced by a mask."""
        return self._registry.redact_secrets(text)

    async def reset_config(self, name: str, *, by: str = "python") -> dict[str, Any]:
        """Forget the plugin's stored config (host.toml's ``[plugins.ID] config`` stays) and
        restart it with what is left (audited). Returns that config, masked."""
        pid = self._registry.record(name).id
        self._audit("config_reset", plugin=pid, by=by)
        return await self._admin.reset_config(name)

    async def export_config(self, name: str | None = None, *, passphrase: str | None = None) -> dict[str, Any]:
        """One plugin's config or all, secret fields encrypted (host key, or ``passphrase``)."""
        return await self._admin.export_config(name, passphrase=passphrase)

    async def import_config(self, document: dict[str, Any], *, passphrase: str | None = None,
                            replace: bool = False) -> dict[str, dict[str, Any]]:
        """Import an ``export_config`` document: all checked, then all stored, or nothing."""
        return await self._admin.import_config(document, passphrase=passphrase, replace=replace)

    # ------------------------------------------------------------------ plugin events

    async def settled(self, timeout: Wait) -> bool:
        """Wait, at most ``timeout`` seconds, until no plugin is still loading or starting
        (what /healthz/ready waits for); True when none is."""
        return await self._hub.wait_until(lambda: not self._starting(), timeout)

    def subscribe(self, fn: Callable[[PluginEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` on every plugin state change; returns an unsubscribe function."""
        return self._hub.subscribe(fn)

    def events(self, buffer: Limit = 1000) -> Any:
        """``async with h.events() as s: async for event in s: ...`` until the host stops (HostClosed if not running)."""
        return self._hub.stream(buffer, lambda: self._once.check_caller("PluginHost.events"))


__all__ = ["PluginHost"]
