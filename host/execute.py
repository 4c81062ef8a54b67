"""Ad-hoc code execution with the Isolate engine's semantics: the result, the logs, the
duration, and exceptions as ``exception`` log entries rather than raised errors."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from .config import PoolConfig, SecurityConfig, WorkerLimits
from .errors import (
    CallTimeout,
    GrantRefused,
    HostClosed,
    InvalidConfig,
    PayloadTooLarge,
    WorkerCrashed,
    check_timeout,
)
from .execute_config import TOOLS, ExecuteConfig
from .pool import Pool
from .runtime import Runtime
from .security.permissions import Permissions, beyond
from .worker import MIN_TIMEOUT, Lease, WorkerSpec

log = logging.getLogger("host.execute")

EXECUTE_ID = "execute"  # the plugin id shown for the workers of ad-hoc code (reserved: no plugin has it)
# Ad-hoc code is named to the egress proxy by this prefix and a digest of its permission set;
# "+" is not allowed in plugin ids, so no plugin can pose as one.
EXECUTE_EGRESS = "execute+"


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


def execute_pool_config(xc: ExecuteConfig, *, warm: bool = True) -> PoolConfig:
    """Warm pooled workers (``warm``: min_workers of them), or (``pooled=False``) a fresh
    worker for every execution."""
    return PoolConfig(
        min_workers=xc.min_workers if xc.pooled and warm else 0, max_workers=xc.max_workers,
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
                                          timeout=max(deadline - time.monotonic(), MIN_TIMEOUT), lease=lease)

    logs: list[LogEntry] = []
    least = 0.0  # a timed-out execution ran for its whole budget (the deadline's clock is not t0's)
    try:
        pending = await run_with_deadline(pool, op, budget, deadline, "execute", entry)
    except CallTimeout:
        ok, result, least = False, None, budget * 1000
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
                         duration=round(max((time.perf_counter() - t0) * 1000, least), 3))


def _exception(name: str, message: str, stack: str | None = None) -> LogEntry:
    return LogEntry(level="exception", message=message, timestamp=int(time.time() * 1000),
                    name=name, stack=stack)




class ExecutePools:
    """The pools that run ad-hoc code, one per permission set, and what decides which sets a
    request may have: the operator's ceiling (``[execute] allow``), the file grants no worker
    may get, strict mode, and the audit log. At most ``max_permission_sets`` pools at once (the
    least recently used goes, draining); only the set with no permissions keeps workers warm."""

    def __init__(self, config: ExecuteConfig, security: SecurityConfig, limits: WorkerLimits,
                 runtime: Runtime, new_pool: Callable[[WorkerSpec, PoolConfig], Pool],
                 start: Callable[[Pool], Awaitable[Any]], stop_later: Callable[[Pool], None]) -> None:
        self.config, self.security, self.limits, self.runtime = config, security, limits, runtime
        self._new_pool, self._start, self._stop_later = new_pool, start, stop_later
        self._pools: OrderedDict[tuple, Pool] = OrderedDict()
        self._lock = anyio.Lock()
        self._warned: set[tuple] = set()
        self._sandbox = runtime.sandbox(runtime.data_dir(".execute"))
        self._none = Permissions()  # what most requests ask for: nothing to judge
        self._none_key = self._none.key()

    def admit(self, permissions: Any, tools: list[str], code: str) -> Permissions:
        """The permission set an execution asking for ``permissions`` and ``tools`` gets, or a
        typed refusal naming what to change: InvalidConfig (a malformed request),
        PayloadTooLarge, GrantRefused (beyond what the operator allows)."""
        xc = self.config
        if len(code) > xc.max_code_chars:
            raise PayloadTooLarge(f"code of {len(code)} characters exceeds {xc.max_code_chars} "
                                  "([execute] max_code_chars)")
        if unknown := [t for t in tools if t not in TOOLS]:
            raise InvalidConfig(f"unknown tool {unknown[0]!r}; the tools are {', '.join(TOOLS)}")
        if {"db", "db:write"} & set(tools) and xc.database is None:
            raise InvalidConfig("the db tool needs a database: set [execute] database "
                                "(a sqlite file or a postgresql:// URL)")
        if "db:write" in tools and not xc.db_writes:
            raise GrantRefused('tools ["db:write"]: database writes are off; the operator turns them on '
                               "with [execute] db_writes = true in host.toml", plugin=EXECUTE_ID)
        if permissions is None or permissions == "none" or permissions == {}:
            return self._none
        perms = (Permissions.merge(*permissions, where="permissions") if isinstance(permissions, list)
                 else Permissions.parse(permissions))
        if perms.empty and not perms.allow_private_network:
            return self._none
        refusal = None
        if extra := beyond(perms, xc.allow):
            refusal = (f"execute permissions ask for {', '.join(extra)}, beyond what the operator allows "
                       f"([execute.allow] in host.toml)")
        else:
            try:
                perms = self._sandbox.resolve(perms)
            except InvalidConfig as exc:
                refusal = exc.message
        findings = [] if self.security.strict == "off" or perms.empty else perms.findings(
            max_net_hosts=self.security.max_net_hosts)
        if refusal is None and findings and self.security.strict == "refuse":
            refusal = "refused by security.strict: " + "; ".join(findings)
        if refusal is not None or not perms.empty:
            self.runtime.audit.record("execute", permissions=msgspec.to_builtins(perms), tools=tools,
                                      findings=findings, action="refused" if refusal else "allowed",
                                      reason=refusal)
        if refusal is not None:
            raise GrantRefused(refusal, plugin=EXECUTE_ID)
        if findings and perms.key() not in self._warned:
            self._warned.add(perms.key())
            log.warning("execute: risky permissions asked: %s", "; ".join(findings))
        return perms

    def budget(self, timeout: float | None) -> float:
        """The execution's timeout in seconds (InvalidConfig unless a positive finite number)."""
        return self.config.timeout if timeout is None else check_timeout(timeout)

    async def pool_for(self, perms: Permissions) -> Pool:
        """The pool of ``perms``, started when first asked for."""
        key = self._none_key if perms is self._none else perms.key()
        pool = self._pools.get(key)
        if pool is None or pool.state in ("closing", "closed"):
            async with self._lock:
                pool = self._pools.get(key)
                if pool is None or pool.state in ("closing", "closed"):
                    pool = await self._open(key, perms)
        self._pools.move_to_end(key)
        return pool

    async def _open(self, key: tuple, perms: Permissions) -> Pool:
        while len(self._pools) >= self.config.max_permission_sets:
            old_key, old = next(iter(self._pools.items()))
            del self._pools[old_key]
            log.info("execute: stopping the least recently used permission set's pool "
                     "([execute] max_permission_sets = %d)", self.config.max_permission_sets)
            self._stop_later(old)  # drains: executions in flight there finish
        spec = WorkerSpec(plugin_id=EXECUTE_ID, role="execute", module=None,
                          base_dir=self.runtime.data_dir(".execute"), read_paths=[], permissions=perms,
                          limits=self.limits,
                          egress_id=EXECUTE_EGRESS + hashlib.sha256(repr(key).encode()).hexdigest()[:16],
                          tools={"crypto": msgspec.to_builtins(self.config.crypto)},
                          reused=self.config.pooled)
        pool = self._new_pool(spec, execute_pool_config(self.config, warm=perms.empty))
        await self._start(pool)
        self._pools[key] = pool
        return pool

    def permissions_of(self, egress_id: str) -> Permissions | None:
        """The permission set whose pool the egress proxy knows as ``egress_id``."""
        return next((p.spec.permissions for p in self._pools.values() if p.spec.egress_id == egress_id), None)

    def pools(self) -> list[Pool]:
        return list(self._pools.values())

    async def run(self, code: str, input: Any, *, entry: str, timeout: float | None, permissions: Any,
                  tools: list[str] | None, running: bool) -> ExecuteResult:
        """Admit the execution, then run it on its permission set's pool."""
        tools = list(tools or [])
        if "db:write" in tools and "db" not in tools:
            tools.append("db")  # writing implies the tool itself
        perms = self.admit(permissions, tools, code)
        budget = self.budget(timeout)
        if not running:
            raise HostClosed("the host is not running")
        pool = await self.pool_for(perms)
        return await run_execute(pool, code, input, entry=entry, budget=budget, tools=tools)
