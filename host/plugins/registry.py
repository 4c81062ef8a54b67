"""The installed plugins: discovered, loaded (metadata read in a worker with no permissions,
validated, strict mode and approvals applied), started in dependency order, hot-reloaded,
enabled, disabled and stopped. One record per plugin version; ``record(name)`` resolves
``id`` (its highest version) or ``id@version``.

The registry imports nothing of the facade: what it needs of the host (a pool factory, the task
group, the worker journal) it receives when the host starts."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from .. import module_cache
from ..config import HostConfig, UsageScriptConfig, WorkerLimits
from ..errors import (
    HostClosed,
    InvalidConfig,
    PluginNotFound,
    PluginUnavailable,
    StateError,
)
from ..logs import Throttle
from ..policy.cache import digest
from ..pool import Pool
from ..protocol import HOOKS
from ..runtime import Runtime
from ..security.approvals import Approvals, open_approvals
from ..security.permissions import Permissions
from ..security.secrets import SecretBox
from ..worker import Worker, WorkerSpec
from .approval_gate import approve_pending, held_for_approval
from .config_store import Configs, open_configs, unchanged
from .dependents import dependency_error, rejudge, wait_for_dependencies
from .discovery import PluginSource, check_plugin_dirs, load_manifest
from .hooks import config_changed
from .host_lists import refreshed_together
from .keys import station_key
from .lifecycle import SERVING, EventHub, Plugin
from .loading import Loader, failure
from .manifest import KNOWN_CAPABILITIES, Manifest, infer_capabilities, unresolved
from .overrides import narrowed_grants
from .registry_lock import RegistryLock
from .reload import digests, fingerprint, still_read
from .settings import apply_schema, redact, schema_fields, secret_values
from .state_retry import retry_state_failures
from .swap import reload_record
from .usage_scripts import discover_sources, refusal_advice
from .watch import scan_files, settle_files

log = logging.getLogger("host")
RETIRED_SECRETS = 32  # replaced secret values of one plugin still masked (the newest first)
_warn = Throttle(log)

PoolFactory = Callable[..., Pool]  # (spec, pool config, **pool options) -> a Pool not yet serving
Journal = Callable[[Worker, str, str], None]  # (worker, level, text): its lifecycle, for the plugin log


class Registry:
    """Every plugin version the host knows, and what starts, reloads and stops them."""

    def __init__(self, config: HostConfig, hub: EventHub, box: SecretBox, new_pool: PoolFactory,
                 journal: Journal) -> None:
        self.config = config
        self.records: list[Plugin] = []
        self._only: dict[str, Plugin] = {}  # id -> its one installed version (cleared when records change)
        self.lock = RegistryLock()  # one rescan, reload or config change at a time (a pool starts outside)
        self.running, self.refreshing = False, None  # refreshing: an Event set once stations and configs agree
        self.runtime: Runtime | None = None
        self.store: Configs | None = None
        self.approvals: Approvals | None = None
        self._hub = hub
        self._box = box
        self._new_pool = new_pool
        self._journal_worker = journal
        self._secrets: dict[str, list[str]] = {}  # plugin id -> secret values to redact
        self._stale_warned: set[tuple[str, str, str]] = set()  # stored config fields a version dropped
        self._tg: TaskGroup | None = None
        self.loader = Loader(self)  # loading.py: at start, and in the background
        # Relay stations (host/balances/stations.py sets these): the stations a provider plugin
        # serves besides its own, host.toml's config of one, and the usage-script stations.
        self.stations_of: Callable[[str], list[str]] = lambda plugin_id: []
        self.station_base: Callable[[str], dict[str, Any]] = lambda name: {}
        self.station_scripts: Callable[[], dict[str, Any]] = dict
        self.stations_refresh: Callable[[], Awaitable[set[str]]] = unchanged  # stations another process changed
        self.note: Callable[[str, str, str], None] = lambda plugin, level, text: None  # the plugin's log
        self.disabled: Callable[[str], str | None] = lambda plugin_id: None  # why it must not start
        self.switched: Callable[[], Awaitable[set[str]]] = unchanged  # plugins another host switched
        self.private_network: Callable[[str], bool] = config.allow_private_network_for
        self.limits_for: Callable[[str], WorkerLimits] = config.limits_for  # with a call timeout kept for it
        self.narrow: Callable[[str, Permissions], tuple[Permissions, dict[str, str]]] = (
            lambda pid, grants: narrowed_grants(config, None, pid, grants))  # GrantOverrides adds the API's

    def open(self, runtime: Runtime, tg: TaskGroup) -> None:
        """The host started: its runtime, its task group, the config store and approvals."""
        self.runtime, self._tg = runtime, tg
        tg.start_soon(module_cache.watch, runtime.deno_dir)  # grown by modules made at run time
        self.store = store = open_configs(self.config.state_path, self.config.state.database, self._box)
        self._box.sealed_exist = lambda: store.has_sealed
        self.approvals = open_approvals(self.config.state_path, self.config.state.database, runtime.audit)

    def forget(self, record: Plugin) -> None:
        self.records.remove(record)
        self._only.clear()

    def close(self) -> None:
        self.running, self._tg = False, None
        for store in filter(None, (self.store, self.approvals)):
            store.close()

    def newest(self, records: Iterable[Plugin] | None = None) -> dict[str, Plugin]:
        """The highest version of each plugin id (among ``records``, by default every one)."""
        return newest(self.records if records is None else records)

    def discover(self, *, first: bool = False) -> list[PluginSource]:
        """The plugins in the plugin directories, and the cc-switch usage scripts as plugins;
        ``first`` (the host's start): a plugins directory that is a file fails it."""
        if first:
            check_plugin_dirs(self.config.plugin_dirs)
        scripts = {name: UsageScriptConfig(script=s.script, file=s.file, name=s.name)
                   for name, s in self.station_scripts().items()}
        return discover_sources(self.config, scripts)

    async def load(self, sources: list[PluginSource], *, background: bool = False) -> None:
        """Discovered → loaded (metadata read in a worker with no permissions, validated) →
        dependencies resolved → running, level by level in dependency order; ``background``:
        the plugins the manifest cache does not know are `loading` meanwhile (loading.py)."""
        records = [Plugin(src, self._hub.emit) for src in sources]
        self.records.extend(records)
        self._only.clear()
        await self.loader.load(records, background)

    async def settle(self, name: str, timeout: float | None = None) -> None:
        """Wait while plugin ``name`` loads in the background (a call's ``timeout``, by default
        its call_timeout; CallTimeout past it), its load moved to the front."""
        if not self.running:
            return  # the caller's next step says the host is closed
        pid = name.partition("@")[0]
        await self.loader.wait(name, self.limits_for(pid).call_timeout if timeout is None else timeout)

    async def _read_manifest(self, record: Plugin, fp: tuple | None = None) -> tuple[Manifest, list[str]]:
        """Load the plugin's current code in a worker with no permissions and validate it.
        ``fp``: its fingerprint, when the caller just took it."""
        src = record.source
        assert self.runtime is not None
        record.fingerprint = await anyio.to_thread.run_sync(fingerprint, src.root) if fp is None else fp  # before reading
        # its files, and the code among them its pool's workers load: one walk, one thread hop
        record.read_digest, record.code_digest = await anyio.to_thread.run_sync(digests, src.root)
        manifest, exports = await load_manifest(src, self.runtime, self.config.limits_for(src.id),
                                                https_only=self.config.security.https_only)
        for cap in infer_capabilities(manifest, exports):
            self.note(src.id, "warning", f"exports {KNOWN_CAPABILITIES[cap]} without declaring it: treated as "
                      f'capability "{cap}"; add "{cap}" to metadata.capabilities in {src.module}')
        self._judge_permissions(src, manifest)
        return manifest, exports

    def _judge_permissions(self, src: PluginSource, manifest: Manifest) -> None:
        """Strict mode: record (and log, or refuse with InvalidConfig) what is risky in the
        plugin's grants. (Grants no plugin may have are refused in every mode by
        ``load_manifest``.)"""
        sec, runtime = self.config.security, self.runtime
        assert runtime is not None
        findings = [] if sec.strict == "off" else manifest.findings(max_net_hosts=sec.max_net_hosts)
        if not findings:
            return
        refused = sec.strict == "refuse"
        runtime.audit.record("strict", plugin=src.id, version=manifest.version, findings=findings,
                             action="refused" if refused else "warned")
        if refused:
            raise InvalidConfig("refused by security.strict: " + "; ".join(findings), plugin=src.id)
        log.warning("plugin %s@%s: risky permissions: %s", src.id, manifest.version, "; ".join(findings),
                    extra={"plugin": src.id})

    async def _inspect(self, record: Plugin) -> None:
        try:
            record.manifest, record.exports = await self._read_manifest(record)
        except Exception as exc:  # whatever one plugin's load raises stays with that plugin
            record.set_state("error", failure(record, "load", exc))
            return
        record.set_state("loaded")

    def raw_config(self, plugin_id: str, stored: dict[str, Any] | None = None) -> dict[str, Any]:
        """HostConfig's ``plugins.<id>.config`` (a station's: ``stations.<name>.config``),
        overlaid by what ``set_config`` stored (or ``stored``: that as the store holds it now)."""
        assert self.store is not None
        return {**self.base_config(plugin_id), **((self.store.get(plugin_id) if stored is None else stored) or {})}

    def base_config(self, plugin_id: str) -> dict[str, Any]:
        return (dict(self.config.plugins[plugin_id].config) if plugin_id in self.config.plugins
                else self.station_base(plugin_id))

    def redact_secrets(self, text: str) -> str:
        """``text`` with the secret values of every plugin masked."""
        return redact(text, sorted((s for values in self._secrets.values() for s in values),
                                   key=len, reverse=True))

    def effective_config(self, plugin_id: str, manifest: Manifest) -> dict[str, Any]:
        """The config the plugin's workers get: validated against its configSchema, defaults
        filled in. Its secret values are redacted everywhere, and so are the RETIRED_SECRETS last
        ones a rotation replaced (a worker kept across onConfigChange still holds them)."""
        values = self._box.reveal(schema_fields(manifest.config_schema, self.raw_config(plugin_id),
                                                self.base_config(plugin_id), plugin=plugin_id,
                                                version=manifest.version, warned=self._stale_warned), plugin=plugin_id)
        now = secret_values(manifest.config_schema, values)
        self._secrets[plugin_id] = now + [s for s in self._secrets.get(plugin_id, []) if s not in now][:RETIRED_SECRETS]
        return apply_schema(manifest.config_schema, values, plugin=plugin_id)

    def secrets_of(self, name: str) -> list[str]:
        """The secret values of a plugin's (or a station's) config, longest first, for redaction."""
        return list(self._secrets.get(name, []))

    def spec(self, record: Plugin, manifest: Manifest, config: dict[str, Any] | None = None,
             also: list[dict[str, Any]] | tuple = (), **extra: Any) -> WorkerSpec:
        """What the plugin's workers run: its module, with ``config`` and the permissions
        ``manifest`` declares (config references resolved with ``config``, and with each of
        ``also``: the configs of the stations it serves)."""
        src = record.source
        grants = manifest.grants_for(config, allow_private_network=self.private_network(src.id),
                                     also=also)
        grants, overridden = self.narrow(src.id, grants)  # the operator's narrowing (plugins/overrides.py)
        extra.setdefault("overridden", overridden)
        extra.setdefault("advice", refusal_advice(src, manifest) if src.usage_script else {})  # not its module
        assert self.runtime is not None
        return WorkerSpec(plugin_id=src.id, module=src.module, base_dir=self.runtime.data_dir(src.id),
                          read_paths=[str(src.root)], permissions=grants, config=config,
                          limits=self.limits_for(src.id), inspect=self.config.inspect_flag(src.id),
                          journal=self._journal_worker, metadata=manifest.call_shapes(), **extra)

    def grants(self, record: Plugin) -> Permissions | None:
        """What the plugin's workers may do: as its pool was started, else as declared."""
        if record.pool is not None:
            return record.pool.spec.permissions
        return record.manifest.grants if record.manifest is not None else None

    async def _open_pool(self, record: Plugin, manifest: Manifest, exports: list[str]) -> Pool:
        """Start a pool for ``record`` with the permissions ``manifest`` declares and its
        validated config (InvalidConfig if the config does not satisfy the schema)."""
        assert self._tg is not None
        src, cfg = record.source, self.config
        config = self.effective_config(src.id, manifest)
        stations, errors = self._station_configs(src.id, manifest)
        keys = [src.id, *map(station_key, stations)]
        spec = self.spec(record, manifest, config=config, also=list(stations.values()),
                         redact=lambda text: redact(text, sorted(
                             (v for k in keys for v in self._secrets.get(k, [])), key=len, reverse=True)),
                         start_hook=HOOKS["start"] in exports,
                         files_changed=still_read(src.root, record.code_digest, src.id, manifest.version))
        spec.cache_salt = digest(manifest.version, spec.config)
        pool_config = cfg.pool_for(src.id)
        if stations and (src.id not in cfg.plugins or cfg.plugins[src.id].pool is None):
            pool_config = msgspec.structs.replace(
                pool_config, max_inflight=max(pool_config.max_inflight, cfg.balances.station_inflight))
        pool = self._new_pool(spec, pool_config, on_state=record.sync_with_pool)
        pool.station_configs, pool.station_errors = stations, errors  # the record sees them once it serves
        await self._tg.start(pool.serve)
        return pool

    def _station_configs(self, plugin_id: str, manifest: Manifest) -> tuple[dict[str, Any], dict[str, str]]:
        """Each station's own config, checked on its own (schema, hosts a grant can name, the
        HTTPS-only narrowing): one that fails is left out of the pool, with why."""
        configs, errors = {}, {}
        for name in self.stations_of(plugin_id):
            try:
                c = self.effective_config(station_key(name), manifest)
                if bad := unresolved(manifest, c):
                    raise InvalidConfig("; ".join(bad))
                manifest.grants_for(c).net_grant(https_only=self.config.security.https_only)
            except InvalidConfig as exc:
                errors[name] = f"invalid config: {exc.message}"
            except StateError as exc:  # its row in the [state] database damaged: this station only
                errors[name] = exc.message
            else:
                configs[name] = c
        return configs, errors

    async def approve(self, name: str, *, by: str = "python", grants: list[str] | None = None) -> bool:
        """Approve the grants the plugin's pending version asks for (audited), then load it.
        ``grants``: the ones the operator was shown; if what waits differs now, ApprovalChanged
        and nothing is approved. InvalidConfig when nothing waits for approval. True when the
        plugin serves afterwards."""
        await self.settle(name)
        record = self.record(name)
        assert self.approvals is not None
        await approve_pending(self.approvals, record, grants, by)
        if record.state in SERVING:
            return await self.reload(name)
        await self.enable(name)
        return record.state in SERVING

    async def _start(self, record: Plugin) -> None:
        """Start the plugin's pool with the permissions its manifest declares (once approved),
        unless the operator keeps it off."""
        assert record.manifest is not None
        if (why := self.disabled(record.id)) is not None:
            record.set_state("disabled", why)
            return
        try:
            assert self.approvals is not None
            if await held_for_approval(self.approvals, record, record.manifest, record.exports, self.config):
                return
            if (why := self.disabled(record.id)) is not None:  # switched off while its approval was looked at
                record.set_state("disabled", why)
                return
            record.release()
            before = record.state
            async with self.lock.stepped_out():  # its onStart may take up to hook_timeout
                pool = await self._open_pool(record, record.manifest, record.exports)
            # disabled (the switch counts: one said before `before` was taken let the pool serve) or removed
            if record.state != before or record not in self.records or self.disabled(record.id) is not None:
                await pool.stop()
                if record.state == before and (why := self.disabled(record.id)) is not None:
                    record.set_state("disabled", why)
                return
            if (why := dependency_error(self, record, record.manifest)) is not None:  # one went away meanwhile
                await pool.stop()
                wait_for_dependencies(record, why)
                return
            record.pool = pool
        except InvalidConfig as exc:
            record.set_state("error", f"invalid config: {exc.message}")
            return
        except Exception as exc:  # a state directory that fails, say: this plugin only
            record.set_state("error", failure(record, "start", exc))
            return
        if record.pool.state == "error":
            record.set_state("error", record.pool.error)
            return
        record.set_state("running")
        record.digest = record.read_digest
        if any(r.awaits_dependencies for r in self.records):
            await rejudge(self, [record.id])  # those that wait for it

    async def rescan(self, files: bool = True) -> None:
        """Look at the plugin directories (unless not ``files``) and the shared state now: load
        new plugins, reload changed ones, stop removed ones. The watcher: every ``reload.interval``."""
        settled = await settle_files(self, files)  # watch.py: the files involved quiet, before the lock
        async with self.lock:
            if not self.running:
                return
            assert self.approvals is not None and self.store is not None
            # configs and stations another process stored (the CLI): a station's change restarts its provider
            switched = await self.switched()  # first: one that raises must not swallow the others' changes
            changed = await refreshed_together(self)  # a station listed meanwhile waits for its config
            for r in list(self.records):
                names = {*self.stations_of(r.id), *r.station_configs, *r.station_errors}
                serves = {r.id, *names, *map(station_key, names)}
                if r.id in switched and (why := self.disabled(r.id)) is not None:
                    await self.stop_record(r, "disabled", why)
                elif r.id in switched and r.state == "disabled":
                    await self.enable(r.key)
                elif changed & serves and (r.state in SERVING or r.state == "error"):
                    await config_changed(self, r)  # in error (a required field missing, say): as set_config here
            if await self.approvals.refresh():  # approved from outside (the CLI): load what waited
                for r in list(self.records):
                    if r.pending_manifest is not None:
                        await (self.reload_record(r) if r.state in SERVING else self.enable(r.key))
            await scan_files(self, files, settled)  # watch.py: what settle found quiet
            await retry_state_failures(self)  # a full disk freed, say: no restart needed

    async def reload(self, name: str) -> bool:
        """Load the plugin's code anew: a new pool starts, new calls go to it, the old pool
        drains. If the new code fails to load, the old version keeps serving and the failure
        is reported (``PluginInfo.reload_error``, a ``reload_failed`` event). True on success."""
        async with self.lock:
            if not self.running:
                raise HostClosed("the host is not running")
            await self.settle(name)
            return await self.reload_record(self.record(name))

    async def reload_record(self, record: Plugin, fp: tuple | None = None) -> bool:
        """``reload`` for one version, the caller holding the lock (swap.py steps out of it while
        the new pool starts)."""
        return await reload_record(self, record, fp)

    async def watch_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.reload.interval)
            try:  # hot reload off: only what other hosts changed in the [state] database
                await self.rescan(self.config.reload.enabled)
            except Exception as exc:  # a watcher bug must not take the host down, nor flood the log
                _warn.warning("rescan", "plugin rescan failed: %s: %s", type(exc).__name__, exc)
                log.debug("plugin rescan failed", exc_info=exc)

    def record(self, name: str) -> Plugin:
        """``id@version`` exactly, or the highest installed version of ``id``."""
        only = self._only.get(name)  # a bare id with one version: what every plain call names
        if only is not None:
            return only
        pid, _, version = name.partition("@")
        versions = [r for r in self.records if r.id == pid]
        if len(versions) == 1 and not version:
            self._only[pid] = versions[0]
            return versions[0]
        if version:
            versions = [r for r in versions if r.version == version]
        if not versions:
            installed = sorted({r.key for r in self.records}) or ["none"]
            raise PluginNotFound(f"no plugin {name!r} (installed: {', '.join(installed)})", plugin=pid)
        return max(versions, key=lambda r: r.order)

    def pool_of(self, plugin: str) -> Pool:
        if not self.running:
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        record = self._only.get(plugin) or self.record(plugin)  # record()'s shortcut, inline: every call
        if record.state not in SERVING or record.pool is None:
            why = f": {record.error}" if record.error else ""
            raise PluginUnavailable(f"plugin is {record.state}{why}", plugin=record.id)
        return record.pool

    def sorted_records(self) -> list[Plugin]:
        return sorted(self.records, key=lambda r: (r.id, r.order))

    def pool(self, name: str) -> Pool:
        """The pool of one plugin, whatever its state (for operations such as ``reset()``)."""
        record = self.record(name)
        if record.pool is None:
            raise PluginUnavailable(f"plugin is {record.state}", plugin=record.id)
        return record.pool

    async def disable(self, name: str) -> None:
        """Stop the plugin's workers (calls in flight finish) and refuse calls until enabled."""
        await self.stop_record(self.record(name), "disabled", f"disabled (`python -m host enable {self.record(name).id}` starts it)")

    async def unload(self, name: str) -> None:
        """Release every worker of the plugin; it stays listed as `stopped` until enabled."""
        await self.stop_record(self.record(name), "stopped", "unloaded")

    async def enable(self, name: str) -> None:
        """Start a disabled, stopped or failed plugin again (its metadata is read anew)."""
        await self.settle(name)
        record = self.record(name)
        if record.state in SERVING:
            return
        await self.stop_record(record, record.state, None)
        await self._inspect(record)
        if record.state != "loaded":
            return
        assert record.manifest is not None
        if (why := dependency_error(self, record, record.manifest)) is not None:
            wait_for_dependencies(record, why)
            return
        await self._start(record)

    async def restart(self, name: str) -> bool:
        """Fresh workers for the plugin: a running one gets a new pool (its code and metadata
        read anew; calls in flight finish on the old workers), a disabled, stopped or failed
        one (a crash loop included) starts again. True when it serves afterwards."""
        record = self.record(name)
        if record.state in SERVING:
            if not await self.reload(name):
                if record.state not in SERVING:  # disabled or stopped by another request meanwhile
                    hint = "; `python -m host enable` starts it" if record.state == "disabled" else ""
                    raise PluginUnavailable(f"restart: the plugin is {record.state} now (by another request){hint}",
                                            plugin=record.id)
                raise PluginUnavailable(f"restart failed: {record.reload_error or record.error or 'it did not start'}",
                                        plugin=record.id)
        else:
            await self.enable(name)
        return record.state in SERVING

    def reset(self, name: str) -> None:
        """Leave a crash loop: the pool starts workers again."""
        self.pool(name).reset()

    async def stop_record(self, record: Plugin, state: str, reason: str | None, *, forget: bool = False) -> None:
        """Put ``record`` in ``state`` and stop its pool (``forget``: then it is no longer
        installed); the plugins depending on it are judged again (dependents.py)."""
        pool, record.pool = record.pool, None
        if state != record.state:  # first: a call while the pool drains is told why it is refused
            record.set_state(state, reason)
        if pool is not None:
            await pool.stop()
        if forget and record in self.records:
            self.forget(record)
        await rejudge(self, [record.id])



def loaded_manifest(record: Plugin) -> Manifest:
    """The plugin's manifest; PluginUnavailable when it never loaded (its config cannot be
    checked or exported)."""
    if record.manifest is None:
        raise PluginUnavailable(f"plugin is {record.state}: {record.error}", plugin=record.id)
    return record.manifest


def newest(records: Iterable[Plugin]) -> dict[str, Plugin]:
    """The highest version of each plugin id among ``records``."""
    return {r.id: r for r in sorted(records, key=lambda r: r.order)}



__all__ = ["Registry", "loaded_manifest", "newest"]
