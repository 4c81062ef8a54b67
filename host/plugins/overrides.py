"""The operator's grant overrides: what a plugin's workers may do is what its manifest declares,
narrowed by host.toml's ``[plugins.ID.permissions]`` and then by the override set through the API
(``PUT /api/plugins/ID/permissions``, ``PluginHost.grant_overrides.set``). Both narrow, neither
adds: an override set through the API cannot widen what host.toml narrowed. The API's is kept in
``<state_dir>/plugin_switches.json`` beside enable/disable (so it survives restarts and other
processes see it), every change is audited (``grant_override``), and the plugin's workers restart
with the new grants. A refusal an override causes names it: host.toml's table or the API's
override, whichever narrowed that kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ..config import HostConfig, check_override
from ..errors import InvalidConfig
from ..security.permissions import Permissions
from .lifecycle import SERVING
from .switches import SWITCHES_FILE, Switches

if TYPE_CHECKING:
    from .registry import Registry

Override = dict[str, bool | list[str] | None]
API = "grant override set through the API"


def narrowed_grants(config: HostConfig, api: Override | None, plugin_id: str,
                    grants: Permissions) -> tuple[Permissions, dict[str, str]]:
    """``grants`` under host.toml's narrowing, then the API's (``api``); and for each kind either
    narrows, the setting a refusal of that kind should send the operator to."""
    where: dict[str, str] = {}
    settings = config.plugins.get(plugin_id)
    toml = settings.permissions if settings is not None else None
    if toml is not None:
        grants = grants.narrowed(toml)
        where.update({k: f"[plugins.{plugin_id}.permissions] {k} in host.toml" for k, v in toml.items() if v is not True})
    if api is not None:
        grants = grants.narrowed(api)
        for k, v in api.items():
            if v is not True:
                mine = f"{API} ({k}; python -m host grants {plugin_id}, or /api/plugins/{plugin_id}/permissions)"
                where[k] = f"{where[k]} and its {mine}" if k in where else mine
    return grants, where


def checked(override: Any) -> Override:
    """``override`` as ``[plugins.ID.permissions]`` would take it: InvalidConfig naming the
    kind or entry at fault."""
    try:
        value = msgspec.convert(override, Override)
    except msgspec.ValidationError as exc:
        raise InvalidConfig(f"permissions: {{kind: true | false | [entries]}} expected: {exc}") from None
    try:
        check_override(value, "override.permissions")  # "override.permissions.net: ..."
    except InvalidConfig as exc:
        raise InvalidConfig(exc.message.removeprefix("override.")) from None
    return value


class GrantOverrides:
    """Reads and changes the API's grant override of each plugin; narrows grants for the
    registry (``Registry.narrow``)."""

    def __init__(self, config: HostConfig, switches: Switches, registry: Registry,
                 audit: Callable[..., None]) -> None:
        self._config, self._switches, self._reg, self._audit = config, switches, registry, audit
        registry.narrow = self.narrow

    def _api(self, plugin_id: str) -> dict[str, Any]:
        """The API's override as kept; one that is not a valid override (the file edited by
        hand) fails closed: InvalidConfig, so the plugin does not start with more than it may."""
        entry = self._switches.entry(plugin_id)
        override = entry.get("permissions")
        if override is None:
            return {}
        try:
            checked(override)
        except InvalidConfig as exc:
            raise InvalidConfig(f"{SWITCHES_FILE}: the grant override of {plugin_id} is unreadable ({exc.message}); "
                                f"set it again or remove it (python -m host grants {plugin_id} --reset)",
                                plugin=plugin_id) from None
        return entry

    def narrow(self, plugin_id: str, grants: Permissions) -> tuple[Permissions, dict[str, str]]:
        return narrowed_grants(self._config, self._api(plugin_id).get("permissions"), plugin_id, grants)

    def get(self, name: str) -> dict[str, Any]:
        """``{"plugin", "host_toml", "api", "by", "at", "permissions"}``: both narrowings (None:
        none) and what the plugin's workers may do now (None: it never loaded)."""
        record = self._reg.record(name)
        settings = self._config.plugins.get(record.id)
        api = self._api(record.id)
        grants = self._reg.grants(record)
        return {"plugin": record.id, "host_toml": settings.permissions if settings is not None else None,
                "api": api.get("permissions"), "by": api.get("permissions_by"), "at": api.get("permissions_at"),
                "permissions": None if grants is None else msgspec.to_builtins(grants)}

    async def set(self, name: str, override: Override | None, *, by: str = "python") -> dict[str, Any]:
        """Narrow the plugin's grants by ``override`` (``{kind: true | false | [entries]}``;
        None removes the API's override), kept across restarts and audited; its workers restart
        with the grants left. InvalidConfig names a bad kind or entry. Returns ``get(name)``."""
        record = self._reg.record(name)
        if override is not None:
            override = checked(override)
        await self._switches.update(record.id, {"permissions": override, "permissions_by": by,
                                                "permissions_at": round(time.time(), 3)})
        self._audit("grant_override", plugin=record.id, override=override, by=by)
        if record.state in SERVING:  # a disabled or stopped plugin gets them when it starts
            await self._reg.restart(record.key)
        return self.get(name)


__all__ = ["GrantOverrides"]
