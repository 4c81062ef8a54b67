"""A pool whose version's code changed on disk starts no worker (WorkerSpec.files_changed,
plugins/reload.still_read): the module is loaded from the files as they are at spawn, so a new
worker would run code its version was not read from (helper-114). Its live workers serve on."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("host.pool")


async def stale_now(pool: Pool) -> bool:
    """Whether its version's code changed on disk: it starts no worker then (``pool.stale`` says why)."""
    why = await pool.spec.files_changed() if pool.spec.files_changed is not None else None
    if why is not None and pool.stale is None:
        log.warning("%s", why)
    pool.stale = why
    return why is not None


async def recheck(pool: Pool) -> None:
    """While stale, each second: no worker left, its callers are told why; its code back, it starts some."""
    try:
        while pool.state in ("running", "starting"):
            if not any(not w.retiring and not w.exited.is_set() for w in pool.workers):
                pool._record_crash(pool.stale or "its code changed", fatal=True, counted=False)
                return
            await anyio.sleep(1.0)
            if not await stale_now(pool):
                pool._maintain()
                return
    finally:
        pool._rechecking = False
