"""A plugin's new version: read, judged (dependencies, approvals), its pool started outside the
registry's lock, then swapped in for the old pool, which drains.

The start steps out of the lock (registry_lock.py), so what was true before it may not be after:
another reload of the same plugin waits for this one (``Plugin.starting``, taken without the
registry's lock so that neither waits for the other's), and a plugin removed, disabled or unloaded
while its new pool started keeps it stopped: that pool is stopped instead of swapped in, and so is
one whose dependencies went away meanwhile. The swap itself has no await in it, so nothing sees
half of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidConfig, PluginUnavailable
from .approval_gate import held_for_approval
from .dependents import dependency_error, rejudge, wait_for_dependencies
from .lifecycle import SERVING, Plugin
from .loading import failure

if TYPE_CHECKING:
    from .registry import Registry

OFF = frozenset({"disabled", "stopped"})  # put there meanwhile: the new pool is not swapped in


async def reload_record(reg: Registry, record: Plugin, fp: tuple | None = None) -> bool:
    """Load ``record``'s code anew and swap its new pool in (see ``Registry.reload``); ``fp``: the
    fingerprint of its files, when the caller just took it. True when the new version serves."""
    async with reg.lock.holding(record.starting):  # another start of this plugin ends first; the others go on
        return await _reload(reg, record, fp)


async def _reload(reg: Registry, record: Plugin, fp: tuple | None) -> bool:
    record.unmet = False
    try:
        manifest, exports = await reg._read_manifest(record, fp)
        if (why := dependency_error(reg, record, manifest)) is not None:
            record.unmet = True
            raise InvalidConfig(why, plugin=record.id)
        assert reg.approvals is not None
        if await held_for_approval(reg.approvals, record, manifest, exports, reg.config):
            return False
        record.release()
        async with reg.lock.stepped_out():  # its onStart may take up to hook_timeout
            pool = await reg._open_pool(record, manifest, exports)
        if record not in reg.records or record.state in OFF:
            await pool.stop()
            return False
        if pool.state == "error":
            await pool.stop()
            raise PluginUnavailable(pool.error or "new version failed to start", plugin=record.id)
        if (why := dependency_error(reg, record, manifest)) is not None:  # one went away meanwhile
            await pool.stop()
            record.unmet = True
            raise InvalidConfig(why, plugin=record.id)
    except Exception as exc:
        why = failure(record, "reload", exc)
        if record.state in SERVING:
            record.reload_failed(why)  # the old version keeps serving
        elif record.state not in OFF and record in reg.records:
            if record.unmet and isinstance(exc, InvalidConfig):  # in error until they are met
                wait_for_dependencies(record, exc.message)
            else:
                record.set_state("error", why)
        return False
    old, record.pool = record.pool, pool
    record.manifest, record.exports = manifest, exports
    record.reloaded()
    if old is not None:
        assert reg._tg is not None
        reg._tg.start_soon(old.stop)  # drains: calls in flight there finish
    await rejudge(reg, [record.id])  # another version: its dependents judged again
    return True


__all__ = ["reload_record"]
