"""A plugin's config changed: tell its running workers (``onConfigChange``) instead of restarting
them, when that is safe.

The rule (docs/plugin-authoring.md, "Lifecycle hooks"): a plugin that exports
``onConfigChange(config, context)`` keeps its workers; each gets the new config (which becomes
``context.config`` and what ``queryBalance(config)`` is called with) and runs the hook within
``limits.hook_timeout``. The pool is restarted as before when the plugin has no such hook, when
the hook throws or hangs on any worker (that worker is killed), when the new config changes the
plugin's grants (they are Deno flags, fixed at spawn), or when its pool serves relay stations
(their configs are checked per station at start). ``onStop(context)`` is run by
``Worker.shutdown(hook=True)`` whenever a pool stops a worker gracefully.

The hooks run outside the registry's lock (registry_lock.py), as a new pool's start does: one
plugin's hanging hook holds up only its own change. A change, or a reload, of the same plugin
waits for it (``Plugin.starting``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from ..policy.cache import digest
from ..protocol import HOOKS
from .lifecycle import SERVING, Plugin

if TYPE_CHECKING:
    from ..worker import Worker
    from .registry import Registry

log = logging.getLogger("host")
CONFIG_HOOK = HOOKS["config_change"]


async def config_changed(registry: Registry, record: Plugin) -> bool:
    """Apply the plugin's current config to its serving pool: through ``onConfigChange`` on
    every worker when the plugin has it, else by a reload (a new pool). True when it serves
    with the new config afterwards."""
    async with registry.lock.holding(record.starting):  # a reload of this plugin, or another change, ends first
        told = await _tell_workers(registry, record)
    return told or await registry.reload_record(record)


async def _tell_workers(registry: Registry, record: Plugin) -> bool:
    """True when every worker took the new config through its hook (nothing else to do)."""
    pool, manifest = record.pool, record.manifest
    if (pool is None or manifest is None or record.state not in SERVING or CONFIG_HOOK not in record.exports
            or pool.station_configs or pool.station_errors):
        return False
    try:
        config = registry.effective_config(record.id, manifest)
        grants = registry.spec(record, manifest, config=config).permissions
    except Exception as exc:  # an invalid config: the reload says why, as before
        log.debug("plugin %s: config change needs a reload: %s", record.id, exc)
        return False
    if grants != pool.spec.permissions:
        registry.note(record.id, "info", "config change alters its grants: workers restarted")
        return False
    # New workers are welcomed with the new config from now on; the running ones are told.
    pool.spec.config, pool.spec.cache_salt = config, digest(manifest.version, config)
    workers = [w for w in (*pool.workers, *pool.spares) if w.alive]
    outcomes: list[bool] = []

    async def tell(worker: Worker) -> None:
        outcomes.append(await worker.run_hook("config_change", config))

    async with registry.lock.stepped_out(), anyio.create_task_group() as tg:  # each hook: up to hook_timeout
        for w in workers:
            tg.start_soon(tell, w)
    if all(outcomes):
        registry.note(record.id, "info", f"config changed: {CONFIG_HOOK} ran on {len(workers)} worker(s)")
        return True
    registry.note(record.id, "warning", f"{CONFIG_HOOK} failed or is missing on a worker: workers restarted")
    return False


__all__ = ["CONFIG_HOOK", "config_changed"]
