"""The stations of a host as its files hold them, for commands that run beside it (the CLI's
``approve`` and ``import-cc-switch``, plugin discovery) without starting one. (With ``[state] database`` these read only this machine's
stations.json: the stations added through a host live in the database.)"""

from __future__ import annotations

from ..config import HostConfig
from ..plugins.config_store import FileConfigs
from ..plugins.settings import ConfigStore
from .stations import STATIONS_FILE, StationConfig, Stations


def station_plugins(config: HostConfig) -> dict[str, str | None]:
    """Every station's name a host on ``config`` has, and the provider plugin serving it (None: a usage script)."""
    return {name: s.plugin for name, s in _on_disk(config).all().items()}


def station_scripts(config: HostConfig) -> dict[str, StationConfig]:
    """The usage-script stations of a host on ``config`` (each with the ``script``, ``file``
    and ``name`` a ``[usage_scripts]`` entry has)."""
    return _on_disk(config).scripts()


def _on_disk(config: HostConfig) -> Stations:
    stations = Stations(config.stations)
    if (config.state_path / STATIONS_FILE).exists():
        stations.open(FileConfigs(ConfigStore(config.state_path, None, STATIONS_FILE)))
    return stations


__all__ = ["station_plugins", "station_scripts"]
