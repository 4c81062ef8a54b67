"""``host.toml``: the host's configuration file, read into a validated ``HostConfig``.

Every ``HostConfig`` field can be set in the file: top-level ``plugins_dir``, ``state_dir``,
``deno_path``, ``runtime_entry``, ``load``, and the sections ``[pool]``, ``[limits]``, ``[execute]``,
``[health]``, ``[reload]``, ``[events]``, ``[policy]``, ``[balances]``, ``[server]``, ``[security]`` and
``[plugins.<id>]`` (with its own ``.pool``, ``.limits``, ``.rate_limit``, ``.retry``,
``.breaker``, ``.cache`` and ``.config`` tables). ``[rate_limit]``, ``[retry]``, ``[breaker]``
and ``[cache]`` at the top level are shortcuts for the same tables under ``[policy]``. Relative
paths in the file are resolved against the file's directory, not the working directory.

Precedence, highest first: explicit overrides (the CLI's flags), then the environment, then
the file, then the defaults. The balance plugin document's ``[rate_limit]`` keys are read as
today's settings, with a deprecation hint (config_legacy.py). The environment variables (an empty one counts as unset):

- ``PLUGIN_HOST_CONFIG``: the file to read when no path is given (no path and no variable:
  defaults only; no file is searched for).
- ``PLUGIN_HOST_HOST``, ``PLUGIN_HOST_PORT``, ``PLUGIN_HOST_ADMIN_TOKEN``,
  ``PLUGIN_HOST_READ_TOKEN``: ``server.host``, ``server.port``, ``server.admin_token``,
  ``server.read_token``.
- ``PLUGIN_HOST_STORAGE``: ``policy.storage`` and ``policy.cache_storage`` together, e.g.
  ``redis://:password@127.0.0.1:6379/0`` for hosts that share rate limits and the cache.
- ``PLUGIN_HOST_STATE_DIR``: ``state_dir``.
- ``DATABASE_URL`` (Isolate's): ``execute.database`` when it is ``sqlite:///...`` or
  ``postgresql://...`` and the file names no database (another kind is left to whoever set it).

(``PLUGIN_HOST_DENO``, the deno binary, is read where the binary is looked for, so it also
applies to hosts built without this module.)

Errors are ``InvalidConfig`` naming the file and the field (``host.toml: pool.max_workers:
Expected `int`, got `str```). They never carry a token or a storage password.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .config import HostConfig, PluginSettings, check_storage
from .config_errors import validation_message
from .config_legacy import translate_rate_limit
from .errors import InvalidConfig

SHORTCUTS = ("rate_limit", "retry", "breaker", "cache")  # top-level tables that mean [policy.X]
PATH_KEYS = ("plugins_dir", "state_dir", "deno_path", "runtime_entry")
FIELDS = frozenset(f.name for f in msgspec.structs.fields(HostConfig))

ENV_CONFIG = "PLUGIN_HOST_CONFIG"
ENV_HOST = "PLUGIN_HOST_HOST"
ENV_PORT = "PLUGIN_HOST_PORT"
ENV_ADMIN_TOKEN = "PLUGIN_HOST_ADMIN_TOKEN"
ENV_READ_TOKEN = "PLUGIN_HOST_READ_TOKEN"
ENV_STORAGE = "PLUGIN_HOST_STORAGE"
ENV_STATE_DIR = "PLUGIN_HOST_STATE_DIR"
ENV_DATABASE_URL = "DATABASE_URL"  # the execute db tool's database, unless the file names one
DATABASE_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def load_config(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None,
                snapshot: str | os.PathLike[str] | None = None, **overrides: Any) -> HostConfig:
    """The host configuration from ``path`` (or ``$PLUGIN_HOST_CONFIG``; neither: defaults),
    the environment and ``overrides``. An override is a ``HostConfig`` field: a dict is merged
    into that section (``server={"port": 9000}`` keeps the file's host), a Struct replaces it,
    and None means "not given". ``snapshot``: a copy of the file's bytes to read instead (its
    relative paths still resolved beside ``path``): what the processes of ``serve --processes``
    read, the file as it was when they were started (multiproc.py)."""
    env = os.environ if env is None else env
    for key in overrides:
        if key not in FIELDS:
            raise TypeError(f"load_config() got an unexpected override {key!r}")
    if path is None:
        path = env.get(ENV_CONFIG) or None
    name = os.fspath(path) if path is not None else None

    data: dict[str, Any] = {}
    shortcuts: set[str] = set()
    if path is not None:
        data, shortcuts = _read(Path(path), name, Path(snapshot) if snapshot is not None else None)
    config = _convert(data, shortcuts, source=name)

    from_env = _from_env(env)
    url = env.get(ENV_DATABASE_URL, "")
    if url.startswith(DATABASE_SCHEMES) and not (data.get("execute") or {}).get("database"):
        from_env["execute"] = {"database": url}  # Isolate's variable; another kind is not ours
    extra = _merge(from_env, {k: v for k, v in overrides.items() if v is not None})
    if not extra:
        return config
    return _convert(_builtins(_merge(data, extra)), shortcuts,
                    source=f"{name} + overrides" if name else "overrides")


def _read(path: Path, name: str, snapshot: Path | None = None) -> tuple[dict[str, Any], set[str]]:
    """The file's tables (``snapshot``'s bytes, when given), shortcut sections moved under
    ``policy`` and paths made absolute."""
    try:
        # a UTF-8 byte order mark (Notepad, some templating tools) is no statement: before,
        # "line 1, column 1: invalid TOML: Invalid statement" pointed at nothing one could see
        source = snapshot if snapshot is not None and snapshot.exists() else path  # the copy swept: the file
        data = tomllib.loads(source.read_bytes().decode("utf-8").removeprefix("\ufeff"))
    except FileNotFoundError:
        raise InvalidConfig(f"{name}: no such config file") from None
    except IsADirectoryError:
        raise InvalidConfig(f"{name}: is a directory, not a config file") from None
    except OSError as exc:
        raise InvalidConfig(f"{name}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidConfig(f"{name}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfig(f"{name}: {_toml_error(str(exc))}") from None

    translate_rate_limit(data, name)  # the balance document's [rate_limit] keys, with a hint
    shortcuts = {k for k in SHORTCUTS if k in data}
    if shortcuts:
        policy = data.setdefault("policy", {})
        if not isinstance(policy, dict):
            raise InvalidConfig(f"{name}: policy: Expected `object`, got `{type(policy).__name__}`")
        for key in sorted(shortcuts):
            if key in policy:
                raise InvalidConfig(f"{name}: [{key}] and [policy.{key}] are both given; keep one")
            policy[key] = data.pop(key)

    base = path.resolve().parent
    _dev_plugins(data, name, base)
    for key in PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            data[key] = _resolve(value, base)
        elif key == "plugins_dir" and isinstance(value, list):
            data[key] = [_resolve(v, base) if isinstance(v, str) else v for v in value]
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("unix_socket"), str):
        server["unix_socket"] = _resolve(server["unix_socket"], base)
    execute = data.get("execute")
    if isinstance(execute, dict) and isinstance(execute.get("database"), str) and "://" not in execute["database"]:
        execute["database"] = _resolve(execute["database"], base)
    tools = execute.get("tools") if isinstance(execute, dict) else None
    for tool in tools.values() if isinstance(tools, dict) else ():
        if isinstance(tool, dict) and isinstance(tool.get("module"), str):  # [execute.tools.NAME] module
            tool["module"] = _resolve(tool["module"], base)
    scripts = data.get("usage_scripts")
    if isinstance(scripts, dict):
        for entry in scripts.values():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str):
                entry["file"] = _resolve(entry["file"], base)
    return data, shortcuts


def _dev_plugins(data: dict[str, Any], name: str, base: Path) -> None:
    """``dev_plugins`` paths resolved against the file; the seed's ``[plugins] dev_plugins``
    read as the top-level setting (plugins/dev.py)."""
    plugins = data.get("plugins")
    if isinstance(plugins, dict) and isinstance(plugins.get("dev_plugins"), list):
        if "dev_plugins" in data:
            raise InvalidConfig(f"{name}: dev_plugins and plugins.dev_plugins are both given; keep one")
        data["dev_plugins"] = plugins.pop("dev_plugins")
    entries = data.get("dev_plugins")
    if isinstance(entries, list):
        data["dev_plugins"] = [f"{e.partition(':')[0]}:{os.path.normpath(_resolve(e.partition(':')[2], base))}"
                               if isinstance(e, str) and e.partition(":")[2] else e for e in entries]


def _resolve(value: str, base: Path) -> str:
    if not value.strip():  # left empty, for HostConfig to refuse naming it (it was the file's own directory)
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


_TOML_AT = re.compile(r"^(.*) \(at line (\d+), column (\d+)\)$", re.S)


def _toml_error(message: str) -> str:
    m = _TOML_AT.match(message)
    if m is None:
        return f"invalid TOML: {message}"
    return f"line {m[2]}, column {m[3]}: invalid TOML: {m[1]}"


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    server: dict[str, Any] = {}
    if v := env.get(ENV_HOST):
        server["host"] = v
    if v := env.get(ENV_PORT):
        try:
            port = int(v)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise InvalidConfig(f"{ENV_PORT}: {v!r} is not a port number (0-65535)")
        server["port"] = port
    if v := env.get(ENV_ADMIN_TOKEN):
        server["admin_token"] = v
    if v := env.get(ENV_READ_TOKEN):
        server["read_token"] = v
    if server:
        out["server"] = server
    if v := env.get(ENV_STORAGE):
        check_storage(v, ENV_STORAGE)  # its message redacts a password
        out["policy"] = {"storage": v, "cache_storage": v}
    if v := env.get(ENV_STATE_DIR):
        out["state_dir"] = v
    return out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it: tables merge key by key, a Struct replaces."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, msgspec.Struct):
            out[key] = value
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        elif isinstance(value, Mapping):
            out[key] = _merge({}, value)
        else:
            out[key] = value
    return out


def _builtins(data: Mapping[str, Any]) -> dict[str, Any]:
    """Structs given as overrides turned into tables (TOML's own values are left alone)."""
    return {k: msgspec.to_builtins(v) if isinstance(v, msgspec.Struct)
            else _builtins(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _convert(data: dict[str, Any], shortcuts: set[str], *, source: str | None) -> HostConfig:
    def fail(message: str) -> InvalidConfig:
        for key in shortcuts:  # name the table as the file wrote it
            message = message.replace(f"policy.{key}", key)
        return InvalidConfig(f"{source}: {message}" if source else message)

    try:
        return msgspec.convert(data, HostConfig)
    except msgspec.ValidationError as exc:
        # msgspec's errors inside a dict do not name the key: find the plugin at fault
        plugins = data.get("plugins")
        for pid, settings in (plugins.items() if isinstance(plugins, dict) else ()):
            try:
                msgspec.convert(settings, PluginSettings)
            except msgspec.ValidationError as own:
                raise fail(validation_message(str(own), PluginSettings, f"plugins.{pid}")) from None
        raise fail(validation_message(str(exc), HostConfig, "", top_level=SHORTCUTS)) from None
    except InvalidConfig as exc:  # HostConfig's own checks, already naming section.field
        raise fail(str(exc)) from None


__all__ = ["load_config"]
