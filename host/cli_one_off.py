"""How a one-off command (``call``, ``execute``, ``list``...) runs the host: workers only as its
calls need them, only what concerns the plugin it calls said, and ``call``/``execute`` waiting
for no other plugin's load."""

from __future__ import annotations

import logging

import msgspec

from .config import HostConfig, PoolConfig

# call and execute load the plugins in the background: once they printed their answer, the
# loads still going get this long to finish (and be kept in the manifest cache, so that the next
# command reads no plugin again); one hung (a top level that never settles) is cut off then
LOAD_GRACE = 1.5


def one_off(config: HostConfig, command: str, plugin: str | None) -> HostConfig:
    """``config`` for one-off ``command`` (``plugin``: the one it calls, if any)."""
    config = on_demand(config)
    if command == "call" and plugin:  # what it prints concerns the plugin it calls
        about_only(plugin.partition("@")[0])
    if command in ("call", "execute") and config.load == "auto":  # its answer waits for that
        config = msgspec.structs.replace(config, load="background")  # plugin's load only, or none
        # (helper-113: 10 s behind another plugin's hung load)
    return config


def on_demand(config: HostConfig) -> HostConfig:
    """``config`` for a one-off command: no pool starts a worker (or a spare) before a call needs
    it. A `call` of one plugin among 100 started 100 Deno processes for one answer (3.4 s)."""
    def lazy(pool: PoolConfig) -> PoolConfig:
        return msgspec.structs.replace(pool, min_workers=0, spares=0)

    plugins = {k: msgspec.structs.replace(s, pool=lazy(s.pool)) if s.pool else s for k, s in config.plugins.items()}
    execute = msgspec.structs.replace(config.execute, min_workers=0)
    return msgspec.structs.replace(config, pool=lazy(config.pool), plugins=plugins, execute=execute)


def about_only(plugin_id: str) -> None:
    """Log nothing said about a plugin other than ``plugin_id`` (the load warnings of every
    other plugin in the directory, on each `call`)."""
    def concerns(record: logging.LogRecord) -> bool:
        return getattr(record, "plugin", plugin_id) == plugin_id

    for handler in logging.getLogger().handlers:
        handler.addFilter(concerns)
