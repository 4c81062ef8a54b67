"""Ad-hoc code execution with the Isolate engine's semantics: the result, the logs, the
duration, and exceptions as ``exception`` log entries rather than raised errors."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from .config import PoolConfig
from .errors import CallTimeout, InvalidCode, WorkerCrashed
from .execute_config import REUSE_PROBE, ExecuteConfig
from .pool import Pool
from .worker import MIN_TIMEOUT, Lease, refusal_advice

log = logging.getLogger("host.execute")

EXECUTE_ID = "execute"  # the plugin id shown for the workers of ad-hoc code (reserved: no plugin has it)
# Ad-hoc code is named to the egress proxy by this prefix and a digest of its permission set;
# "+" is not allowed in plugin ids, so no plugin can pose as one.
EXECUTE_EGRESS = "execute+"
LANGUAGES = ("javascript", "typescript")  # what execute code may be written in
INVALID_CODE = "INVALID_CODE"  # the error type of TypeScript that does not parse (typescript.ts)


class LogEntry(msgspec.Struct, omit_defaults=True):
    """A console line or an exception, as Isolate's ``logs`` entries."""

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


FRESH_SPARES = 2  # ExecuteConfig.spares by default with pooled = false


def execute_pool_config(xc: ExecuteConfig, *, warm: bool = True) -> PoolConfig:
    """Warm pooled workers (``warm``: min_workers of them), or (``pooled=False``) a fresh
    worker for every execution, taken from the spares started ahead (``warm`` pools only)."""
    return PoolConfig(
        min_workers=xc.min_workers if xc.pooled and warm else 0, max_workers=xc.max_workers,
        idle_timeout=xc.idle_timeout,
        max_calls_per_worker=xc.max_calls_per_worker if xc.pooled else 1,
        crash_loop_threshold=1_000_000,  # user code crashing is not a plugin fault
        spares=(xc.spares if xc.spares is not None else 0 if xc.pooled else FRESH_SPARES) if warm else 0,
    )


LEFT_BUSY = "left busy"  # the kill reason of a reused worker that did not answer its probe


async def run_execute(pool: Pool, code: str, input: Any, *, entry: str, budget: float,
                      tools: list[str], settings: dict[str, Any] | None = None, language: str = "javascript",
                      reuse_probe: float = REUSE_PROBE) -> tuple[ExecuteResult, str]:
    """Run ``code`` on a worker of ``pool``; every outcome becomes an ExecuteResult, told apart
    for the audit log as ``ok``, ``exception``, ``timeout`` or ``crashed``. TypeScript that
    does not parse raises InvalidCode (a 400: nothing ran). A worker that ran an execution
    before must show within ``reuse_probe`` seconds that its event loop turned since (a pong):
    code of the last one may have left it spinning in microtasks, where no timer runs; it is
    killed instead and the execution, which never reached it, goes to another worker."""
    deadline = time.monotonic() + budget
    t0 = time.perf_counter()

    async def op(lease: Lease) -> Any:
        worker = lease.worker
        within = min(reuse_probe, max(deadline - time.monotonic(), 0))
        if not await worker.turned(within):
            if within < reuse_probe:  # the caller's time ran out before the probe's: no verdict on the worker
                raise CallTimeout(f"no worker could take the execution within {budget:g}s", timeout=budget,
                                  plugin=EXECUTE_ID, function=entry)
            worker.kill(LEFT_BUSY)
            raise WorkerCrashed(f"worker {worker.describe()} did not answer a ping within {reuse_probe:g}s "
                                "([execute] reuse_probe) after its last execution", reason=LEFT_BUSY,
                                delivered=False, plugin=EXECUTE_ID, function=entry)
        return await worker.execute(code, entry=entry, input=input, tools=tools, settings=settings, language=language,
                                          timeout=max(deadline - time.monotonic(), MIN_TIMEOUT), lease=lease)

    logs: list[LogEntry] = []
    least = 0.0  # a timed-out execution ran for its whole budget (the deadline's clock is not t0's)
    try:
        pending = await run_with_deadline(pool, op, budget, deadline, "execute", entry)
    except CallTimeout:
        ok, result, least, outcome = False, None, budget * 1000, "timeout"
        logs.append(_exception("TimeoutError", "Execution timeout",
                               f"TimeoutError: Execution timeout (limit {budget:g}s)"))
    except WorkerCrashed as exc:
        ok, result, outcome = False, None, "crashed"
        # the caller hears what happened, not the worker's pid, name or output (the host's log has them)
        told = f"the worker {exc.summary or 'crashed'}"
        log.info("execute: %s", exc.message)
        logs.append(_exception("WorkerCrashed", told, f"WorkerCrashed: {told}"))
    else:
        result = pending.value
        logs.extend(
            LogEntry(level=m.level, message=m.message, timestamp=int(m.ts), name=m.name, stack=m.stack)
            for m in pending.logs or ()
        )
        info = pending.info
        ok = info is None
        outcome = "ok" if ok else "exception"
        if info is not None:
            if language == "typescript" and info.error_type == INVALID_CODE:
                raise InvalidCode(info.message, plugin=EXECUTE_ID, function=entry)
            # a sandbox refusal names the request's permission that allows it, not Deno's --allow flag
            told = refusal_advice(info.message, None) if info.name == "NotCapable" else info.message
            logs.append(_exception(info.name, told, info.stack))
    return ExecuteResult(ok=ok, result=result if ok else None, logs=logs,
                         duration=round(max((time.perf_counter() - t0) * 1000, least), 3)), outcome


def _exception(name: str, message: str, stack: str | None = None) -> LogEntry:
    return LogEntry(level="exception", message=message, timestamp=int(time.time() * 1000),
                    name=name, stack=stack)

