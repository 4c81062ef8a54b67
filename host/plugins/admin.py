"""A plugin's configuration as the operator changes it: its schema, its masked values, a change
checked against the configSchema and by the plugin's own ``validateConfig``, then stored (secret
fields sealed) and the plugin restarted with it; export and import between machines."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import msgspec

from ..errors import InvalidConfig, PluginError, StateError
from ..security.secrets import EXPORT_FORMAT, SecretBox, export_cipher, import_cipher, is_sealed
from ..worker import one_off
from .hooks import config_changed
from .keys import station_key
from .lifecycle import SERVING, Plugin
from .manifest import Manifest
from .registry import Registry, loaded_manifest
from .settings import MASK, apply_schema, mask, redact, secret_keys, secret_values, unmasked

SWAP_ATTEMPTS = 5  # a config change merged again into what another host stored meanwhile, at most
Call = Callable[..., Awaitable[Any]]  # (plugin, fn, *args): a call through the host's pipeline

log = logging.getLogger("host")


def changed_elsewhere(what: str, plugin: str | None) -> StateError:
    return StateError(f"{what} changed elsewhere (another host or process) {SWAP_ATTEMPTS} times while "
                      "this change was checked; send it again", plugin=plugin)


class ConfigAdmin:
    """Reads and changes plugins' config; ``call`` reaches a running plugin (its validateConfig)."""

    def __init__(self, registry: Registry, box: SecretBox, call: Call) -> None:
        self._reg = registry
        self._box = box
        self._call = call
        self.stations: Callable[[], dict[str, str]] = dict  # relay stations: name -> provider plugin id
        self._turns: dict[str, anyio.Lock] = {}  # a config key -> this host's changes of it take turns

    def config_schema(self, name: str) -> dict[str, Any]:
        """The plugin's configSchema as JSON-ready dicts: ``{field: {type, required, secret,
        default?, enum?, description?, title?}}`` (what the dashboard builds its form from)."""
        record = self._reg.record(name)
        if record.manifest is None:
            return {}
        return {k: {"required": f.required, "secret": f.secret, **msgspec.to_builtins(f)}
                for k, f in record.manifest.config_schema.items()}

    def get_config(self, name: str) -> dict[str, Any]:
        """The plugin's config as stored, with every ``secret`` field masked."""
        record = self._reg.record(name)
        raw = self._reg.raw_config(record.id)
        return mask(record.manifest.config_schema, raw) if record.manifest else {}

    async def set_config(self, name: str, values: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Validate ``values`` (merged into the stored config unless ``replace``; a secret sent
        back masked keeps its stored value) against the configSchema, then with the plugin's
        own ``validateConfig``; store it and hand it to the plugin's workers (``onConfigChange``,
        else a restart: plugins/hooks.py). Raises
        InvalidConfig (never echoing a secret). Returns the masked config."""
        record = self._reg.record(name)
        manifest, raw, _ = await self.store_checked(record, values, replace=replace)
        async with self._reg.lock:
            await config_changed(self._reg, record)
        return mask(manifest.config_schema, raw)

    async def reset_config(self, name: str) -> dict[str, Any]:
        """Forget what ``set_config`` stored for the plugin; restart it with what is left."""
        record = self._reg.record(name)
        assert self._reg.store is not None
        await self._reg.store.remove(record.id)
        async with self._reg.lock:
            if record.state in SERVING:
                await config_changed(self._reg, record)
        return self.get_config(name)

    async def store_checked(self, record: Plugin, values: dict[str, Any], *, replace: bool,
                            key: str | None = None) -> tuple[Manifest, dict[str, Any], dict[str, Any] | None]:
        """Check ``values`` (``checked_config``) and store the result under ``key`` (default the
        plugin's id) if the store still holds the config it was merged into; if another host or
        process changed it meanwhile, merge into that and check again (a field it set is kept).
        Returns the manifest, the config stored (secrets plain) and the entry it replaced. This
        host's own changes of one key take turns: racing each other's check and swap, 24 of 30
        at once were refused as changed "elsewhere"; only another host's change meets the swap."""
        store, key = self._reg.store, key or record.id
        assert store is not None
        async with self._turns.setdefault(key, anyio.Lock()):
            base = store.get(key)
            for _ in range(SWAP_ATTEMPTS):
                manifest, raw = await self.checked_config(record, values, replace=replace, key=key, stored=base or {})
                done, now = await store.swap(key, raw, secret_keys(manifest.config_schema), base)
                if done:
                    return manifest, raw, base
                base = now
        raise changed_elsewhere(f"the config of {key!r}", record.id)

    async def checked_config(self, record: Plugin, values: dict[str, Any], *, replace: bool,
                             key: str | None = None,
                             stored: dict[str, Any] | None = None) -> tuple[Manifest, dict[str, Any]]:
        """What ``set_config`` would store for ``values``, checked against the configSchema
        and by the plugin's ``validateConfig``; secrets in it are decrypted. ``key``: whose
        stored config ``values`` change (a relay station's name; default the plugin's id);
        ``stored``: its entry as the store holds it (default: this host's copy)."""
        manifest = loaded_manifest(record)
        if not isinstance(values, dict):
            raise InvalidConfig("config must be an object", plugin=record.id)
        try:  # the store keeps JSON, workers get MessagePack (no int past 64 bits): what either cannot hold is refused
            msgspec.json.encode(values)
            msgspec.msgpack.encode(values)
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            raise InvalidConfig(f"config must be JSON that a worker can be sent: {exc}", plugin=record.id) from None
        current, secret = self._reg.raw_config(key or record.id, stored), secret_keys(manifest.config_schema)
        incoming = {k: unmasked(k, v, current, secret) for k, v in values.items()}
        for k, v in values.items():  # only the host seals values: one sent sealed is not taken for its own
            if is_sealed(v) and incoming[k] != current.get(k):
                raise InvalidConfig(f"config.{k}: a value may not start with {v.split(':', 2)[0]}:"
                                    f"{v.split(':', 2)[1]}: (the host's mark for values it sealed)",
                                    plugin=record.id)
        schema, base = manifest.config_schema, self._reg.base_config(key or record.id)

        def kept(k: str) -> bool:  # sent back as get_config shows it: unchanged
            v = values[k]
            return v == current[k] or (v == MASK and is_sealed(current[k]))

        # A field an earlier version stored and this one dropped stays as stored (sealed if it was
        # a secret), unchecked (registry.effective_config), unless sent with another value (a typo
        # of a field: refused) or null (removed); one of host.toml's is refused as before
        stale = {k: v for k, v in current.items() if k not in schema and k not in base
                 and ((k not in values and not replace) or (k in values and kept(k)))}
        raw = {k: v for k, v in self._box.reveal({k: v for k, v in (incoming if replace else {**current, **incoming})
                                                  .items() if k not in stale}, plugin=record.id).items()
               if v is not None or k in schema}
        secrets = secret_values(schema, raw)
        checked = apply_schema(schema, raw, plugin=record.id)
        raw.update(stale)
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
            records = [self._reg.record(name)]
            loaded_manifest(records[0])
        else:
            records = [r for r in self._reg.newest().values() if r.manifest is not None]
        cipher, header = await anyio.to_thread.run_sync(export_cipher, self._box, passphrase)
        plugins: dict[str, dict[str, Any]] = {}
        for r in records:
            assert r.manifest is not None
            try:
                values = self._box.reveal(self._reg.raw_config(r.id), plugin=r.id)
            except StateError as exc:
                if name is not None:
                    raise
                log.warning("export: %s left out: %s", r.id, exc.message)  # nothing in it to keep
                continue
            values = {k: v for k, v in values.items() if k in r.manifest.config_schema}  # not an earlier
            if values or name is not None:  # version's fields: one was a secret, and none imports (helper-116)
                plugins[r.id] = cipher.seal_fields(values, secret_keys(r.manifest.config_schema))
        stations: dict[str, dict[str, Any]] = {}
        for station, provider in (self.stations().items() if name is None else ()):
            record = self._reg.newest().get(provider)
            try:
                values = self._box.reveal(self._reg.raw_config(station_key(station)), plugin=provider)
            except StateError as exc:
                log.warning("export: station %s left out: %s", station, exc.message)
                continue
            if values and record is not None and record.manifest is not None:
                values = {k: v for k, v in values.items() if k in record.manifest.config_schema}
                stations[station] = cipher.seal_fields(values, secret_keys(record.manifest.config_schema))
        return {"format": EXPORT_FORMAT, "encryption": header, "plugins": plugins, "stations": stations}

    async def import_config(self, document: dict[str, Any], *, passphrase: str | None = None,
                            replace: bool = False) -> dict[str, dict[str, Any]]:
        """Import an ``export_config`` document: every plugin's values are decrypted and
        checked as ``set_config`` checks them, then all are stored at once and the plugins
        restarted. A wrong passphrase or key (SecretsError), an unknown format (InvalidConfig)
        or plugin (PluginNotFound), or any invalid config changes nothing. Returns the masked
        configs by plugin id."""
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise InvalidConfig(f"not a config export: its format must be {EXPORT_FORMAT!r}")
        plugins, stations = document.get("plugins"), document.get("stations", {})
        if not isinstance(plugins, dict) or not all(isinstance(v, dict) for v in plugins.values()):
            raise InvalidConfig("a config export's plugins must be an object of {id: config object}")
        if not isinstance(stations, dict) or not all(isinstance(v, dict) for v in stations.values()):
            raise InvalidConfig("a config export's stations must be an object of {name: config object}")
        here = self.stations()
        if missing := sorted(set(stations) - set(here)):
            raise InvalidConfig(f"the export has stations this host does not: {', '.join(missing)}; add them "
                                "first (`python -m host balances add NAME --plugin ID`), then import")
        records = {pid: self._reg.record(pid) for pid in plugins}
        records.update({station_key(s): self._reg.record(here[s]) for s in stations})
        keys = {**{pid: pid for pid in plugins}, **{station_key(s): station_key(s) for s in stations}}
        every = {**plugins, **{station_key(s): v for s, v in stations.items()}}
        cipher = await anyio.to_thread.run_sync(import_cipher, self._box, document.get("encryption"), passphrase)
        opened = {k: cipher.reveal(values, plugin=records[k].id) for k, values in every.items()}
        store = self._reg.store
        assert store is not None
        store_key = {k: keys[k] if k.startswith("station:") else records[k].id for k in opened}
        async with AsyncExitStack() as turns:  # this host's changes of these keys wait (in one order: no deadlock)
            for key in sorted(set(store_key.values())):
                await turns.enter_async_context(self._turns.setdefault(key, anyio.Lock()))
            bases = {store_key[k]: store.get(store_key[k]) for k in opened}
            for _ in range(SWAP_ATTEMPTS):  # merged into what the store holds, as store_checked does
                checked = {k: await self.checked_config(records[k], opened[k], replace=replace, key=store_key[k],
                                                        stored=bases[store_key[k]] or {}) for k in opened}
                done, bases = await store.swap_many(
                    {store_key[k]: raw for k, (_, raw) in checked.items()},
                    {store_key[k]: secret_keys(m.config_schema) for k, (m, _) in checked.items()}, bases)
                if done:
                    break
            else:
                raise changed_elsewhere("the imported configs", None)
        async with self._reg.lock:
            for record in {id(r): r for r in (records[k] for k in checked)}.values():
                await config_changed(self._reg, record)
        return {store_key[k]: mask(m.config_schema, raw) for k, (m, raw) in checked.items()}

    async def _plugin_validates(self, record: Plugin, manifest: Manifest, config: dict[str, Any],
                                secrets: list[str]) -> None:
        """Ask the plugin's ``validateConfig(config)``: false, ``{valid: false, message}`` or a
        throw rejects the config."""
        try:
            if record.state in SERVING:
                with self._masked_meanwhile(record.id, secrets):
                    verdict = await self._call(record.key, "validateConfig", config)
            else:  # not running (e.g. its config was missing): ask a one-off worker
                verdict = await self._call_once(record, manifest, "validateConfig", [config], config=config,
                                                redact=lambda text: redact(text, secrets))
        except PluginError as exc:
            raise InvalidConfig(f"rejected by the plugin: {redact(exc.message, secrets)}",
                                plugin=record.id) from None
        if (why := refusal_of(verdict)) is not None:
            raise InvalidConfig(f"rejected by the plugin: {redact(why, secrets)}", plugin=record.id)

    @contextlib.contextmanager
    def _masked_meanwhile(self, plugin_id: str, secrets: list[str]) -> Iterator[None]:
        """``secrets`` of a config being checked (not stored yet) masked in what the plugin's
        workers say meanwhile, as its stored ones are: a validateConfig that echoes the key it
        refuses put it in the plugin's log and the host's. Each is added once per check and
        taken out of the same list after (a config applied meanwhile made a list of its own)."""
        held = self._reg._secrets.setdefault(plugin_id, [])
        held.extend(secrets)
        try:
            yield
        finally:
            for s in secrets:
                held.remove(s)

    async def _call_once(self, record: Plugin, manifest: Manifest, fn: str, args: list[Any], *,
                         config: dict[str, Any] | None = None, redact: Callable[[str], str] | None = None) -> Any:
        """``fn(*args)`` on a one-off worker of the plugin, started with ``config``."""
        assert self._reg.runtime is not None
        spec = self._reg.spec(record, manifest, config, redact=redact)
        return await one_off(spec, self._reg.runtime, lambda w: w.call(fn, args, spec.limits.call_timeout))


def refusal_of(verdict: Any) -> str | None:
    """Why ``validateConfig`` refused a config, or None if it did not: ``false``, seed 000's
    ``{valid: false, message}``, seed 002's ValidationResult ``{isValid: false, errors, warnings}``,
    or the usage scripts' ``{isValid: false, invalidMessage}``."""
    if verdict is False:
        return "invalid"
    if not isinstance(verdict, dict) or not (verdict.get("valid") is False or verdict.get("isValid") is False):
        return None
    for key in ("message", "invalidMessage", "errors", "error"):
        why = verdict.get(key)
        if isinstance(why, list) and why:
            return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in why)
        if why:
            return str(why)
    return "invalid"


__all__ = ["ConfigAdmin", "refusal_of"]
