"""PluginHost: the embedding API. An async context manager (anyio: asyncio or trio) that owns
one pool per plugin plus pools for ad-hoc ``execute``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import protocol as p
from .config import HostConfig, PoolConfig
from .errors import (
    CallTimeout,
    HostClosed,
    HostError,
    InvalidConfig,
    PayloadTooLarge,
    PluginNotFound,
    WorkerCrashed,
)
from .permissions import Permissions
from .plugins import PluginSource, discover
from .pool import Pool
from .runtime import Runtime
from .worker import Lease, Worker, WorkerSpec

log = logging.getLogger("host")
plugin_log = logging.getLogger("host.plugin")

_LEVELS = {
    "debug": logging.DEBUG, "log": logging.INFO, "info": logging.INFO, "warn": logging.WARNING,
    "error": logging.ERROR, "exception": logging.ERROR,
}


class LogEntry(msgspec.Struct, omit_defaults=True):
    """A console line or an exception, as seed 001's ``logs`` entries."""

    level: str
    message: str
    timestamp: int
    name: str | None = None
    stack: str | None = None


class ExecuteResult(msgspec.Struct):
    """Outcome of ``execute``: exceptions are log entries with level ``exception``, not raised."""

    ok: bool
    result: Any = None
    logs: list[LogEntry] = []
    duration: float = 0.0  # milliseconds


class WorkerInfo(msgspec.Struct):
    index: int
    pid: int | None
    state: str
    calls: int
    inflight: int
    last_heartbeat: float | None  # unix time of the last pong
    started_at: float              # unix time


class PluginInfo(msgspec.Struct):
    id: str
    state: str
    version: str | None
    name: str | None
    path: str
    error: str | None
    exports: list[str]
    calls: int
    crashes: int
    restarts: int
    timeouts: int
    workers: list[WorkerInfo]


LogListener = Callable[[str, Worker, p.Log], None]


class PluginHost:
    """Run plugins in sandboxed Deno workers.

    >>> async with PluginHost(HostConfig(plugins_dir="plugins")) as h:
    ...     await h.call("calc", "add", 1, 2)
    """

    def __init__(self, config: HostConfig | None = None) -> None:
        self.config = config or HostConfig()
        self._pools: dict[str, Pool] = {}
        self._sources: dict[str, PluginSource] = {}
        self._exec_pools: dict[tuple, Pool] = {}
        self._exec_lock = anyio.Lock()
        self._listeners: list[LogListener] = []
        self._runtime: Runtime | None = None
        self._tg: TaskGroup | None = None
        self._running = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> PluginHost:
        self._runtime = Runtime.create(self.config)
        self._cm = anyio.create_task_group()
        self._tg = await self._cm.__aenter__()
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                for src in discover(self.config.plugin_dirs):
                    tg.start_soon(self._start_plugin, src)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.aclose()
        finally:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                cm, self._tg = self._cm, None
                await cm.__aexit__(None, None, None)
            if self._runtime is not None:
                self._runtime.close()

    async def aclose(self) -> None:
        """Drain every pool (calls in flight finish), then stop all workers. Callable from
        any task; leaving ``async with`` does it too."""
        self._running = False
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for pool in [*self._pools.values(), *self._exec_pools.values()]:
                    tg.start_soon(pool.stop)

    async def _start_plugin(self, src: PluginSource) -> None:
        cfg = self.config
        spec = WorkerSpec(
            plugin_id=src.id, module=src.module, base_dir=src.base_dir,
            read_paths=[str(src.root)], limits=cfg.limits_for(src.id),
            config=dict(cfg.plugins[src.id].config) if src.id in cfg.plugins else None,
        )
        pool = self._new_pool(spec, cfg.pool_for(src.id), probe=_apply_manifest_permissions)
        self._sources[src.id] = src
        self._pools[src.id] = pool
        assert self._tg is not None
        await self._tg.start(pool.serve)

    def _new_pool(self, spec: WorkerSpec, config: PoolConfig, **kw: Any) -> Pool:
        assert self._runtime is not None
        return Pool(spec, self._runtime, config, on_log=self._on_log, **kw)

    # ------------------------------------------------------------------ logs

    def add_log_listener(self, fn: LogListener) -> Callable[[], None]:
        """Receive every worker log line as ``fn(plugin_id, worker, log)``; returns a remover."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn)

    def _on_log(self, worker: Worker, msg: p.Log) -> None:
        if plugin_log.isEnabledFor(_LEVELS.get(msg.level, logging.INFO)):
            plugin_log.log(_LEVELS.get(msg.level, logging.INFO), "[plugin:%s] %s",
                           worker.describe(), msg.message)
        for fn in list(self._listeners):
            fn(worker.spec.plugin_id, worker, msg)

    # ------------------------------------------------------------------ calls

    def _pool(self, plugin: str) -> Pool:
        if not self._running:
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        pool = self._pools.get(plugin)
        if pool is None:
            raise PluginNotFound(f"no plugin {plugin!r} (installed: {', '.join(sorted(self._pools)) or 'none'})",
                                 plugin=plugin)
        return pool

    async def call(self, plugin: str, fn: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``fn(*args)`` exported by ``plugin``; ``timeout`` (seconds) covers queueing and
        running; past it the worker is killed and CallTimeout raised."""
        pool = self._pool(plugin)
        budget = pool.spec.limits.call_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        arglist = list(args)

        async def op(lease: Lease) -> Any:
            return await lease.worker.call(fn, arglist, max(deadline - time.monotonic(), 0.001), lease)

        return await _run_with_deadline(pool, op, budget, deadline, plugin, fn)

    async def execute(
        self,
        code: str,
        input: Any = msgspec.UNSET,
        *,
        entry: str = "default",
        timeout: float | None = None,
        permissions: Permissions | dict[str, Any] | None = None,
        tools: list[str] | None = None,
    ) -> ExecuteResult:
        """Run module ``code`` and call its export ``entry`` with ``input`` (seed 001's Isolate
        contract): errors come back as ``exception`` log entries, never raised. ``input``
        left out reaches the code as ``undefined``; ``None`` as ``null``."""
        xc = self.config.execute
        if len(code.encode()) > xc.max_code_bytes:
            raise PayloadTooLarge(f"code of {len(code.encode())} bytes exceeds {xc.max_code_bytes}")
        perms = permissions if isinstance(permissions, Permissions) else Permissions.parse(permissions)
        budget = xc.timeout if timeout is None else timeout
        pool = await self._execute_pool(perms)
        deadline = time.monotonic() + budget
        t0 = time.perf_counter()

        async def op(lease: Lease) -> Any:
            return await lease.worker.execute(code, entry=entry, input=input, tools=list(tools or []),
                                              timeout=max(deadline - time.monotonic(), 0.001), lease=lease)

        logs: list[LogEntry] = []
        try:
            pending = await _run_with_deadline(pool, op, budget, deadline, "execute", entry)
        except CallTimeout:
            ok, result = False, None
            logs.append(_exception("TimeoutError", "Execution timeout",
                                   f"TimeoutError: Execution timeout (limit {budget:g}s)"))
        except WorkerCrashed as exc:
            ok, result = False, None
            logs.append(_exception("WorkerCrashed", exc.message, f"WorkerCrashed: {exc.message}"))
        else:
            result = pending.value
            logs.extend(
                LogEntry(level=m.level, message=m.message, timestamp=int(m.ts), name=m.name, stack=m.stack)
                for m in pending.logs or ()
            )
            info = pending.info
            ok = info is None
            if info is not None:
                logs.append(_exception(info.name, info.message, info.stack))
        return ExecuteResult(ok=ok, result=result if ok else None, logs=logs,
                             duration=round((time.perf_counter() - t0) * 1000, 3))

    async def _execute_pool(self, perms: Permissions) -> Pool:
        if not self._running:
            raise HostClosed("the host is not running")
        key = perms.key()
        pool = self._exec_pools.get(key)
        if pool is not None:
            return pool
        async with self._exec_lock:
            pool = self._exec_pools.get(key)
            if pool is None:
                xc = self.config.execute
                cfg = PoolConfig(
                    min_workers=xc.min_workers, max_workers=xc.max_workers,
                    idle_timeout=xc.idle_timeout,
                    max_calls_per_worker=xc.max_calls_per_worker if xc.pooled else 1,
                    crash_loop_threshold=1_000_000,  # user code crashing is not a plugin fault
                )
                spec = WorkerSpec(plugin_id="execute", module=None, base_dir=self._runtime_dir(),
                                  read_paths=[], permissions=perms, limits=self.config.limits)
                pool = self._new_pool(spec, cfg)
                assert self._tg is not None
                await self._tg.start(pool.serve)
                self._exec_pools[key] = pool
        return pool

    def _runtime_dir(self) -> Any:
        assert self._runtime is not None
        return self._runtime.run_dir

    # ------------------------------------------------------------------ introspection

    def plugins(self) -> list[PluginInfo]:
        """A snapshot of every plugin: state, version, and each worker's pid, state, heartbeat."""
        now_wall, now_mono = time.time(), time.monotonic()
        out = []
        for pid, pool in sorted(self._pools.items()):
            meta = pool.metadata()
            meta = meta if isinstance(meta, dict) else {}
            exports: list[str] = next((w.exports for w in pool.workers if w.exports), [])
            out.append(PluginInfo(
                id=pid, state=pool.state, version=_str_or_none(meta.get("version")),
                name=_str_or_none(meta.get("name")), path=str(self._sources[pid].module),
                error=pool.error if pool.state == "error" else None, exports=list(exports),
                calls=pool.calls, crashes=pool.crashes, restarts=pool.restarts, timeouts=pool.timeouts,
                workers=[
                    WorkerInfo(index=w.index, pid=w.pid, state=w.state, calls=w.calls, inflight=w.load,
                               last_heartbeat=w.last_heartbeat,
                               started_at=now_wall - (now_mono - w.started_at))
                    for w in pool.workers
                ],
            ))
        return out

    def plugin(self, plugin_id: str) -> PluginInfo:
        for info in self.plugins():
            if info.id == plugin_id:
                return info
        raise PluginNotFound(f"no plugin {plugin_id!r}", plugin=plugin_id)

    def pool(self, plugin_id: str) -> Pool:
        """The pool of one plugin (for operations such as ``reset()``)."""
        return self._pool(plugin_id)


async def _run_with_deadline(pool: Pool, op: Any, budget: float, deadline: float,
                             plugin: str, fn: str) -> Any:
    """Queueing counts against the caller's deadline; the worker enforces the rest."""
    try:
        return await pool.run(op, deadline)
    except CallTimeout as exc:
        if exc.function is None:  # timed out in the queue, before any worker took it
            raise CallTimeout(f"no worker became free within {budget:g}s", timeout=budget,
                              plugin=plugin, function=fn) from None
        raise


def _apply_manifest_permissions(metadata: Any, spec: WorkerSpec) -> WorkerSpec:
    """Probe hook: the plugin's declared permissions become its workers' grants."""
    raw = metadata.get("permissions") if isinstance(metadata, dict) else None
    try:
        perms = Permissions.parse(raw, where=f"{spec.plugin_id}: metadata.permissions")
    except InvalidConfig as exc:
        raise InvalidConfig(exc.message, plugin=spec.plugin_id) from None
    return replace(spec, permissions=perms)


def _exception(name: str, message: str, stack: str | None = None) -> LogEntry:
    return LogEntry(level="exception", message=message, timestamp=int(time.time() * 1000),
                    name=name, stack=stack)


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


__all__ = ["ExecuteResult", "HostError", "LogEntry", "PluginHost", "PluginInfo", "WorkerInfo"]
