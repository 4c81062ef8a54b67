"""A pool in crash-loop ``error`` tries again by itself: workers killed from outside (an OOM
killer, an operator's ``kill -9``) put a plugin there as surely as bad code does, and nobody may
be around to restart it. After ``PoolConfig.crash_loop_cooldown`` seconds the pool starts
workers again; another crash loop doubles the wait, up to ``crash_loop_cooldown_max`` (back to
the first once the last crash loop is that long past). Each retry and its outcome is logged
once; the next retry's time is in the pool's error and ``PluginInfo.next_retry``. A load
failure (bad code) is no crash loop and waits for a change, as before."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from .pool import Pool

log = logging.getLogger("host.pool")


class Cooldown:
    """The crash-loop retries of one pool: when the next is due, and how many were made."""

    def __init__(self) -> None:
        self.retries = 0            # retries made since the pool started
        self.next_retry: float | None = None  # unix time of the one scheduled (None: none)
        self._delay = 0.0           # the wait before the last retry (doubled by the next crash loop)
        self._tripped = -float("inf")  # monotonic time of the last crash loop
        self._epoch = 0             # bumped by every crash loop and reset: a stale sleeper does nothing
        self._trying = False        # a retry started: its outcome is still to be said
        self.note = ""              # what the pool's error says of the retry scheduled

    def tripped(self, pool: Pool) -> str:
        """The pool just entered a crash loop: schedule its retry in its task group; returns what
        to add to its error (when it is tried again), or "" when nothing is scheduled."""
        cfg, now = pool.config, time.monotonic()
        self._epoch += 1
        failed, self._trying = self._trying, False
        if cfg.crash_loop_cooldown <= 0 or pool._tg is None:
            self.next_retry, self.note = None, ""
            return ""
        fresh = now - self._tripped > cfg.crash_loop_cooldown_max + cfg.crash_loop_window
        self._delay = cfg.crash_loop_cooldown if fresh or not self._delay else \
            min(cfg.crash_loop_cooldown_max, 2 * self._delay)
        self._tripped = now
        self.next_retry = time.time() + self._delay
        when = time.strftime("%H:%M:%S", time.localtime(self.next_retry))
        if failed:
            log.warning("%s: retry %d after a crash loop failed: crash loop again; next retry in %gs (%s)",
                        pool.plugin_id, self.retries, self._delay, when)
        pool._tg.start_soon(self._retry_later, pool, self._epoch, self._delay)
        self.note = f"; tried again automatically in {self._delay:g}s (at {when}, [pool] crash_loop_cooldown)"
        return self.note

    def reset(self) -> None:
        """The pool left ``error`` (a retry, or the operator): a pending retry is void."""
        self._epoch += 1
        self.next_retry, self.note = None, ""

    def served(self, pool: Pool) -> None:
        """A worker started after a retry serves: say the retry worked (once)."""
        if self._trying:
            self._trying = False
            log.warning("%s: retry %d after a crash loop worked: a worker serves again", pool.plugin_id,
                        self.retries)

    async def _retry_later(self, pool: Pool, epoch: int, delay: float) -> None:
        await anyio.sleep(delay)
        if epoch != self._epoch or pool.state != "error":
            return  # reset by hand, or closing
        self.retries += 1
        log.warning("%s: crash loop %gs ago: starting workers again (retry %d)", pool.plugin_id, delay,
                    self.retries)
        pool.reset()
        self._trying = True


__all__ = ["Cooldown"]
