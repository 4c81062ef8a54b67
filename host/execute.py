"""Ad-hoc code execution with seed 001's Isolate semantics: the result, the logs, the
duration, and exceptions as ``exception`` log entries rather than raised errors."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .config import ExecuteConfig, PoolConfig
from .errors import CallTimeout, WorkerCrashed
from .pool import Pool
from .worker import Lease


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


async def run_with_deadline(pool: Pool, op: Any, budget: float, deadline: float,
                             plugin: str, fn: str, priority: int = 0) -> Any:
    """Queueing counts against the caller's deadline; the worker enforces the rest."""
    try:
        return await pool.run(op, deadline, priority)
    except TimeoutError:  # timed out in the queue, before any worker took it
        raise CallTimeout(f"no worker became free within {budget:g}s", timeout=budget,
                          plugin=plugin, function=fn) from None


def execute_pool_config(xc: ExecuteConfig) -> PoolConfig:
    """Warm pooled workers, or (``pooled=False``) a fresh worker for every execution."""
    return PoolConfig(
        min_workers=xc.min_workers if xc.pooled else 0, max_workers=xc.max_workers,
        idle_timeout=xc.idle_timeout,
        max_calls_per_worker=xc.max_calls_per_worker if xc.pooled else 1,
        crash_loop_threshold=1_000_000,  # user code crashing is not a plugin fault
    )


async def run_execute(pool: Pool, code: str, input: Any, *, entry: str, budget: float,
                      tools: list[str]) -> ExecuteResult:
    """Run ``code`` on a worker of ``pool``; every outcome becomes an ExecuteResult."""
    deadline = time.monotonic() + budget
    t0 = time.perf_counter()

    async def op(lease: Lease) -> Any:
        return await lease.worker.execute(code, entry=entry, input=input, tools=tools,
                                          timeout=max(deadline - time.monotonic(), 0.001), lease=lease)

    logs: list[LogEntry] = []
    try:
        pending = await run_with_deadline(pool, op, budget, deadline, "execute", entry)
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


def _exception(name: str, message: str, stack: str | None = None) -> LogEntry:
    return LogEntry(level="exception", message=message, timestamp=int(time.time() * 1000),
                    name=name, stack=stack)


