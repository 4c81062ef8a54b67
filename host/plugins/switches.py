"""Which plugins the operator turned off (and which may reach private networks, and with which call
timeout, when one was kept for them: ``import-cc-switch`` keeps a usage script's own), kept across restarts: ``[plugins.ID] enabled = false``
in host.toml, and ``enable``/``disable`` as last used (CLI, HTTP, dashboard, Python), stored in
``<state_dir>/plugin_switches.json`` (mode 0600, shared with other processes on the same state
directory), or with ``[state] database`` in its table ``plugin_switches``, shared by every host
naming it: each host's rescan (``[reload] interval``) polls it and stops or starts the plugins
another host switched. The last ``enable``/``disable`` wins over host.toml; ``enable`` of a
plugin host.toml keeps off is recorded like any other, so the store says why a plugin runs."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import msgspec

from ..errors import InvalidConfig

if TYPE_CHECKING:
    from ..config import HostConfig, WorkerLimits
    from .config_store import Configs

SWITCHES_FILE = "plugin_switches.json"


class Switches:
    def __init__(self, config: HostConfig) -> None:
        self._config = config
        self._store: Configs | None = None

    def open(self, store: Configs) -> None:
        self._store = store

    def disabled(self, plugin_id: str) -> str | None:
        """Why the plugin must not start (None: it may)."""
        entry = self._store.get(plugin_id) if self._store is not None else None
        if isinstance(entry, dict) and "enabled" in entry:
            if entry["enabled"] is True:
                return None
            if entry["enabled"] is not False:  # a hand edit ("false", 0, ...): off until it is fixed
                return (f"{SWITCHES_FILE} in the state directory: \"enabled\" for {plugin_id} must be true "
                        f"or false (`python -m host enable {plugin_id}` or `disable` rewrites it)")
            return f"disabled by {entry.get('by') or 'the operator'} (`python -m host enable {plugin_id}` starts it)"
        settings = self._config.plugins.get(plugin_id)
        if settings is not None and settings.enabled is False:
            return f"disabled in host.toml ([plugins.{plugin_id}] enabled = false)"
        return None

    async def set(self, plugin_id: str, enabled: bool, by: str) -> None:
        await self.update(plugin_id, {"enabled": enabled, "by": by, "at": round(time.time(), 3)})

    def private_network(self, plugin_id: str) -> bool:
        """Whether the plugin may reach private and loopback addresses: the operator's last word
        through the API or the dashboard, else host.toml's ``allow_private_network``."""
        entry = self._store.get(plugin_id) if self._store is not None else None
        if isinstance(entry, dict) and "allow_private_network" in entry:
            return entry["allow_private_network"] is True  # anything but true (a hand edit) denies
        return self._config.allow_private_network_for(plugin_id)

    async def set_private_network(self, plugin_id: str, allow: bool, by: str) -> None:
        await self.update(plugin_id, {"allow_private_network": allow, "private_network_by": by,
                                 "private_network_at": round(time.time(), 3)})

    def kept_timeout(self, plugin_id: str) -> float | None:
        """The call timeout kept for the plugin (``call_timeout`` in the store), if any."""
        kept = self.entry(plugin_id).get("call_timeout")
        if isinstance(kept, (int, float)) and not isinstance(kept, bool) and math.isfinite(kept) and kept > 0:
            return float(kept)
        return None

    def limits(self, plugin_id: str) -> WorkerLimits:
        """The plugin's limits (``HostConfig.limits_for``), with the call timeout kept for it in
        place of host.toml's (not under the inspector, which waits an hour)."""
        limits = self._config.limits_for(plugin_id)
        kept = self.kept_timeout(plugin_id)
        if kept is None or self._config.inspect_for(plugin_id):
            return limits
        return msgspec.structs.replace(limits, call_timeout=kept)

    def entry(self, plugin_id: str) -> dict[str, object]:
        """What is kept for the plugin (empty: nothing)."""
        entry = self._store.get(plugin_id) if self._store is not None else None
        return entry if isinstance(entry, dict) else {}

    async def update(self, plugin_id: str, fields: dict[str, object]) -> None:
        if self._store is None:
            raise InvalidConfig("a plugin's switches can be changed only while the host runs")
        await self._store.merge(plugin_id, fields)

    async def refresh(self) -> set[str]:
        """The plugins another process (or host) switched since the last look."""
        return await self._store.refresh() if self._store is not None else set()


__all__ = ["SWITCHES_FILE", "Switches"]
