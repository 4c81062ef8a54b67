"""Relay stations: a station is a provider plugin (or a cc-switch usage script) with a config,
secrets, a history and alerts of its own. Many stations share one provider: its worker pool
serves them all, each call carrying its station's config, so fifty stations of three providers
run on three pools, not fifty.

Where stations come from:
- ``[stations.NAME]`` in host.toml (``plugin = "newapi"`` and ``config``, or ``script`` /
  ``file``), the operator's file: never rewritten;
- added at run time (CLI ``balances add``, ``POST /api/stations``, the dashboard): their
  definitions in ``<state_dir>/stations.json`` (with ``[state] database``: its table
  ``plugin_stations``, shared by every host naming it and polled at each rescan), their config
  (secrets sealed) in the config store beside the plugins', under the station's name.

A station's name is its key everywhere (``GET /api/balances``, history, alerts, metrics), so it
may not be a plugin's id. A usage-script station becomes a usage-script plugin of the same id
(``plugins/usage_scripts.py``); a provider station is served by its provider's pool."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import InvalidConfig, StationNotFound
from ..logs import Throttle
from ..plugins.keys import STATION_PREFIX
from ..plugins.manifest import ID_RE, RESERVED_IDS
from ..security.permissions import BIDI, CONTROL

if TYPE_CHECKING:
    from ..plugins.config_store import Configs

log = logging.getLogger("host.balances")
_warn = Throttle(log)

STATIONS_FILE = "stations.json"
MAX_TITLE = 100  # as a plugin's name


class StationConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``[stations.NAME]``: one relay station, given as a provider plugin and its ``config``,
    or as a cc-switch usage script (``script`` text or ``file``) with its ``config``
    (``baseUrl``, ``apiKey``, ...). ``name``: its display name; ``low_balance``: its alert
    threshold (else the provider's, else ``[balances.alerts] low_balance``)."""

    plugin: str | None = None
    script: str | None = None
    file: str | None = None
    name: str | None = None
    config: dict[str, object] = {}
    low_balance: float | None = None


@dataclass(frozen=True, slots=True)
class Station:
    """A station as the host serves it."""

    name: str                 # its key: balances, history, alerts
    plugin: str | None        # the provider plugin serving it; None: a usage script (plugin id = name)
    title: str | None = None  # display name
    low_balance: float | None = None
    script: str | None = None
    file: str | None = None
    origin: str = "added"     # "host.toml" or "added" (stations.json)

    @property
    def provider(self) -> str:
        """The plugin that answers for it."""
        return self.plugin or self.name

    def to_dict(self) -> dict[str, Any]:
        kind = "plugin" if self.plugin else "script"
        out: dict[str, Any] = {"name": self.name, "kind": kind, "plugin": self.provider, "title": self.title or self.name,
                               "origin": self.origin, "lowBalance": self.low_balance}
        if self.file:
            out["file"] = self.file
        return out


def name_fault(name: str) -> str | None:
    """What is wrong with ``name`` as a station's name, or None."""
    if not ID_RE.match(name):
        return ("is not a valid station name (letters, digits, '_', '.' and '-', up to 64, starting with a letter "
                "or digit)")
    if name.lower() in RESERVED_IDS:
        return "is reserved for the host's own use"
    return None


def title_ok(title: str) -> bool:
    """A station's title: at most MAX_TITLE characters, none a control or bidirectional override."""
    return not (len(title) > MAX_TITLE or CONTROL.search(title) or BIDI.search(title))


def check_station(name: str, s: StationConfig, where: str) -> None:
    """A station's definition as given in host.toml or added at run time."""
    if (why := name_fault(name)) is not None:
        raise InvalidConfig(f"{where}: {name!r} {why}" + ("; pick another name" if ID_RE.match(name) else ""))
    if s.name is not None and not title_ok(s.name):
        raise InvalidConfig(f"{where}.name: at most {MAX_TITLE} characters, without control or "
                            "bidirectional-override characters")
    given = [k for k in ("plugin", "script", "file") if getattr(s, k) is not None]
    if len(given) != 1:
        raise InvalidConfig(f"{where}: give exactly one of plugin, script and file"
                            + (f" (got {', '.join(given)})" if given else ""))
    if s.plugin is not None and not ID_RE.match(s.plugin):
        raise InvalidConfig(f"{where}.plugin: {s.plugin!r} is not a plugin id")
    if s.plugin == name:
        raise InvalidConfig(f"{where}: a station may not be named after its own provider plugin "
                            f"({name!r} is the plugin's own station already)")


class Stations:
    """Every station of a host: host.toml's, then those added at run time (``stations.json``,
    shared with other processes on the same state directory, e.g. the CLI beside a server)."""

    def __init__(self, configured: dict[str, StationConfig]) -> None:
        self._configured = configured
        self._store: Configs | None = None  # stations.json or its table, once the host opened its state
        self._cache: tuple[tuple, dict[str, Station]] | None = None  # all(), by the store's stamp

    def open(self, store: Configs) -> None:
        self._store = store

    @property
    def store(self) -> Configs:
        if self._store is None:
            raise InvalidConfig("stations can be added or removed only while the host runs")
        return self._store

    async def refresh(self) -> set[str]:
        """Read stations.json (or its table) again if another process changed it: the stations
        that changed. A file that cannot be read now keeps the stations as they were (warned
        once); a database that fails raises StateError (the rescan logs it)."""
        if self._store is None:
            return set()
        try:
            changed = await self._store.refresh()
        except InvalidConfig as exc:
            _warn.warning("stations", "%s; the stations read before are kept until it is fixed", exc.message)
            return set()
        self._cache = None
        return changed

    def all(self) -> dict[str, Station]:
        store = self._store
        stamp = (id(store), store.stamp if store is not None else None)
        if self._cache is not None and self._cache[0] == stamp:
            return dict(self._cache[1])
        out = self._read()
        self._cache = (stamp, out)
        return dict(out)

    def _read(self) -> dict[str, Station]:
        out = {name: _station(name, s, "host.toml") for name, s in self._configured.items()}
        store = self._store
        for name in sorted(store.names() if store is not None else ()):
            if name not in out:
                value = store.get(name)
                if value is None:  # removed since names() was read (a write of another request, in a thread)
                    continue
                try:
                    s = msgspec.convert(value, StationConfig)
                    check_station(name, s, f"{store.where}: {name}")
                except (msgspec.ValidationError, InvalidConfig) as exc:  # hand-edited: ``add`` writes valid ones
                    _warn.warning(f"bad:{name}", "station %s left out: %s", name, exc)
                    continue
                out[name] = _station(name, s, "added")
        for name, why in (store.damaged() if store is not None else {}).items():  # the others serve on
            _warn.warning(f"bad:{name}", "station %s left out: %s", name, why)
        return out

    def get(self, name: str) -> Station:
        station = self.all().get(name)
        if station is None:
            raise StationNotFound(f"no station named {name!r}; `python -m host balances stations` lists them")
        return station

    def of_plugin(self, plugin_id: str) -> list[Station]:
        """The stations a provider plugin serves (besides its own)."""
        return [s for s in self.all().values() if s.plugin == plugin_id]

    def scripts(self) -> dict[str, StationConfig]:
        """The usage-script stations, as ``[usage_scripts]`` entries are given."""
        out = {name: s for name, s in self._configured.items() if s.plugin is None}
        for name, station in self.all().items():
            if station.origin == "added" and station.plugin is None:
                out[name] = StationConfig(script=station.script, file=station.file, name=station.title)
        return out

    def check_new(self, name: str, definition: StationConfig) -> None:
        """InvalidConfig unless ``add`` may store ``definition`` as ``name`` (as far as this
        host knows: another process may add the name first, which ``add`` then refuses)."""
        check_station(name, definition, f"station {name}")
        if name in self.all():
            where = "host.toml" if name in self._configured else self.store.where
            raise InvalidConfig(f"station {name!r} exists already (in {where}); remove it first or pick another name")

    async def add(self, name: str, definition: StationConfig) -> Station:
        """Persist a new station's definition (its config goes to the config store, first: a
        host that reads the station reads its config too)."""
        self.check_new(name, definition)
        if not await self.store.insert(name, msgspec.to_builtins(msgspec.structs.replace(definition, config={}))):
            raise self.taken(name)
        return self.get(name)

    async def added_elsewhere(self, name: str) -> bool:
        """Whether another process has added a station ``name`` (read afresh)."""
        await self.refresh()
        return name in self.all()

    @staticmethod
    def taken(name: str) -> InvalidConfig:
        return InvalidConfig(f"station {name!r} was just added by another request or process; pick another name")

    async def remove(self, name: str) -> Station:
        station = self.get(name)
        if station.origin == "host.toml":
            raise InvalidConfig(f"station {name!r} is defined in host.toml ([stations.{name}]): remove it there")
        await self.store.remove(name)
        return station

    def configured_config(self, key: str) -> dict[str, Any]:
        """host.toml's ``[stations.NAME] config`` (empty for one added at run time), by the
        station's name or its config store key."""
        s = self._configured.get(key.removeprefix(STATION_PREFIX))
        return dict(s.config) if s is not None else {}


def _station(name: str, s: StationConfig, origin: str) -> Station:
    return Station(name=name, plugin=s.plugin, title=s.name, low_balance=s.low_balance, script=s.script,
                   file=s.file, origin=origin)


__all__ = ["STATIONS_FILE", "Station", "StationConfig", "Stations", "check_station", "name_fault", "title_ok"]
