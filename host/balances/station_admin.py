"""Relay stations as the operator changes them (CLI ``balances add|rm|test``, ``/api/stations``,
the dashboard): add one from a provider plugin or a pasted usage script, change its config,
remove it, and test its connection, which shows the request made and the shape of the answer
with every secret masked."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio
import msgspec

from ..errors import HostError, InvalidConfig, PluginUnavailable, StateError, StationNotFound
from ..plugins.admin import ConfigAdmin
from ..plugins.config_store import Configs
from ..plugins.keys import station_key
from ..plugins.lifecycle import SERVING, Plugin
from ..plugins.manifest import ID_RE
from ..plugins.registry import Registry, loaded_manifest
from ..plugins.settings import mask, redact, secret_keys
from ..protocol import Log
from ..worker import Worker, one_off
from .result import BALANCE_CAPABILITY, BALANCE_FUNCTION, from_error, from_reply
from .stations import MAX_TITLE, Station, StationConfig, Stations, name_fault, title_ok

MAX_SCRIPT_CHARS = 64 * 1024  # a usage script pasted into the dashboard or the API
# Connection tests running at once, each on a Deno worker of its own (~40 MB); more wait their
# turn: 25 at once started 25 workers (1.1 GB), 100 asked the provider 99 times (helper-99).
TESTS_AT_ONCE = 4
STORE_WAIT = 2.0  # seconds a listing waits for a rescan's reads of the stations and configs
SHAPE_DEPTH = 6
SHAPE_KEYS = 50


def shape(value: Any, depth: int = 0, hide: Any = str) -> Any:
    """The shape of a JSON answer, no value in it: ``{"data": {"quota": "number"}}``, a list
    as its first element's shape, so that it can be shown with nothing secret or personal
    (``hide`` masks secrets in the keys, which an answer may be keyed by)."""
    if depth >= SHAPE_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        out = {hide(str(k)): shape(v, depth + 1, hide) for k, v in items[:SHAPE_KEYS]}
        if len(items) > SHAPE_KEYS:
            out["..."] = f"{len(items) - SHAPE_KEYS} more keys"
        return out
    if isinstance(value, list):
        return [shape(value[0], depth + 1, hide), f"{len(value)} items"] if value else []
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string"}.get(type(value), type(value).__name__)


class StationAdmin:
    """Adds, changes, removes and tests stations; ``rescan`` loads what the plugin directories
    and usage-script stations hold now."""

    def __init__(self, registry: Registry, stations: Stations, configs: ConfigAdmin,
                 rescan: Callable[[], Awaitable[None]]) -> None:
        self._reg = registry
        self._stations = stations
        self._configs = configs
        self._rescan = rescan
        self._tests: anyio.CapacityLimiter | None = None  # made in the loop, at the first test
        self._removing: anyio.Lock | None = None  # likewise, at the first remove

    async def settled(self) -> None:
        """Return once no rescan is between reading the stations and their configs anew: a
        station another host added is then listed with its config, not without it."""
        if (refreshing := self._reg.refreshing) is not None:
            with anyio.move_on_after(STORE_WAIT):  # a database that hangs: the list as it is
                await refreshing.wait()

    def list(self) -> list[dict[str, Any]]:
        """Every station (host.toml's and added ones): kind, provider, title, alert threshold,
        its config with secrets masked, and why it cannot be asked, if it cannot."""
        out, ids = [], {r.id for r in self._reg.records}
        for s in self._stations.all().values():
            item = s.to_dict()
            record = self._provider(s, required=False)
            try:
                item["config"], damaged = self._masked(s, record), None
            except StateError as exc:  # its stored config's row damaged: this station only
                item["config"], damaged = {}, exc.message
            item["error"] = (f"a plugin has the id {s.name!r} too: rename the station" if s.plugin and s.name in ids
                             else damaged or (record.station_errors.get(s.name) if record is not None
                                              else f"provider plugin {s.provider!r} is not installed"))
            out.append(item)
        return out

    def get_config(self, name: str) -> dict[str, Any]:
        s = self._stations.get(name)
        return self._masked(s, self._provider(s, required=False))

    async def add(self, name: str, *, plugin: str | None = None, script: str | None = None,
                  title: str | None = None, low_balance: float | None = None,
                  config: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new station: ``plugin`` (a balance plugin's id) with its ``config``, or a cc-switch
        usage ``script`` (its ``config``: baseUrl, apiKey, ...). Checked before anything is
        stored (names, the provider, the config against its schema and its validateConfig)."""
        definition = StationConfig(plugin=plugin, script=script, name=title, low_balance=low_balance)
        self._check_fields(name, plugin, script, title)
        if plugin is None:
            await self._stations.add(name, definition)
            await self._rescan()  # its usage-script plugin loads now
            try:
                loaded = self._provider(Station(name=name, plugin=None), required=False)
                if loaded is None:
                    why = next((r.error for r in self._reg.records if r.id == name), None) or "it did not load"
                    raise InvalidConfig(f"station {name}: the usage script does not load: {why}")
                if config:
                    await self._configs.set_config(name, config)
            except HostError:
                await self._stations.remove(name)
                await self._rescan()
                raise
            return self._item(name)
        record = self._provider(Station(name=name, plugin=plugin), required=True, where="plugin")
        assert record is not None
        self._stations.check_new(name, definition)
        _, raw = await self._configs.checked_config(record, config or {}, replace=True, key=station_key(name))
        await self._stored_first(name, definition, raw, secret_keys(loaded_manifest(record).config_schema))
        try:
            await self._restart(record, name)
        except HostError:
            await self._stations.remove(name)
            await self._store.remove(station_key(name))
            await self._restart(record, None)
            raise
        return self._item(name)

    @property
    def _store(self) -> Configs:
        assert self._reg.store is not None
        return self._reg.store

    async def _stored_first(self, name: str, definition: StationConfig, raw: dict[str, Any],
                            secret: Collection[str]) -> None:
        """The station's config, then its definition: another host that reads the station
        (it reads the stations before the configs) never serves or lists it without its config.
        The config is stored only where no row is (another process adding the name this moment
        has one: refused, its row untouched; so has an add that stopped halfway, which ``remove``
        clears), so the rollback of a lost race removes this add's own row only."""
        key = station_key(name)
        if not (await self._store.swap(key, raw, secret, None))[0]:
            if await self._stations.added_elsewhere(name):
                raise self._stations.taken(name)
            raise InvalidConfig(f"station {name!r} is being added by another process, or an add of it stopped "
                                f"halfway (its config is stored, the station is not): pick another name, or, once no "
                                f"add of it is running, clear it with `python -m host balances rm {name}`")
        try:
            await self._stations.add(name, definition)
        except HostError:
            await self._store.remove(key)
            raise

    async def set_config(self, name: str, values: dict[str, Any], *, replace: bool = False) -> dict[str, Any]:
        """Change a station's config (merged unless ``replace``; a secret sent back masked keeps
        its value), checked as ``add`` checks it. Returns it masked."""
        s = self._stations.get(name)
        if s.plugin is None:
            return await self._configs.set_config(name, values, replace=replace)
        record = self._provider(s, required=True)
        assert record is not None
        key = station_key(name)
        manifest, raw, before = await self._configs.store_checked(record, values, replace=replace, key=key)
        try:
            await self._restart(record, name)
        except HostError:
            if before is None:
                await self._store.remove(key)
            else:
                await self._store.set_many({key: before})  # as it was (already sealed)
            await self._restart(record, None)
            raise
        return mask(manifest.config_schema, raw)

    async def remove(self, name: str) -> dict[str, Any]:
        """Forget an added station and its config (its history stays); or the config an add of
        ``name`` left when it stopped halfway (no station listed). One remove at a time: ten at
        once all answered 200, nine taking the config the first had not removed yet for one an
        unfinished add left (helper-99); the others now find nothing (StationNotFound)."""
        if self._removing is None:
            self._removing = anyio.Lock()
        async with self._removing:
            return await self._remove(name)

    async def _remove(self, name: str) -> dict[str, Any]:
        if self._store.get(station_key(name)) is not None and not await self._stations.added_elsewhere(name):
            # read afresh: on a stale view this would take the config of a station just added
            await self._store.remove(station_key(name))
            return {"name": name, "removed": "the config an unfinished add left"}
        s = await self._stations.remove(name)
        if s.plugin is None:
            await self._store.remove(name)  # the usage-script plugin's own config
            await self._rescan()  # and the plugin goes
        else:
            await self._store.remove(station_key(name))
            if (record := self._provider(s, required=False)) is not None:
                await self._restart(record, None)
        return s.to_dict()

    async def test(self, name: str) -> dict[str, Any]:
        """Ask the station once, on a worker of its own (nothing cached, nothing recorded): the
        result, the requests it made and the shape of the answer, every secret masked."""
        s = self._stations.get(name)
        record = self._provider(s, required=True)
        assert record is not None and self._reg.runtime is not None
        manifest = loaded_manifest(record)
        key = station_key(name) if s.plugin else name
        lines: list[str] = []

        def hide(text: str) -> str:
            return redact(text, self._reg.secrets_of(key))

        def on_log(_worker: Worker, msg: Log) -> None:
            if len(lines) < 100:
                lines.append(hide(f"{msg.level}: {msg.message}"))

        try:
            config = self._reg.effective_config(key, manifest)  # InvalidConfig: the result says why
            spec = self._reg.spec(record, manifest, config, also=[config], redact=hide)
            if self._tests is None:
                self._tests = anyio.CapacityLimiter(TESTS_AT_ONCE)
            async with self._tests:
                value = await one_off(spec, self._reg.runtime,
                                      lambda w: w.call(BALANCE_FUNCTION, [config], spec.limits.call_timeout), on_log)
            result = from_reply(name, s.title or name, value, stored_at=time.time(),
                                cached=False, duration=0.0, plugin=s.provider)
        except HostError as exc:
            result = from_error(name, s.title or name, exc, duration=0.0, plugin=s.provider)
        answer = msgspec.to_builtins(result)
        raw = answer.pop("rawData", None)
        return {"station": name, "ok": result.usable, "result": answer,
                "requests": [line for line in lines if "fetchJson " in line],
                "log": lines, "shape": shape(raw, hide=hide)}

    # ------------------------------------------------------------------ helpers

    def _check_fields(self, name: str, plugin: str | None, script: str | None, title: str | None) -> None:
        """A new station's fields in the order a form shows them (``POST /api/stations``, ``balances
        add``), each refusal naming its field: the name, then one of plugin and script, the title,
        the script's size. (The plugin itself, then the config, are checked next, by ``add``.)"""
        if (why := name_fault(name)) is not None:
            raise InvalidConfig(f"name: {name!r} {why}")
        if any(r.id == name for r in self._reg.records):
            raise InvalidConfig(f"name: {name!r} is taken: a plugin has that id; pick another name")
        if plugin is not None and script is not None:
            raise InvalidConfig("give one of plugin and script, not both: a station is a provider plugin with "
                                "its config, or a cc-switch usage script")
        if plugin is None and script is None:
            raise InvalidConfig("give one of plugin (a balance plugin's id) and script (a cc-switch usage script)")
        if title is not None and not title_ok(title):
            raise InvalidConfig(f"title: at most {MAX_TITLE} characters, without control or bidirectional-override "
                                "characters")
        if script is not None and not (script.strip() and len(script) <= MAX_SCRIPT_CHARS):
            raise InvalidConfig(f"script: the usage script must be 1 to {MAX_SCRIPT_CHARS} characters")
        if plugin is not None and not ID_RE.match(plugin):
            raise InvalidConfig(f"plugin: {plugin!r} is not a plugin id")

    def _provider(self, s: Station, *, required: bool, where: str | None = None) -> Plugin | None:
        """The plugin answering for ``s``: a loaded balance plugin (InvalidConfig if
        ``required`` and there is none, said of ``where``: the station by default)."""
        record = self._reg.newest().get(s.provider)
        ok = record is not None and record.manifest is not None and BALANCE_CAPABILITY in record.manifest.capabilities
        where = where or f"station {s.name}"
        if not ok and required:
            raise InvalidConfig(f"{where}: {s.provider!r} is not a loaded balance plugin "
                                "(`python -m host list` shows the plugins and their capabilities)")
        if ok and required and record is not None and record.state == "disabled":
            raise InvalidConfig(f"{where}: the provider {s.provider!r} is disabled "
                                f"(`python -m host enable {s.provider}`)")
        return record if ok else None

    def _masked(self, s: Station, record: Plugin | None) -> dict[str, Any]:
        raw = self._reg.raw_config(station_key(s.name) if s.plugin else s.name)
        return mask(record.manifest.config_schema, raw) if record is not None and record.manifest else {}

    def _item(self, name: str) -> dict[str, Any]:
        """The station as listed, just added; StationNotFound when a remove came first (it ended
        while the add still restarted the provider: a StopIteration before, a 500)."""
        found = next((item for item in self.list() if item["name"] == name), None)
        if found is None:
            raise StationNotFound(f"station {name} was removed while it was being added (by another request)")
        return found

    async def _restart(self, record: Plugin, name: str | None) -> None:
        """The provider's pool anew, serving its stations as they are now (their hosts granted);
        PluginUnavailable if it does not start, InvalidConfig if station ``name`` is refused."""
        async with self._reg.lock:
            if record.state in SERVING and not await self._reg.reload_record(record):
                raise PluginUnavailable(f"{record.id} did not start with the station: {record.reload_error}",
                                        plugin=record.id)
        if name is not None and (why := record.station_errors.get(name)) is not None:
            raise InvalidConfig(f"station {name}: {why}", plugin=record.id)


__all__ = ["StationAdmin", "shape"]
