"""Where a host keeps the relay stations added at run time and the plugin switches
(enable/disable, private network, grant overrides): ``<state_dir>/stations.json`` and
``plugin_switches.json``, or with ``[state] database`` the tables ``plugin_stations`` and
``plugin_switches`` (pg_documents.py), shared by every host naming the database. A host learns
of another's change at its next rescan (``[reload] interval``, hot reload on or off), which
polls each table's mark."""

from __future__ import annotations

from contextlib import AsyncExitStack

from ..balances.stations import STATIONS_FILE, Stations
from ..config import HostConfig
from .config_store import Configs, open_configs
from .switches import SWITCHES_FILE, Switches

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


__all__ = ["STATIONS_TABLE", "SWITCHES_TABLE", "open_stores", "station_store", "switch_store"]
