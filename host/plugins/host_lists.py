"""Where a host keeps the relay stations added at run time and the plugin switches
(enable/disable, private network, grant overrides): ``<state_dir>/stations.json`` and
``plugin_switches.json``, or with ``[state] database`` the tables ``plugin_stations`` and
``plugin_switches`` (pg_documents.py), shared by every host naming the database. A host learns
of another's change at its next rescan (``[reload] interval``, hot reload on or off), which
polls each table's mark."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import anyio

from ..balances.stations import STATIONS_FILE, Stations
from ..config import HostConfig
from ..errors import StateError
from .config_store import Configs, open_configs
from .discovery import PluginSource
from .keys import station_key
from .switches import SWITCHES_FILE, Switches

log = logging.getLogger("host.stations")

STATIONS_TABLE = "plugin_stations"
SWITCHES_TABLE = "plugin_switches"


def station_store(config: HostConfig) -> Configs:
    """The added stations' store (read by ``verify``)."""
    return open_configs(config.state_path, config.state.database, None, filename=STATIONS_FILE,
                        table=STATIONS_TABLE, what="the added stations", per_key=True)


def switch_store(config: HostConfig) -> Configs:
    """The switches' store (read by ``verify``)."""
    return open_configs(config.state_path, config.state.database, None, filename=SWITCHES_FILE,
                        table=SWITCHES_TABLE, what="the plugin switches")


async def open_stores(config: HostConfig, stack: AsyncExitStack, stations: Stations, switches: Switches) -> None:
    """Open and read both (closed with ``stack``): a database that cannot be reached fails the
    start with a StateError."""
    for user, store in ((stations, station_store(config)), (switches, switch_store(config))):
        stack.callback(store.close)
        await store.verify()
        user.open(store)


async def move_bare_station_configs(config: HostConfig, configs: Configs, stations: Stations,
                                    sources: list[PluginSource]) -> list[PluginSource]:
    """The config of a station added by the first versions of ``balances add``, stored under
    its bare name, moved to ``station:NAME`` where the host reads it (before, such a station came
    back "apiKey is not configured", its key sealed under a name nothing read): for each added
    provider station with a config under its name, none under ``station:NAME``, and no plugin of
    that id (whose own config that would be). Only in a state directory of this host's own: those
    versions kept stations in files, and in a database shared by hosts with other plugins a bare
    row may be another host's plugin's. A row that cannot be read stays as it is. Each move is
    logged; ``sources`` (the plugins found: their ids are theirs) are returned as given."""
    plugin_ids = {src.id for src in sources}
    if config.state.database is not None:
        return sources
    moves: dict[str, dict] = {}
    for name, s in stations.all().items():
        if s.origin != "added" or s.plugin is None or name in plugin_ids:
            continue
        try:
            entry, moved = configs.get(name), configs.get(station_key(name))
        except StateError:
            continue
        if entry is not None and moved is None:
            moves[name] = entry
    for name, entry in moves.items():
        await configs.set_many({station_key(name): entry})  # sealed values stay sealed
        await configs.remove(name)
        log.warning("station %s: its config, stored under %r by an earlier version, moved to %r",
                    name, name, station_key(name))
    return sources


__all__ = ["STATIONS_TABLE", "SWITCHES_TABLE", "move_bare_station_configs", "open_stores", "refreshed_together", "station_store",
           "switch_store"]


async def refreshed_together(registry: Any) -> set[str]:
    """The stations and the configs another host changed, read again one after the other; while
    they are, ``registry.refreshing`` is unset, so that a station listed meanwhile (its row read,
    its config not yet) waits for its config instead of showing none (a flaky two-host test)."""
    registry.refreshing = done = anyio.Event()
    try:
        return await registry.stations_refresh() | await registry.store.refresh()
    finally:
        done.set()
