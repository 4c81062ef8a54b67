"""The workers of one plugin: dispatch, scaling, restarts with backoff, crash-loop breaker,
recycling, idle reaping and graceful drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .config import PoolConfig
from .errors import HostClosed, HostError, PluginUnavailable, SpawnFailed, StateError, WorkerCrashed
from .policy.scheduler import WaitQueue
from .pool_cooldown import Cooldown
from .pool_stale import recheck, stale_now
from .pool_waiters import PoolWaiter, WaiterDeadlines
from .protocol import HOOKS
from .runtime import Runtime
from .worker import HostCallHandler, Lease, LogSink, Worker, WorkerSpec

log = logging.getLogger("host.pool")


# Exits that are no crash: asked for, or a lifecycle hook past its deadline (the worker was
# going, or is replaced with a new config, anyway).
QUIET_EXITS = ("shutdown", "retired", "hook", None)

# A call whose worker died as it went out (so it never ran) is resent this often.
_RESENDS = 3


REAP_INTERVAL_MAX = 5.0   # seconds between idle checks at most (a quarter of idle_timeout)
REAP_INTERVAL_MIN = 0.05


class Pool:
    """Runs inside ``async with``; every worker and background task lives in its task group.
    States: starting → running; error (load failure or crash loop, until ``reset()``); closing → closed."""

    def __init__(
        self,
        spec: WorkerSpec,
        runtime: Runtime,
        config: PoolConfig,
        *,
        on_log: LogSink | None = None,
        host_call: HostCallHandler | None = None,
        on_state: Callable[[Pool], None] | None = None,
        keep_spares: bool = False,  # spares stay however long it idles (the warm execute pool)
    ) -> None:
        # The relay stations this pool serves (plugins/registry.py): each one's config, or why not.
        self.station_configs: dict[str, dict[str, Any]] = {}
        self.station_errors: dict[str, str] = {}
        self.spec = spec
        self.runtime = runtime
        self.config = config
        self.state = "starting"
        self.error: str | None = None
        self.stale: str | None = None  # why it starts no worker: its files changed (WorkerSpec.files_changed)
        self._rechecking = False
        self.workers: list[Worker] = []
        self.spares: list[Worker] = []  # ready, not serving (PoolConfig.spares): taken by _maintain
        self.restarts = self.crashes = self.timeouts = 0
        self.exits: dict[str, int] = {}  # workers lost (not stopped or retired), by exit reason
        self.calls = 0
        self._on_log, self._host_call, self._on_state = on_log, host_call, on_state
        self._starting = self._starting_spares = 0  # workers (spares) being started
        self._waiters: WaitQueue[PoolWaiter] = WaitQueue()  # callers waiting for a slot
        self._deadlines = WaiterDeadlines(self._waiters)  # theirs: one timer for all (pool_waiters.py)
        self._loop: Any = True  # the event loop, once running (True: look it up)
        self._crash_times: deque[float] = deque()
        self._consecutive_crashes = 0
        self.state_failure = False  # the last crash was a StateError: the registry tries again (state_retry.py)
        self.cooldown = Cooldown()  # a crash loop is tried again by itself (pool_cooldown.py)
        self._tg: TaskGroup | None = None
        self._closed = anyio.Event()
        self._drained: anyio.Event | None = None  # made by aclose: set once no call is in flight
        self._stop = anyio.Event()
        self._owed_restarts = 0  # workers lost; the next spawns count as restarts
        # min_workers = 0 and nothing called for idle_timeout: the spares stopped too (an idle
        # plugin keeps no process), to start again with the next call's worker
        self._spares_parked, self._keep_spares = False, keep_spares
        self._parting: list[Worker] = []  # parked spares still stopping (onStop): they count as spares

    @property
    def plugin_id(self) -> str:
        return self.spec.plugin_id

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Pool:
        self._cm = anyio.create_task_group()
        self._tg = await self._cm.__aenter__()
        self._loop = asyncio._get_running_loop()  # None on trio; a lookup costs a getpid (wake.py)
        try:
            await self._prestart()
        except BaseException:
            await self.aclose()
            raise
        self._tg.start_soon(self._reaper)
        self._tg.start_soon(self._deadlines.expire)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def serve(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the pool as a task until ``stop()``: its task group must live in one task."""
        async with self:
            task_status.started(self)
            await self._stop.wait()

    async def stop(self) -> None:
        """Drain and close a pool that runs under ``serve()``."""
        self._stop.set()
        await self._closed.wait()

    async def _prestart(self) -> None:
        """Start ``min_workers`` at once."""
        async with anyio.create_task_group() as tg:
            for _ in range(max(self.config.min_workers, int(self.spec.start_hook))):  # idle-reaped later
                self._starting += 1
                tg.start_soon(self._spawn_safely)
        if self.state == "starting":
            self._set_state("running")
        self._maintain()  # the hot spares (PoolConfig.spares)

    async def aclose(self) -> None:
        """Drain: refuse new calls, let calls in flight finish (up to drain_timeout), stop workers."""
        if self._tg is None:
            return
        if self.state != "closed":
            self._set_state("closing")
            self._fail_waiters(HostClosed("plugin is closing", plugin=self.plugin_id))
            self._drained = anyio.Event()
            self._check_drained()
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tg:  # onStop of each, within its deadline
                    for w in list(self.spares):  # they serve nothing now: stopped at once
                        tg.start_soon(w.shutdown, True)
                    with anyio.move_on_after(self.config.drain_timeout):
                        await self._drained.wait()
                    for w in self.workers:
                        tg.start_soon(w.shutdown, True)
        self._tg.cancel_scope.cancel()
        cm, self._tg = self._cm, None
        try:  # under a cancelled caller (trio raises at every await) it still ends, and says so
            await cm.__aexit__(None, None, None)
        finally:
            self._set_state("closed")
            self._closed.set()

    def reset(self) -> None:
        """Leave the `error` state (after a crash loop or a fixed plugin) and start again."""
        self._crash_times.clear()
        self._consecutive_crashes = 0
        self.error = None
        self.cooldown.reset()
        self._set_state("running")
        self._maintain()

    def _set_state(self, state: str, error: str | None = None) -> None:
        if error is not None:
            self.error = error
        if state != self.state:
            self.state = state
            if self._on_state is not None:
                self._on_state(self)

    # ------------------------------------------------------------------ workers

    async def _spawn(self) -> Worker:
        """Start one worker in the pool's task group; raises what its startup raised. The caller has counted
        it in ``_starting`` (``_starting_spares``), synchronously, so scaling decisions made before see it."""
        assert self._tg is not None
        worker = Worker(self.spec, self.runtime, on_log=self._on_log, on_slot_free=self._offer,
                        host_call=self._host_call, on_exit=self._on_worker_exit, max_inflight=self.config.max_inflight)
        await self._tg.start(worker.run)
        return worker

    async def _spawn_safely(self, delay: float = 0.0, spare: bool = False) -> None:
        """Spawn and register a worker (as a hot spare when ``spare``); failures count as
        crashes and are retried with backoff. Nothing escapes: the pool's task group (and the
        host's) must outlive any spawn. It counts as starting until it serves or is gone, its
        onStart included (counted nowhere meanwhile, _maintain started one more: past max_workers)."""
        try:
            worker = None if self.state in ("closing", "closed", "error") else await self._ready(delay, spare)
        finally:
            if spare:
                self._starting_spares -= 1
            else:
                self._starting -= 1
        if worker is not None and spare:
            self.spares.append(worker)
        elif worker is not None:
            self._serve_with(worker)
        self._maintain()

    async def _ready(self, delay: float, spare: bool) -> Worker | None:
        """A new worker past its handshake and hooks, ready to serve; None when it failed or is not wanted."""
        try:
            if delay:
                await anyio.sleep(delay)
            if await stale_now(self):
                return None
            worker = await self._spawn()
            if worker.exited.is_set():
                raise worker.exit_error or PluginUnavailable("worker died at start", plugin=self.plugin_id)
        except HostError as exc:
            self.state_failure = isinstance(exc, StateError)  # no socket on a full disk, say
            permanent = isinstance(exc, SpawnFailed) and exc.permanent  # the same spawn would fail again
            self._record_crash(str(exc), fatal=isinstance(exc, PluginUnavailable) or permanent,
                               error=exc if permanent else None)
            return None
        except Exception as exc:  # Worker.run raises only HostErrors: this is a bug of ours
            log.error("%s: spawning a worker failed", self.plugin_id, exc_info=exc)
            self._record_crash(f"spawning a worker failed: {type(exc).__name__}: {exc}", fatal=False)
            return None
        if HOOKS["start"] in worker.exports and not await worker.run_hook("start"):  # threw or hung
            await worker.shutdown()  # while the pool starts: the version fails to (a reload keeps the old one)
            self._record_crash(f"{HOOKS['start']} failed in a new worker: {(worker.hook_failure or '?')[:500]}",
                               fatal=self.state == "starting")
            return None
        told = worker.welcomed_config
        while told is not self.spec.config and self.state not in ("closing", "closed", "error"):
            told = self.spec.config  # changed during its handshake or its last hook (plugins/hooks.py)
            if not await worker.run_hook("config_change", told):
                await worker.shutdown()  # a new one starts with the new config
                return None
        if self.state in ("closing", "closed", "error") or (spare and self._spares_parked):  # parked: its hook, say
            await worker.shutdown()
            return None
        return worker

    def _serve_with(self, worker: Worker) -> None:
        """A ready worker (new, or a spare taken) joins the serving ones."""
        if self._owed_restarts:
            self._owed_restarts -= 1
            self.restarts += 1
        worker.idle_since = time.monotonic()
        self.workers.append(worker)
        self.cooldown.served(self)
        self._offer(worker)

    def _on_worker_exit(self, worker: Worker) -> None:
        if worker in self._parting:  # a parked spare gone: room for one again
            self._parting.remove(worker)
            self._maintain()
            return
        if worker in self.spares:  # a spare that died: it served nothing; another is started
            self.spares.remove(worker)
            if worker.exit_reason not in QUIET_EXITS and self.state not in ("closing", "closed"):
                self.exits[worker.exit_reason] = self.exits.get(worker.exit_reason, 0) + 1
                self._record_crash(str(worker.exit_error), fatal=False)
                self._maintain()
            return
        if worker not in self.workers:
            return  # never made it into the pool: _spawn_safely counted it
        self.workers.remove(worker)
        self._check_drained()
        reason = worker.exit_reason
        lost = reason not in QUIET_EXITS and self.state not in ("closing", "closed")
        if lost:
            self.exits[reason] = self.exits.get(reason, 0) + 1
        if reason in ("timeout", "cancel"):  # past a deadline, or a caller's cancel it ignored: no crash
            self.timeouts += reason == "timeout"
            self._owed_restarts += 1
        elif lost:
            self.state_failure = False
            charged = self.spec.role == "execute" and worker.load  # ad-hoc code crashed it: no backoff
            self._record_crash(str(worker.exit_error), fatal=False, backoff=not charged)
            self._owed_restarts += 1
        if self.state not in ("closing", "closed"):
            self._maintain()

    def _record_crash(self, message: str, *, fatal: bool, backoff: bool = True,
                      error: HostError | None = None, counted: bool = True) -> None:
        """Count a crash (unless not ``counted``); too many within the window (or a load failure) → state
        `error`, its waiting callers failed with ``error`` (default: PluginUnavailable saying why)."""
        now = time.monotonic()
        self.crashes += counted
        self._consecutive_crashes = self._consecutive_crashes + 1 if backoff else 0
        self._crash_times.append(now)
        while self._crash_times and now - self._crash_times[0] > self.config.crash_loop_window:
            self._crash_times.popleft()
        log.warning("%s", message)
        if fatal or len(self._crash_times) >= self.config.crash_loop_threshold:
            why = message if fatal else (
                f"crash loop: {len(self._crash_times)} crashes within "
                f"{self.config.crash_loop_window:g}s; last: {message}"
            )
            # outside causes (an OOM killer) too: tried again after a cooldown; a state failure by state_retry.py
            if not (fatal or self.state_failure):
                why += self.cooldown.note if self.state == "error" else self.cooldown.tripped(self)
            self._set_state("error", why)
            self._fail_waiters(error or PluginUnavailable(why, plugin=self.plugin_id))
            spares, self.spares = self.spares, []  # they would serve nothing now
            for w in [w for w in (*self.workers, *spares) if w.load == 0]:
                self._retire(w)

    def _backoff(self) -> float:
        n = self._consecutive_crashes
        if n <= 1:
            return 0.0
        return min(self.config.restart_backoff * 2 ** (n - 2), self.config.restart_backoff_max)

    def _maintain(self) -> None:
        """Start workers up to min_workers and for the callers waiting (at most max_workers), and the spares."""
        if self.state not in ("running", "starting") or self._tg is None:
            return
        if self.stale is not None and not self._rechecking:  # no new worker (a spare serves); looked at again
            self._rechecking = True
            self._tg.start_soon(recheck, self)
        cfg = self.config
        spares = 0 if self._spares_parked or self.stale is not None else cfg.spares
        if (len(self.workers) + self._starting >= cfg.max_workers
                and len(self.spares) + self._starting_spares + len(self._parting) >= spares):
            return  # no room to start one and the spares are there: the common case under load
        active = sum(1 for w in self.workers if not w.retiring and not w.unresponsive) + self._starting
        need = cfg.min_workers - active
        waiting = len(self._waiters) - self._starting * cfg.max_inflight
        if waiting > 0:
            need = max(need, -(-waiting // cfg.max_inflight))
        room = cfg.max_workers - len(self.workers) - self._starting
        delay = self._backoff()
        n = wanted = max(0, min(need, room))
        while n and self.spares:  # a spare serves at once: no spawn in the caller's path
            spare = self.spares.pop(0)
            if spare.state == "ready" and not spare.exited.is_set():
                self._serve_with(spare)
                n -= 1
        for _ in range(n if self.stale is None else 0):
            self._starting += 1
            self._tg.start_soon(self._spawn_safely, delay)
        if self._spares_parked and wanted:  # called again: the spares come back
            self._spares_parked, spares = False, cfg.spares
        for _ in range(max(0, spares - len(self.spares) - self._starting_spares - len(self._parting))):
            self._starting_spares += 1
            self._tg.start_soon(self._spawn_safely, delay, True)

    def _retire(self, worker: Worker) -> None:
        worker.retiring = True
        if worker.load == 0 and self._tg is not None:
            worker.exit_reason = worker.exit_reason or "retired"
            self._tg.start_soon(worker.shutdown, True)

    async def _reaper(self) -> None:
        """Stop workers idle for longer than idle_timeout, down to min_workers (_spares_parked)."""
        cfg = self.config
        interval = max(min(cfg.idle_timeout / 4, REAP_INTERVAL_MAX), REAP_INTERVAL_MIN)
        while True:
            await anyio.sleep(interval)
            now = time.monotonic()
            active = [w for w in self.workers if not w.retiring]
            surplus = len(active) - cfg.min_workers
            for w in active:
                if surplus <= 0:
                    break
                if w.load == 0 and now - w.idle_since > cfg.idle_timeout:
                    self._retire(w)
                    surplus -= 1
            if surplus <= 0 and self._idle_spares(now):  # nothing serves: the spares go too
                self._spares_parked, self._parting, spares, self.spares = True, self._parting + self.spares, self.spares, []
                for w in spares:
                    self._retire(w)

    def _idle_spares(self, now: float) -> bool:
        """min_workers = 0, nothing starting or waiting, and spares idle for idle_timeout."""
        cfg = self.config
        return (cfg.min_workers == 0 and bool(self.spares) and not self._keep_spares and not self._starting
                and not self._starting_spares and not self._waiters
                and all(now - w.idle_since > cfg.idle_timeout for w in self.spares))

    # ------------------------------------------------------------------ dispatch

    def _pick(self) -> Worker | None:
        best: Worker | None = None
        limit = self.config.max_inflight
        for w in self.workers:
            if w.retiring or w.state != "ready" or w.unresponsive:
                continue
            load = w.load
            if load < limit and (best is None or load < best.load):
                best = w
                if load == 0:
                    break
        return best

    def _check_drained(self) -> None:
        """While closing: wake ``aclose`` once no worker has a call in flight that a caller
        still waits for, or reserved (one its caller gave up on ends with the worker)."""
        if self._drained is not None and not any(w.awaited for w in self.workers):
            self._drained.set()

    def _offer(self, worker: Worker) -> None:
        """A slot freed up on ``worker``: give it to the first waiting caller (highest priority,
        then longest waiting), or retire it."""
        if self._drained is not None:  # closing: nobody waits any more (they were failed)
            self._check_drained()
            return
        mc = self.config.max_calls_per_worker
        if mc and worker.calls >= mc and not worker.retiring:
            worker.retiring = True
            self._maintain()
        if worker.retiring:
            if worker.load == 0 and worker.state == "ready" and self._tg is not None:
                worker.exit_reason = worker.exit_reason or "retired"
                self._tg.start_soon(worker.shutdown, True)
            return
        while self._waiters and worker.state == "ready" and not worker.unresponsive \
                and worker.load < self.config.max_inflight:
            waiter = self._waiters.pop()
            if waiter is None:
                break
            waiter.lease = Lease(worker)
            waiter.event.set()

    def _fail_waiters(self, error: HostError) -> None:
        while (waiter := self._waiters.pop()) is not None:
            waiter.error = error
            waiter.event.set()

    async def acquire(self, deadline: float | None = None, priority: int = 0, looked: bool = False) -> Lease:
        """A slot on a worker, reserved for the caller until its request consumes it.
        Waiting past ``deadline`` (time.monotonic()) raises TimeoutError (``run_with_deadline``
        turns it into CallTimeout); when every slot is taken, higher ``priority`` callers are
        served first. ``looked``: the caller found no free slot just now (not looked for again)."""
        if self.state == "error":
            raise PluginUnavailable(self.error or "plugin is in error state", plugin=self.plugin_id)
        if self.state in ("closing", "closed"):
            raise HostClosed("plugin is closing", plugin=self.plugin_id)
        worker = None if looked else self._pick()
        if worker is not None:
            return Lease(worker)
        waiter = PoolWaiter(self._loop)
        self._waiters.push(waiter, priority)
        self._maintain()
        if deadline is not None and not waiter.event.is_set():
            if deadline <= time.monotonic():
                self._waiters.drop(waiter)
                raise TimeoutError
            self._deadlines.add(deadline, waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if not (waiter.event.is_set() or waiter.gone):
                self._waiters.drop(waiter)
            elif waiter.lease is not None:
                self.release(waiter.lease)
            raise
        if waiter.timed_out:
            raise TimeoutError
        if waiter.error is not None:
            raise waiter.error
        assert waiter.lease is not None
        return waiter.lease

    def release(self, lease: Lease) -> None:
        """Give back a reservation that no request used."""
        if lease.consume():
            self._offer(lease.worker)

    async def run(self, op: Callable[[Lease], Awaitable[Any]], deadline: float | None = None,
                  priority: int = 0) -> Any:
        """Reserve a slot, run ``op`` with it (``op`` passes the lease to the worker).
        TimeoutError if no slot became free before ``deadline``. A call that never reached its
        worker (it died as the call went out) is sent to another one, a few times at most."""
        for attempt in range(_RESENDS + 1):
            # A free slot now: taken without awaiting ``acquire`` (which checks the same first).
            looked = self.state == "running"
            worker = self._pick() if looked else None
            lease = Lease(worker) if worker is not None else await self.acquire(deadline, priority, looked)
            try:
                result = await op(lease)
            except WorkerCrashed as exc:
                if exc.delivered or attempt == _RESENDS:
                    raise
                continue
            finally:
                if not lease.used:  # the request consumed it, unless it never went out
                    self.release(lease)
            break
        self.calls += 1
        self._consecutive_crashes = 0
        return result

    # ------------------------------------------------------------------ snapshot

    @property
    def waiting(self) -> int:
        """Callers waiting for a free worker slot."""
        return len(self._waiters)
