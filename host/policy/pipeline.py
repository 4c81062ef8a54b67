"""The call path: from a plugin name, a function and its arguments to the worker's answer, under the
plugin's policies in their order — result cache (single flight per key, stale entries refreshed
in the background), rate limit, concurrency caps, circuit breaker, retries, then a pool.

Every stage reads one CallContext (what is called, for whom, until when) instead of passing a
dozen parameters along; the deadline is fixed once, where the call enters, and every stage
measures what is left of it. A caller's deadline shorter than the plugin's own (``own_limit``)
ends the caller's wait, not the plugin's call: past it the call is cancelled, the breaker does
not count it, and its worker is killed only if it still runs at the plugin's own deadline or
its event loop stops answering (README.md, "Deadlines")."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from ..balances.result import BALANCE_FUNCTION, balance_limit
from ..config import CacheConfig, HostConfig, RetryConfig
from ..errors import CallTimeout, HostClosed, HostError, RateLimited, check_timeout
from ..pool import Pool
from ..worker import MIN_TIMEOUT, Lease
from .cache import FRESH, CacheEntry, ResultCache, cache_key, make_entry
from .rules import CircuitBreaker, PluginPolicy, RateLimiter, is_service_failure, with_retry
from .scheduler import Scheduler

log = logging.getLogger("host")

@dataclass(slots=True)
class CallContext:
    """One call on its way through the pipeline."""

    pool: Pool            # the plugin's pool (replaced in place when a reload swaps it)
    policy: PluginPolicy  # the plugin's breaker and counters
    plugin: str           # the name it was called by (``id`` or ``id@version``)
    fn: str
    args: list[Any]
    budget: float         # seconds, as given (for messages)
    deadline: float       # time.monotonic() by which it must have answered
    priority: int = 0
    pid: str = ""         # the plugin's id (its pool's; a pool replacing it serves the same id)
    limit: float = 0.0    # time.monotonic() past which the plugin's own limit kills it (>= deadline)

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def timeout(self, what: str) -> CallTimeout:
        return CallTimeout(f"{what} within {self.budget:g}s", timeout=self.budget, plugin=self.pid,
                           function=self.fn, caller=self.deadline < self.limit)


# What the host itself calls to judge a plugin (health, a config change): the breaker neither
# refuses nor counts them, so an open circuit never hides whether the plugin recovered.
# Seconds past a call's own deadline its caller gave up on that its concurrency slot stays held at
# most (the worker kills it at that deadline; its end is normally seen at once).
HOLD_MARGIN = 5.0
HOST_DRIVEN = frozenset({"healthCheck", "validateConfig"})
EVENT_FUNCTION = "onEvent"  # runs for events.timeout (plugins/events.py)
HEALTH_FUNCTION = "healthCheck"  # runs for health.timeout


def cache_share(deadline: float) -> float:
    """The part of a call's remaining time a shared result cache may take: half of it, so a
    storage that does not answer costs the call a miss, never its deadline."""
    now = time.monotonic()
    return now + max(deadline - now, 0.0) / 2


_UNREADABLE = object()


def cached_value(entry: CacheEntry) -> Any:
    """The entry's value, or _UNREADABLE when it does not decode (an entry no host wrote: a
    shared Redis or the cache file edited by another hand): then it is a miss."""
    try:
        return entry.result()
    except (msgspec.DecodeError, RecursionError):
        return _UNREADABLE


class CallPipeline:
    """The policies between a caller and a plugin's pool. ``pool_of`` names the pool serving a
    plugin now (or raises why there is none); ``tasks`` returns the task group background
    refreshes run in (None once the host stops)."""

    def __init__(self, config: HostConfig, pool_of: Callable[[str], Pool],
                 tasks: Callable[[], TaskGroup | None]) -> None:
        self.config = config
        self._pool_of = pool_of
        self._tasks = tasks
        self.limiter = RateLimiter(config.policy.storage, config.policy.global_limit)
        self.scheduler = Scheduler(config.policy.max_concurrent_calls, lambda pid: config.max_concurrent_for(pid)
                                   if pid in config.plugins else config.policy.max_concurrent)
        self.cache = ResultCache(config.policy.cache_storage, config.state_path)
        self.policies: dict[str, PluginPolicy] = {}  # by plugin id: survives restarts, reloads
        self._flights: dict[bytes, anyio.Event | None] = {}  # keys being fetched: later callers wait
        self._refreshing: set[bytes] = set()  # keys refreshed in the background
        # plugins loading in the background (HostConfig.load): a call to one waits for its load
        self.loading: Callable[[], bool] = lambda: False
        self.settle: Callable[[str, float | None], Awaitable[None]] | None = None

    def close(self) -> None:
        self.cache.close()
        self.limiter.close()

    def policy(self, plugin_id: str, scope: str | None = None) -> PluginPolicy:
        """The breaker and counters of ``plugin_id``, or of one ``scope`` of it (a relay station
        its pool serves: one failing station never opens the circuit of the others)."""
        key = scope or plugin_id
        policy = self.policies.get(key)
        if policy is None:
            policy = self.policies[key] = PluginPolicy(key, self.config.breaker_for(plugin_id))
        return policy

    async def run(self, plugin: str, fn: str, args: list[Any], timeout: float | None, priority: int = 0,
                  refresh: bool = False, scope: str | None = None) -> tuple[Any, float, bool]:
        """The call: (result, unix time the result was produced, whether it came from the cache).
        ``scope``: whose breaker judges it, when not the plugin's own (a station's name)."""
        entered = time.monotonic()
        if self.loading() and self.settle is not None:  # within the call's own deadline
            await self.settle(plugin, None if timeout is None else check_timeout(timeout))
        ctx, cache, key = self._context(plugin, fn, args, timeout, priority, scope, entered)
        if key is not None:
            return await self._cached(ctx, key, cache, refresh)
        return await self._guarded(ctx), time.time(), False

    def value(self, plugin: str, fn: str, args: list[Any], timeout: float | None, priority: int = 0,
              refresh: bool = False) -> Awaitable[Any]:
        """``run``'s result alone (what ``PluginHost.call`` answers): for a call that no cached
        result applies to, with no plugin loading, the admission coroutine itself, no frame
        around it."""
        if self.loading() and self.settle is not None:
            return _first(self.run(plugin, fn, args, timeout, priority, refresh))
        ctx, cache, key = self._context(plugin, fn, args, timeout, priority, None, time.monotonic())
        if key is not None:
            return _first(self._cached(ctx, key, cache, refresh))
        return self._guarded(ctx)

    def _context(self, plugin: str, fn: str, args: list[Any], timeout: float | None, priority: int,
                 scope: str | None, entered: float) -> tuple[CallContext, CacheConfig, bytes | None]:
        """The call's context, its plugin's cache settings, and its cache key (None: no cached
        result applies)."""
        pool = self._pool_of(plugin)
        budget = pool.spec.limits.call_timeout if timeout is None else check_timeout(timeout)
        pid = pool.spec.plugin_id
        policy = self.policies.get(scope or pid) or self.policy(pid, scope)
        limit = entered + max(budget, self.own_limit(pool, fn))
        ctx = CallContext(pool, policy, plugin, fn, args, budget, entered + budget, priority, pid, limit)
        cache = self.config.cache_for(pid) if pid in self.config.plugins else self.config.policy.cache
        key = None
        if cache.applies(fn):
            try:
                key = cache_key(pid, pool.spec.cache_salt, fn, args)
            except (TypeError, ValueError, OverflowError, RecursionError):
                pass  # arguments msgpack cannot encode: the call itself will say why
        return ctx, cache, key

    def own_limit(self, pool: Pool, fn: str) -> float:
        """Seconds the host's settings let the plugin's ``fn`` run: for a balance query the
        plugin's own call timeout if it has one (an imported cc-switch script's), else
        ``balances.timeout``, as ``query_balances`` waits; ``events.timeout`` for an event,
        ``health.timeout`` for a health check, else ``limits.call_timeout``. A caller's shorter
        timeout is the caller's own: it cancels the call, it never judges the plugin."""
        if fn == BALANCE_FUNCTION:
            return balance_limit(self.config, pool.spec.limits)
        if fn == EVENT_FUNCTION:
            return self.config.events.timeout
        if fn == HEALTH_FUNCTION:
            return self.config.health.timeout
        return pool.spec.limits.call_timeout

    # ------------------------------------------------------------------ result cache

    async def _cached(self, ctx: CallContext, key: bytes, cache: CacheConfig, refresh: bool,
                      background: bool = False) -> tuple[Any, float, bool]:
        """A fresh entry is returned; a stale one too, refreshed in the background; a miss calls
        the plugin once however many callers ask for the same key meanwhile (they wait for its
        result; the Event they wait on is made by the first of them, as most calls have none).
        ``refresh`` calls without looking."""
        store, flights, pid = self.cache, self._flights, ctx.pid
        while not refresh:
            entry = await store.get(pid, key, cache_share(ctx.deadline)) if store.shared else store.get_local(pid, key)
            if entry is not None and (value := cached_value(entry)) is not _UNREADABLE:
                if entry.state(time.time()) == FRESH:
                    ctx.policy.cache_hits += 1
                else:
                    ctx.policy.cache_stale += 1
                    self._revalidate(ctx, key, cache)
                return value, entry.stored_at, True
            if key not in flights:
                break
            flight = flights[key]
            if flight is None:
                flight = flights[key] = anyio.Event()
            with anyio.move_on_after(ctx.left()):
                await flight.wait()
            if ctx.left() <= 0:
                raise ctx.timeout("the call it waited for did not finish")
            # that call settled: its result is cached now, or it failed and this caller calls
        if not background:
            ctx.policy.cache_misses += 1
        leader = key not in flights
        if leader:
            flights[key] = None
        try:
            value = await self._guarded(ctx)
            entry = make_entry(value, cache)
            if entry is None:  # larger than max_value_bytes
                return value, time.time(), False
            if store.shared:
                await store.put(pid, key, entry, cache, cache_share(ctx.deadline))
            else:
                store.put_local(pid, key, entry, cache)
            return value, entry.stored_at, False
        finally:
            if leader:
                waiting = flights.pop(key, None)
                if waiting is not None:
                    waiting.set()

    def _revalidate(self, ctx: CallContext, key: bytes, cache: CacheConfig) -> None:
        """Refresh a stale entry in the background, once per key at a time."""
        tg = self._tasks()
        if key in self._refreshing or key in self._flights or tg is None:
            return
        self._refreshing.add(key)
        budget = ctx.pool.spec.limits.call_timeout
        again = CallContext(ctx.pool, ctx.policy, ctx.plugin, ctx.fn, ctx.args, budget, 0.0, 0, ctx.pid)

        async def refresh() -> None:
            again.deadline = again.limit = time.monotonic() + budget
            try:
                await self._cached(again, key, cache, refresh=True, background=True)
                again.policy.cache_refreshes += 1
            except HostError as exc:
                log.warning("background refresh of %s.%s failed: %s", again.pid, again.fn, exc)
            finally:
                self._refreshing.discard(key)

        tg.start_soon(refresh)

    # ------------------------------------------------------------------ admission

    async def _guarded(self, ctx: CallContext) -> Any:
        """Under the rate limits and the concurrency caps. A plugin without quotas, with room
        under its caps, is admitted without awaiting either (no coroutine of theirs is made)."""
        pid = ctx.pid
        config = self.config
        rate = config.rate_limit_for(pid) if pid in config.plugins else config.policy.rate_limit
        if (rate.limit or self.limiter.global_limit) and not self.limiter.took(pid, rate):
            try:
                if await self.limiter.acquire(pid, rate, ctx.deadline):
                    ctx.policy.rate_delayed += 1
            except RateLimited:
                ctx.policy.rate_limited += 1
                raise
        if not self.scheduler.try_take(pid):
            try:
                await self.scheduler.acquire(pid, ctx.priority, ctx.deadline)
            except TimeoutError:
                raise ctx.timeout("no concurrency slot became free") from None
        held = False
        try:
            return await self._admitted(ctx)
        except CallTimeout as exc:
            held = self._hold_slot(pid, exc, ctx.limit)
            raise
        finally:
            if not held:
                self.scheduler.release(pid)

    def _hold_slot(self, pid: str, exc: CallTimeout, limit: float) -> bool:
        """A call its caller gave up on keeps its concurrency slot until it ends on its worker
        (by the plugin's own deadline ``limit`` at the latest, plus a margin): the cap bounds what
        runs, not what is awaited. Whether the slot is now the task's to free."""
        settled, tg = exc.settled, self._tasks()
        if settled is None or settled.is_set() or tg is None:  # (settled: only a caller's own timeout has one)
            return False

        async def release() -> None:
            try:
                with anyio.move_on_after(limit + HOLD_MARGIN - time.monotonic()):  # (trio's clock is not monotonic()'s)
                    await settled.wait()
            finally:
                self.scheduler.release(pid)
        tg.start_soon(release)
        return True

    def _admitted(self, ctx: CallContext) -> Awaitable[Any]:
        """Holding its concurrency slot: breaker, retries, the pool. Without retries (the
        default) the attempt itself is what the caller awaits: no layer in between."""
        config, pid = self.config, ctx.pid
        if pid in config.plugins:  # its own sections, where it has them
            retry, breaker_config = config.retry_for(pid), config.breaker_for(pid)
        else:
            retry, breaker_config = config.policy.retry, config.policy.breaker
        ctx.policy.breaker.config = breaker_config
        if ctx.fn in HOST_DRIVEN:  # the host's own probes: never refused by the breaker, never counted
            return with_retry(lambda: self._attempt(ctx, ctx.deadline, ctx.limit), retry, ctx.deadline)
        if retry.max_attempts <= 1:  # the default: with_retry would only re-raise
            return self._judged(ctx, retry)

        def retrying(failures: int, exc: BaseException, delay: float) -> None:
            ctx.policy.retries += 1
            log.info("retrying %s.%s in %.2fs after attempt %d failed: %s", ctx.pid, ctx.fn, delay, failures, exc)

        return with_retry(lambda: self._judged(ctx, retry), retry, ctx.deadline, on_retry=retrying)

    def _judged(self, ctx: CallContext, retry: RetryConfig) -> Awaitable[Any]:
        """One attempt the breaker admits and records."""
        breaker = ctx.policy.breaker
        breaker.check()
        until, stop = ctx.deadline, ctx.limit
        if retry.attempt_timeout is not None:  # the plugin's own limit on each attempt
            stop = min(stop, time.monotonic() + retry.attempt_timeout)
            until = min(until, stop)
        return self._attempt(ctx, until, stop, breaker)

    async def _attempt(self, ctx: CallContext, until: float, stop: float,
                       breaker: CircuitBreaker | None = None) -> Any:
        """One attempt, on the context's pool or the pool that replaced it (which it then keeps).
        Queueing counts against the deadline; the worker enforces the rest: its caller waits
        until ``until``, the plugin may run until ``stop`` (later when the caller chose a shorter
        deadline than the plugin's own). With ``breaker`` (whose ``check`` admitted it), its
        outcome is recorded there."""
        fn, args = ctx.fn, ctx.args
        def op(lease: Lease) -> Awaitable[Any]:  # the worker's coroutine itself: no frame around it
            now = time.monotonic()  # a limit not past the caller's deadline is the deadline (worker.call)
            return lease.worker.call(fn, args, max(until - now, MIN_TIMEOUT), lease, stop - now)

        try:
            while True:
                try:
                    result = await ctx.pool.run(op, until, ctx.priority)
                    break
                except TimeoutError:  # timed out in the queue, before any worker took it
                    raise CallTimeout(f"no worker became free within {ctx.budget:g}s", timeout=ctx.budget,
                                      plugin=ctx.plugin, function=fn, caller=until < stop) from None
                except HostClosed:
                    # The pool closed before the call reached a worker: a reload replaced it (or the
                    # plugin was stopped). Nothing ran, so the call may go to the new pool.
                    current = self._pool_of(ctx.plugin)
                    if current is ctx.pool:
                        raise
                    ctx.pool = current
        except BaseException as exc:
            if breaker is not None:
                if is_service_failure(exc):
                    breaker.record(False)
                else:
                    breaker.release()
            raise
        if breaker is not None:
            breaker.record(True)
        return result


async def _first(call: Awaitable[tuple[Any, float, bool]]) -> Any:
    return (await call)[0]


__all__ = ["CallContext", "CallPipeline", "cache_share"]
