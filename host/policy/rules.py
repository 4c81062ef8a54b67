"""Call policies: rate limits (global and per plugin), retries with backoff, and a circuit
breaker per plugin. Their state belongs to a plugin id, so it survives restarts and reloads."""

from __future__ import annotations

import bisect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import limits
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..config import BreakerConfig, RateLimitConfig, RetryConfig, check_storage, redact_uri, storage_failure
from ..errors import (
    CallTimeout,
    CircuitOpen,
    HostError,
    InvalidConfig,
    PermissionDenied,
    PluginError,
    PolicyStorageError,
    ProtocolError,
    RateLimited,
    WorkerCrashed,
)
from ..logs import Throttle
from ..outage import Outage, Skipped

_warn = Throttle(logging.getLogger("host.policy"))  # a storage down fails every call alike

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


def error_kind(exc: BaseException) -> str | None:
    """The name retry rules use for a failure: a PluginError's ``error_type``, ``TIMEOUT`` for a
    CallTimeout, ``WORKER_CRASHED`` for a crash; None for anything else."""
    if isinstance(exc, PluginError):
        return exc.error_type
    if isinstance(exc, CallTimeout):
        return "TIMEOUT"
    if isinstance(exc, WorkerCrashed):
        return "WORKER_CRASHED"
    return None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds the failure asks callers to wait: a plugin's ``details.retryAfter`` (a number of
    seconds, the convention for ``PluginError``), or the host's own ``retry_after``."""
    if isinstance(exc, PluginError):
        value = exc.details.get("retryAfter") if isinstance(exc.details, dict) else None
    else:
        value = getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return float(value)


NOT_CONFIGURED = "NOT_CONFIGURED"  # the PluginError type of a setting the operator has not given


def is_service_failure(exc: BaseException) -> bool:
    """Whether a failed call counts against the plugin's breaker: a classified PluginError (one
    with an ``error_type``, AUTH_ERROR included: a bad key fails every call, and hammering an
    upstream with it may lock the account), timeouts and garbled frames. Unclassified throws (a
    TypeError, ``throw 404``) and sandbox refusals do not count: they are bugs or bad input
    that one caller can trigger at will, not an outage. Neither do caller mistakes
    (FunctionNotFound, InvalidConfig, PayloadTooLarge), refusals by the host or cancellation.
    Nor does a worker that crashed: that is the pool's business (restarts with backoff, and
    its crash-loop detector puts the plugin in `error`); counted here too, five crashes opened
    the circuit within a second and it then refused every call for 30 s although the pool had
    already recovered (tests/test_policy.py measures both). Nor a timeout the caller chose
    shorter than the plugin's own: five calls with ``timeout: 0.001`` opened the circuit for
    every caller for 30 s."""
    if isinstance(exc, PluginError):  # a setting not given yet is the operator's to fix, not an outage
        return exc.error_type not in (None, NOT_CONFIGURED) and not isinstance(exc, PermissionDenied)
    if isinstance(exc, CallTimeout):
        return not exc.caller
    return isinstance(exc, ProtocolError)


# ---------------------------------------------------------------------- circuit breaker


_BUCKETS = 60  # resolution of the failure-rate window


class CircuitBreaker:
    """closed → open after too many failures → half_open after ``cooldown`` (one probe call at a
    time) → closed when the probe succeeds, open again when it fails. ``clock`` is monotonic."""

    def __init__(self, config: BreakerConfig, *, plugin: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.plugin = plugin
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        self._probing = False
        self._consecutive = 0
        # Recent outcomes in buckets of window/_BUCKETS seconds: [start, calls, failures].
        # Memory and time per call stay constant however many calls the window holds.
        self._window: deque[list[float]] = deque()
        self._calls = 0
        self._failures = 0
        self.opens = 0       # times it opened
        self.rejected = 0    # calls refused with CircuitOpen

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() >= self._opened_at + self.config.cooldown:
            self._state, self._probing = HALF_OPEN, False
        return self._state

    def check(self) -> None:
        """Admit a call, or raise CircuitOpen. In half_open only one probe is admitted at a time;
        the caller must then ``record`` its outcome or ``release`` it."""
        if self._state == CLOSED or not self.config.enabled:  # closed stays closed until a record
            return
        state = self.state
        if state == CLOSED:
            return
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return
        self.rejected += 1
        if state == OPEN:
            wait = max(self._opened_at + self.config.cooldown - self._clock(), 0.0)
            raise CircuitOpen(f"circuit open after repeated failures; retry in {wait:.2f}s",
                              retry_after=wait, plugin=self.plugin)
        raise CircuitOpen("circuit half-open: a probe call is in flight", retry_after=0.0,
                          plugin=self.plugin)

    def record(self, success: bool) -> None:
        """The outcome of an admitted call."""
        cfg = self.config
        if not cfg.enabled:
            return
        if success and self._state == CLOSED:  # the common case: count it, nothing can trip
            self._consecutive = 0
            now = self._clock()
            window = self._window
            if not window or now >= window[-1][0] + cfg.window / _BUCKETS:
                window.append([now, 0, 0])
                self._expire(now)
            window[-1][1] += 1
            self._calls += 1
            return
        state, now = self.state, self._clock()
        if state == HALF_OPEN:
            self._probing = False
            if success:
                self._close()
            else:
                self._open(now)
            return
        if state == OPEN:
            return  # a call admitted before it opened; the cooldown is already running
        self._consecutive = 0 if success else self._consecutive + 1
        window = self._window
        width = cfg.window / _BUCKETS
        if not window or now >= window[-1][0] + width:
            window.append([now, 0, 0])
        bucket = window[-1]
        bucket[1] += 1
        bucket[2] += not success
        self._calls += 1
        self._failures += not success
        self._expire(now)
        if (cfg.failure_threshold and self._consecutive >= cfg.failure_threshold) or (
                cfg.failure_rate and self._calls >= cfg.min_calls
                and self._failures >= cfg.failure_rate * self._calls):
            self._open(now)

    def _expire(self, now: float) -> None:
        """Drop the buckets that left the window."""
        window, width = self._window, self.config.window / _BUCKETS
        while window and window[0][0] + width <= now - self.config.window:
            _, calls, failures = window.popleft()
            self._calls -= int(calls)
            self._failures -= int(failures)

    def release(self) -> None:
        """An admitted call ended without a verdict (cancelled, or a caller mistake): a half-open
        breaker lets the next call probe instead."""
        self._probing = False

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._probing = OPEN, now, False
        self.opens += 1

    def _close(self) -> None:
        self._state, self._probing, self._consecutive = CLOSED, False, 0
        self._window.clear()
        self._calls = self._failures = 0


class PluginPolicy:
    """The policy state of one plugin id: its breaker and what the policies did so far."""

    def __init__(self, plugin: str, breaker: BreakerConfig) -> None:
        self.breaker = CircuitBreaker(breaker, plugin=plugin)
        self.rate_limited = 0  # calls refused by a rate limit
        self.rate_delayed = 0  # calls that waited for a rate-limit slot
        self.retries = 0       # attempts beyond the first
        self.cache_hits = 0    # calls answered from a fresh cached result
        self.cache_stale = 0   # calls answered from a stale one (refreshed in the background)
        self.cache_misses = 0  # cacheable calls that went to the plugin
        self.cache_refreshes = 0  # background refreshes that succeeded


# ---------------------------------------------------------------------- rate limits


class WindowMemoryStorage(MemoryStorage):
    """``limits``' memory storage, with moving windows that cost O(1) per call.

    The stock one keeps every hit of a window in a list, inserts at its front (O(n)), and
    expires entries from a timer thread that walks all of them every 10 ms while holding the
    GIL: with a quota of thousands of calls a second, that slowed every call of the host. A
    moving window only needs the last ``limit`` hit times, so each key keeps those in a
    bounded deque, oldest first; nothing runs in the background. Used from the event loop only.
    Its hit times are monotonic (``clock``): a wall clock set back an hour made the last hits
    look an hour ahead, and the plugin was refused for that hour."""

    clock = staticmethod(time.monotonic)

    def __init__(self) -> None:
        super().__init__()
        self._windows: dict[str, deque[float]] = {}

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self.clock()
        times = self._windows.get(key)
        if times is None or times.maxlen != limit:
            times = self._windows[key] = deque(times or (), maxlen=limit)
        keep = limit - amount  # hits that may stay in the window beside these
        if len(times) > keep and times[len(times) - keep - 1] >= now - expiry:
            return False
        times.extend([now] * amount)
        return True

    def take(self, quotas: list[Quota]) -> list[Quota] | None:
        """One slot of each quota, all or none: returns the full ones (nothing taken then), or
        None when every slot was taken. O(1) per quota: a deque holds the last ``amount`` hit
        times (the key names the amount), so the window is full when the oldest of them is
        inside it."""
        now = self.clock()
        windows = self._windows
        full = None
        for q in quotas:
            times = windows.get(q.key)
            if times is None:
                times = windows[q.key] = deque(maxlen=q.amount)
            elif len(times) == q.amount and times[0] >= now - q.expiry:
                full = [*(full or ()), q]
        if full is None:
            for q in quotas:
                windows[q.key].append(now)
        return full

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(time of the oldest hit in the window, hits in the window)."""
        now = self.clock()
        times = self._windows.get(key)
        if not times:
            return now, 0
        first = bisect.bisect_left(times, now - expiry)  # limits counts a hit at exactly now-expiry in
        if first == len(times):
            return now, 0
        return times[first], len(times) - first

    def clear(self, key: str) -> None:
        self._windows.pop(key, None)
        super().clear(key)

    def reset(self) -> int | None:
        n = len(self._windows)
        self._windows.clear()
        return n + (super().reset() or 0)



class Quota:
    """One quota a call takes a slot of: the limit, whose counter (``ids``), and its storage key."""

    __slots__ = ("amount", "expiry", "ids", "item", "key")

    def __init__(self, item: limits.RateLimitItem, ids: tuple[str, ...]) -> None:
        self.item, self.ids = item, ids
        self.key = item.key_for(*ids)
        self.amount, self.expiry = item.amount, item.get_expiry()


class RateLimiter:
    """Moving-window quotas: one host-wide (``global_limit``) and one per plugin.

    The counters live in a ``limits`` storage named by URI: ``memory://`` (this host only), or
    ``redis://host:port/db``, which every host pointing at the same server shares, so their
    calls together stay within each quota. ``limits.aio`` storages are asyncio-only (the host
    also runs on trio), so the synchronous storages are used: memory directly (it never
    blocks), redis from a worker thread. An unreachable redis fails the call with
    PolicyStorageError rather than letting it past a shared quota."""

    def __init__(self, storage: str = "memory://", global_limit: str | None = None) -> None:
        check_storage(storage, "policy.storage")
        self.uri = storage
        try:
            store = WindowMemoryStorage() if storage.startswith("memory://") else storage_from_string(
                storage, socket_timeout=2.0, socket_connect_timeout=2.0)
        except Exception as exc:  # a bad option in the URI, or the redis client missing
            raise InvalidConfig(f"policy.storage: {redact_uri(storage)!r}: {exc}") from None
        self.shared = not isinstance(store, MemoryStorage)
        self._limiter = MovingWindowRateLimiter(store)
        self._memory = store if isinstance(store, WindowMemoryStorage) else None
        self._global = limits.parse_many(global_limit) if global_limit else []
        self.global_limit = bool(self._global)  # a host-wide quota: every call takes a slot of it
        self._quotas: dict[tuple[str, str | None], list[Quota]] = {}
        self._outage = Outage()  # redis did not answer: calls refused at once for a while (host/outage.py)

    def _items(self, plugin: str, limit: str | None) -> list[Quota]:
        """The quotas a call to ``plugin`` takes a slot of: its own, then the host-wide one."""
        quotas = self._quotas.get((plugin, limit))
        if quotas is None:
            own = [(item, ("plugin", plugin)) for item in (limits.parse_many(limit) if limit else [])]
            quotas = [Quota(item, ids) for item, ids in own + [(i, ("global",)) for i in self._global]]
            self._quotas[(plugin, limit)] = quotas
        return quotas

    def _take(self, items: list[Quota]) -> tuple[float, str] | None:
        """Take one slot of every quota in ``items``: None when taken, else the seconds until
        a slot frees up and which quotas are full. In memory nothing else runs between the
        test and the hits; in redis each hit is atomic, and one lost to another host counts
        as full."""
        mem, lim = self._memory, self._limiter
        if mem is not None:
            full = mem.take(items)
            if full is None:
                return None
        else:
            full = [q for q in items if not lim.test(q.item, *q.ids)]
            if not full:
                for q in items:
                    if not lim.hit(q.item, *q.ids):
                        full = [q]  # another host took the last slot meanwhile
                        break
                else:
                    return None
        now = mem.clock() if mem is not None else time.time()  # the clock the window's times are on
        wait = max(max(lim.get_window_stats(q.item, *q.ids).reset_time for q in full) - now, 0.001)
        return wait, ", ".join(f"{q.item} ({q.ids[0]})" for q in full)

    async def _take_shared(self, items: list[Quota], plugin: str, deadline: float) -> tuple[float, str] | None:
        """``_take`` on the shared storage, in a worker thread given up at the call's ``deadline``
        (the thread finishes within the client's socket timeout). Each refusal is logged, once
        every 10 s with a count (the journal said nothing while every such call failed)."""
        try:
            with anyio.fail_after(max(deadline - time.monotonic(), 0.0)):
                return await self._outage.run(self._take, items)
        except Skipped:  # it did not answer a moment ago: still closed, without the wait
            why = f"{redact_uri(self.uri)} did not answer a moment ago (asked again within {self._outage.pause:g} s)"
        except TimeoutError:
            why = f"{redact_uri(self.uri)} did not answer before the call's deadline"
        except Exception as exc:
            failure = storage_failure(self.uri, exc, modules=("redis", "limits"))
            if failure is None:
                raise
            why = failure
        _warn.warning(self.uri, "rate-limit storage %s: calls under a rate limit are refused "
                      "(PolicyStorageError) until it answers", why)
        raise PolicyStorageError(f"rate-limit storage {why}", plugin=plugin)

    def took(self, plugin: str, config: RateLimitConfig) -> bool:
        """Whether a call to ``plugin`` is within its quotas with no wait: none apply, or a slot
        of each was free in memory and is taken now. False: ``acquire`` decides (it waits,
        refuses, or asks the shared storage)."""
        items = self._items(plugin, config.limit)
        return not items or (self._memory is not None and self._memory.take(items) is None)

    async def acquire(self, plugin: str, config: RateLimitConfig, deadline: float) -> bool:
        """Take one slot of every quota that applies to ``plugin``. With the ``wait`` strategy,
        sleep until a slot frees up (at most ``max_wait`` and never past ``deadline``); else, or
        when that is too long, raise RateLimited with the seconds until a slot frees up (and
        the strategy: ``degrade`` lets a balance query answer its last balance instead).
        Returns whether the call had to wait."""
        items = self._items(plugin, config.limit)
        if not items:
            return False
        give_up = min(time.monotonic() + config.max_wait, deadline)
        waited = False
        while True:
            full = await self._take_shared(items, plugin, deadline) if self.shared else self._take(items)
            if full is None:
                return waited
            wait, which = full
            if config.strategy != "wait" or time.monotonic() + wait > give_up:
                exc = RateLimited(f"rate limit {which} reached; retry in {wait:.2f}s",
                                  retry_after=wait, plugin=plugin)
                exc.strategy = config.strategy
                raise exc
            waited = True
            await anyio.sleep(wait)

    def close(self) -> None:
        storage = self._limiter.storage
        client = getattr(storage, "storage", None)  # limits' RedisStorage keeps its client here
        if client is not None and hasattr(client, "close"):
            client.close()


# ---------------------------------------------------------------------- retry


def backoff_delay(config: RetryConfig, failures: int) -> float:
    """Delay after the ``failures``-th failed attempt: exponential, capped, with random jitter."""
    base = min(config.backoff * config.multiplier ** (failures - 1), config.backoff_max)
    return base * (1 - config.jitter * random.random())


async def with_retry(attempt_fn: Callable[[], Awaitable[T]], config: RetryConfig, deadline: float,
                     *, on_retry: Callable[[int, BaseException, float], None] | None = None) -> T:
    """Run ``attempt_fn`` until it succeeds, fails with a kind not in ``retry_on``, runs out of
    ``max_attempts``, or the next attempt could not start before ``deadline`` (monotonic); then
    the last error is raised. The delay honours a failure's retry-after when that is longer.
    A CircuitOpen on a later attempt re-raises the failure that led to it."""
    failures = 0
    last: HostError | None = None
    while True:
        try:
            return await attempt_fn()
        except CircuitOpen:
            if last is not None:
                raise last from None
            raise
        except HostError as exc:
            failures += 1
            if failures >= config.max_attempts or error_kind(exc) not in config.retry_on:
                raise
            delay = max(backoff_delay(config, failures), retry_after_of(exc) or 0.0)
            if time.monotonic() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(failures, exc, delay)
            last = exc
        await anyio.sleep(delay)
