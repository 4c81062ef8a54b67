"""Where a host keeps the relay stations added at run time and the plugin switches
(enable/disable, private network, grant overrides): ``<state_dir>/stations.json`` and
``plugin_switches.json``, or with ``[state] database`` the tables ``plugin_stations`` and
``plugin_switches`` (pg_documents.py), shared by every host naming the database. A host learns
of another's change at its next rescan (``[reload] interval``, hot reload on or off), which
polls each table's mark."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from ..balances.stations import STATIONS_FILE, Stations
from ..config import HostConfig
from .config_store import Configs, open_configs
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


async def move_bare_station_configs(configs: Configs, stations: Stations, plugin_ids: set[str]) -> list[str]:
    """The config of a station added by the first versions of ``balances add``, stored under
    its bare name, moved to ``station:NAME`` where the host reads it (before, such a station came
    back "apiKey is not configured", its key sealed under a name nothing read): for each added
    provider station with a config under its name, none under ``station:NAME``, and no plugin of
    that id (whose own config that would be). The names moved, logged."""
    moves = {name: entry for name, s in stations.all().items()
             if s.origin == "added" and s.plugin is not None and name not in plugin_ids
             and (entry := configs.get(name)) is not None and configs.get(station_key(name)) is None}
    for name, entry in moves.items():
        await configs.set_many({station_key(name): entry})  # sealed values stay sealed
        await configs.remove(name)
        log.warning("station %s: its config, stored under %r by an earlier version, moved to %r",
                    name, name, station_key(name))
    return list(moves)


__all__ = ["STATIONS_TABLE", "SWITCHES_TABLE", "move_bare_station_configs", "open_stores", "station_store",
           "switch_store"]
