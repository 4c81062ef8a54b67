"""Plugins that failed because the host's own state did (``approvals.json`` or another file of
the state directory could not be written, a worker's socket could not be made: a full disk, a
read-only remount): each is tried again at the registry's rescans, with a backoff (RETRY_FIRST
doubling up to RETRY_MAX seconds; back to RETRY_FIRST once a failure is that long past), so it
loads, or its pool out of a crash loop starts workers again, by itself once the operator frees
space, without a restart. Other failures (bad code, bad config, workers that crash) wait for a
change of the plugin's file or config, or the operator, as before."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..errors import HostError, StateError

if TYPE_CHECKING:
    from .lifecycle import Plugin
    from .registry import Registry

log = logging.getLogger("host")
RETRY_FIRST = 1.0  # seconds after the first failure; the registry rescans every reload.interval
RETRY_MAX = 60.0  # at most this long between attempts while the state directory stays unusable


def note_failure(record: Plugin, exc: Exception | None) -> None:
    """Remember when to try ``record`` again if ``exc`` is a failure of the host's state."""
    if not isinstance(exc, StateError):
        record.state_retry = None
        return
    now, last = time.monotonic(), record.state_retry
    delay = RETRY_FIRST if last is None or now - last[0] > RETRY_MAX else min(RETRY_MAX, 2 * last[1])
    record.state_retry = (now + delay, delay)


async def retry_state_failures(registry: Registry) -> None:
    """Start again every plugin in ``error`` for its state directory whose backoff has passed
    (the caller holds the registry's lock, as a rescan does)."""
    now = time.monotonic()
    for record in list(registry.records):
        if record.state != "error" or record.state_retry is None or record.state_retry[0] > now:
            continue
        if record.pool is not None and record.pool.state == "error":
            record.pool.reset()  # its workers could not start (a crash loop): start them again
            continue
        try:
            await registry.enable(record.key)
        except HostError as exc:  # the others are tried all the same
            log.debug("plugin %s: trying again failed: %s", record.id, exc)


__all__ = ["RETRY_FIRST", "RETRY_MAX", "note_failure", "retry_state_failures"]
