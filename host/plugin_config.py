"""Per-plugin configuration: validation against ``configSchema``, the host's config store, and
keeping ``secret`` values out of logs, errors and API output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from .errors import InvalidConfig
from .manifest import ConfigField

MASK = "********"
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "object": (dict,), "array": (list,),
}


def apply_schema(schema: dict[str, ConfigField], values: dict[str, Any], *, plugin: str) -> dict[str, Any]:
    """``values`` checked against ``schema`` (unknown keys, types, required, enums) with the
    defaults filled in. Errors name the field and never contain a secret's value."""
    if not isinstance(values, dict):
        raise InvalidConfig("config must be an object", plugin=plugin)
    unknown = sorted(set(values) - set(schema))
    if unknown:
        raise InvalidConfig(f"config.{unknown[0]}: not in the plugin's configSchema", plugin=plugin)
    out: dict[str, Any] = {}
    for key, field in schema.items():
        if key in values and values[key] is not None:
            value = values[key]
        elif field.default is not msgspec.UNSET:
            value = field.default
        elif field.required:
            raise InvalidConfig(f"config.{key}: is required", plugin=plugin)
        else:
            continue
        shown = "the value" if field.secret else repr(value)
        ok = isinstance(value, _TYPES[field.type]) and not (
            field.type in ("number", "integer") and isinstance(value, bool))
        if not ok:
            raise InvalidConfig(f"config.{key}: {shown} is not of type {field.type}", plugin=plugin)
        if field.enum is not None and value not in field.enum:
            raise InvalidConfig(f"config.{key}: {shown} is not one of {field.enum!r}", plugin=plugin)
        out[key] = value
    return out


def secret_values(schema: dict[str, ConfigField], values: dict[str, Any]) -> list[str]:
    """The secret strings in ``values`` worth redacting (long enough not to hit by accident)."""
    return sorted((str(v) for k, v in values.items()
                   if k in schema and schema[k].secret and v is not None and len(str(v)) >= 4),
                  key=len, reverse=True)


def mask(schema: dict[str, ConfigField], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every secret field replaced by a mask (set) or left out (unset)."""
    return {k: (MASK if k in schema and schema[k].secret else v) for k, v in values.items()}


def redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


class ConfigStore:
    """Plugin configs persisted in ``<state_dir>/config.json`` (mode 0600, atomic writes)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / "config.json"
        self._data: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self._data = json.loads(self.path.read_text())
            except ValueError as exc:
                raise InvalidConfig(f"{self.path}: not valid JSON ({exc}); fix or remove it") from None

    def get(self, plugin: str) -> dict[str, Any] | None:
        return self._data.get(plugin)

    def set(self, plugin: str, values: dict[str, Any]) -> None:
        self._data[plugin] = values
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".config-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self._data, f, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
