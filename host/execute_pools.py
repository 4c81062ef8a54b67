"""The pools that run ad-hoc code (``execute``), one per permission set, and what decides which
sets a request may have: the operator's ceiling (``[execute] allow``), the file grants no
worker may get, strict mode, and the audit log, which gets one line per execution.

Pools: the set with no permissions (what most requests ask for) keeps ``min_workers`` warm for
the host's life. Every other set gets a pool when first asked for, closed once idle for
``[execute] idle_timeout`` (its workers are reaped at the same moment), and at most
``max_permission_sets`` of them exist at once: a new set closes the least recently used idle
one, and when every one is busy the request is refused (503, PluginUnavailable) rather than
queued behind code that may run for its whole timeout."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import msgspec

from .config import SecurityConfig, WorkerLimits
from .errors import (
    GrantRefused,
    HostClosed,
    HostError,
    InvalidCode,
    InvalidConfig,
    PayloadTooLarge,
    PluginUnavailable,
    check_timeout,
)
from .execute import EXECUTE_EGRESS, EXECUTE_ID, LANGUAGES, ExecuteResult, execute_pool_config, run_execute
from .execute_config import ExecuteConfig
from .execute_hooks import ExecuteHooks, ExecuteRequest
from .execute_tools import DEFAULT_TOOLS, ToolRegistry
from .pool import REAP_INTERVAL_MAX, REAP_INTERVAL_MIN, Pool
from .runtime import Runtime
from .security.grant_entries import problems
from .security.permissions import Permissions, beyond
from .security.refusals import record_tool
from .worker import WorkerSpec

log = logging.getLogger("host.execute")


# The names of a thrown error the audit line keeps; code names its own errors as it likes (a
# name could carry what it read), so any other is "other".
_ERROR_NAMES = frozenset({
    "Error", "TypeError", "RangeError", "ReferenceError", "SyntaxError", "EvalError", "URIError",
    "AggregateError", "AbortError", "TimeoutError", "NotCapable", "EntryError", "Exception", "PluginError",
    "DOMException", "InvalidCode",
})


class _SetPool:
    """A permission set's pool, the executions using it now, and when the last one ended."""

    __slots__ = ("active", "last_used", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool, self.active, self.last_used = pool, 0, time.monotonic()


class ExecutePools:
    """Admission, pools and audit of ad-hoc code; see the module docstring. ``spawn`` starts a
    background task in the host's task group (closing a pool, the idle sweep)."""

    def __init__(self, config: ExecuteConfig, security: SecurityConfig, limits: WorkerLimits,
                 runtime: Runtime, new_pool: Callable[..., Pool],
                 start: Callable[[Pool], Awaitable[Any]], spawn: Callable[..., Any]) -> None:
        self.config, self.security, self.limits, self.runtime = config, security, limits, runtime
        self._new_pool, self._start, self._spawn = new_pool, start, spawn
        self._sets: OrderedDict[tuple, _SetPool] = OrderedDict()
        self._lock = anyio.Lock()
        self._sweeping = False
        self._warned: set[tuple] = set()
        self._data_dir = os.path.normpath(runtime.data_dir(".execute"))
        self._sandbox = runtime.sandbox(self._data_dir)
        self._none = Permissions()  # what most requests ask for: nothing to judge
        self._none_key = self._none.key()
        # Every tool, built-in or the operator's, and the operator's hooks: imported now, so a
        # wrong setting fails the host's start (InvalidConfig naming it), not an execution.
        self.tools = ToolRegistry(config.tools, database=config.database, db_writes=config.db_writes,
                                  allow=config.allow, audit=partial(record_tool, runtime.audit))  # budgeted
        self.hooks = ExecuteHooks(config.hooks)

    # ------------------------------------------------------------------ admission

    def admit(self, permissions: Any, tools: list[str], code: str, language: str = "javascript",
              note: dict[str, Any] | None = None) -> Permissions:
        """The permission set an execution asking for ``permissions`` and ``tools`` gets, or a
        typed refusal naming what to change: InvalidConfig (a malformed request),
        PayloadTooLarge, GrantRefused (beyond what the operator allows, or strict mode).
        ``note`` receives what the audit line should say about the set (set and findings)."""
        note = {} if note is None else note
        xc = self.config
        if len(code) > xc.max_code_chars:
            raise PayloadTooLarge(f"code of {len(code)} characters exceeds {xc.max_code_chars} "
                                  "([execute] max_code_chars)")
        if language not in LANGUAGES:
            raise InvalidConfig(f"language: {language!r} is not one of {', '.join(LANGUAGES)}")
        self.tools.admit(tools)
        needs = self.tools.permissions(tools)  # module tools' permissions join the set
        if (permissions is None or permissions == "none" or permissions == {}) and not needs:
            return self._none
        asked = [] if permissions is None else permissions if isinstance(permissions, list) else [permissions]
        perms = (Permissions.merge(*asked, *needs, where="permissions") if isinstance(permissions, list) or needs
                 else Permissions.parse(permissions))
        if perms.empty and not perms.allow_private_network:
            return self._none
        for kind, entry, why in problems(perms):  # else every worker would die at start
            raise InvalidConfig(f"permissions.{kind}: {entry!r} {why}")
        note["permissions"] = msgspec.to_builtins(perms)
        if extra := beyond(perms, xc.allow):
            raise GrantRefused(f"execute permissions ask for {', '.join(extra)}, beyond what the operator "
                               f"allows ([execute.allow] in host.toml)", plugin=EXECUTE_ID)
        try:
            perms = self._sandbox.resolve(perms)
        except InvalidConfig as exc:
            raise GrantRefused(exc.message, plugin=EXECUTE_ID) from None
        note["permissions"] = msgspec.to_builtins(perms)
        findings = self.findings(perms)
        note["findings"] = findings
        if findings and self.security.strict == "refuse":
            raise GrantRefused("refused by security.strict: " + "; ".join(findings), plugin=EXECUTE_ID)
        if findings and perms.key() not in self._warned:
            self._warned.add(perms.key())
            log.warning("execute: risky permissions asked (security.strict = %s): %s",
                        self.security.strict, "; ".join(findings))
        return perms

    def findings(self, perms: Permissions) -> list[str]:
        """What strict mode objects to in an execution's set: what it objects to in a plugin's
        (whole kinds, processes, native code, private hosts, ...), plus writing outside the
        execution's own data directory (code sent over HTTP changing the machine's files)."""
        if self.security.strict == "off" or perms.empty:
            return []
        out = perms.findings(max_net_hosts=self.security.max_net_hosts)
        if isinstance(perms.write, list):
            out += [f"write: {p!r} is outside execute's own data directory ({self._data_dir})"
                    for p in perms.write
                    if os.path.commonpath([os.path.normpath(p), self._data_dir]) != self._data_dir]
        return out

    def budget(self, timeout: float | None) -> float:
        """The execution's timeout in seconds (InvalidConfig unless a positive number within
        ``[execute] max_timeout``)."""
        if timeout is None:
            return self.config.timeout
        if check_timeout(timeout) > (most := self.config.max_timeout):
            raise InvalidConfig(f"timeout: {timeout * 1000:g} ms is beyond what the operator allows "
                                f"([execute] max_timeout = {most:g} s)")
        return float(timeout)

    # ------------------------------------------------------------------ pools

    def _key(self, perms: Permissions) -> tuple:
        return self._none_key if perms is self._none else perms.key()

    async def _claim(self, perms: Permissions) -> _SetPool:
        """The pool of ``perms`` (started when first asked for), counted as in use until the
        caller's ``_release``: neither the sweep nor the cap closes it meanwhile."""
        key = self._key(perms)
        entry = self._sets.get(key)
        if entry is None or entry.pool.state in ("closing", "closed"):
            async with self._lock:
                entry = self._sets.get(key)
                if entry is None or entry.pool.state in ("closing", "closed"):
                    entry = await self._open(key, perms)
        entry.active += 1
        self._sets.move_to_end(key)
        return entry

    @staticmethod
    def _release(entry: _SetPool) -> None:
        entry.active -= 1
        entry.last_used = time.monotonic()

    async def pool_for(self, perms: Permissions) -> Pool:
        """The pool of ``perms``, started when first asked for."""
        entry = await self._claim(perms)
        self._release(entry)
        return entry.pool

    async def _open(self, key: tuple, perms: Permissions) -> _SetPool:
        if key != self._none_key:
            self._make_room()
            if not self._sweeping:  # the first set with permissions: idle ones are closed from now on
                self._sweeping = True
                self._spawn(self._sweep)
        spec = WorkerSpec(plugin_id=EXECUTE_ID, role="execute", module=None,
                          base_dir=self.runtime.data_dir(".execute"), read_paths=[], permissions=perms,
                          limits=self.limits,
                          egress_id=EXECUTE_EGRESS + hashlib.sha256(repr(key).encode()).hexdigest()[:16],
                          tools={"crypto": msgspec.to_builtins(self.config.crypto),
                                 "host": self.tools.host_tools, "modules": self.tools.module_tools},
                          reused=self.config.pooled,
                          retire_growth=self.config.retire_growth_mb << 20 if self.config.pooled else 0)
        warm = key == self._none_key  # apart and warm: its spares stay however long it idles
        pool = self._new_pool(spec, execute_pool_config(self.config, warm=warm), keep_spares=warm)
        await self._start(pool)
        entry = self._sets[key] = _SetPool(pool)
        return entry

    def _make_room(self) -> None:
        """Below ``max_permission_sets`` pools of sets with permissions: close the least
        recently used idle one, or refuse (PluginUnavailable) when every one is busy."""
        cap = self.config.max_permission_sets
        while sum(1 for k in self._sets if k != self._none_key) >= cap:
            idle = next((k for k, e in self._sets.items() if k != self._none_key and e.active == 0), None)
            if idle is None:
                raise PluginUnavailable(f"every one of the {cap} permission sets' pools is running code "
                                        f"([execute] max_permission_sets = {cap}); retry when one finishes, "
                                        f"or raise the setting", plugin=EXECUTE_ID)
            self._close(idle, f"the least recently used ([execute] max_permission_sets = {cap})")

    def _close(self, key: tuple, why: str) -> None:
        entry = self._sets.pop(key)
        log.info("execute: closing a permission set's pool: %s", why)
        self._spawn(entry.pool.stop)  # drains: a call that just took a worker there finishes

    async def _sweep(self) -> None:
        """Close the pools of sets with permissions idle for ``[execute] idle_timeout``."""
        idle_timeout = self.config.idle_timeout
        interval = max(min(idle_timeout / 4, REAP_INTERVAL_MAX), REAP_INTERVAL_MIN)
        while True:
            await anyio.sleep(interval)
            now = time.monotonic()
            for key, entry in list(self._sets.items()):
                if key != self._none_key and entry.active == 0 and now - entry.last_used >= idle_timeout:
                    self._close(key, f"idle for {idle_timeout:g}s ([execute] idle_timeout)")

    def permissions_of(self, egress_id: str) -> Permissions | None:
        """The permission set whose pool the egress proxy knows as ``egress_id``."""
        return next((e.pool.spec.permissions for e in self._sets.values() if e.pool.spec.egress_id == egress_id),
                    None)

    def pools(self) -> list[Pool]:
        return [e.pool for e in self._sets.values()]

    # ------------------------------------------------------------------ running

    async def run(self, code: str, input: Any, *, entry: str, timeout: float | None, permissions: Any,
                  tools: list[Any] | None, running: bool, language: str = "javascript",
                  by: str = "python") -> ExecuteResult:
        """Admit the execution, run it on its permission set's pool, and audit it: one line
        whatever the outcome, saying who asked (``by``), for which set and tools, what came
        of it and how long it took; of the code only its sha256 and size, of the input nothing."""
        req = ExecuteRequest(code=code, input=input, entry=entry, timeout=timeout, permissions=permissions,
                             language=language, by=by)
        line = self._line(req)
        t0 = time.perf_counter()
        try:
            req.tools, req.tool_settings = self.tools.read(tools, self.config.crypto)
            req.default_tools = list(DEFAULT_TOOLS) if tools is None else []
            line = self._line(req)
            if self.hooks:  # validate, before_execute: admission judges what they let through
                req = await self.hooks.before(req)
                line = self._line(req)
            perms = self.admit(req.permissions, req.tools, req.code, req.language, line)
            budget = self.budget(req.timeout)
            if not running:
                raise HostClosed("the host is not running")
            claimed = await self._claim(perms)
        except HostError as exc:
            self._audit(line, t0, action="refused", error=type(exc).__name__, reason=exc.message)
            raise
        try:
            out, outcome = await run_execute(claimed.pool, req.code, req.input, entry=req.entry, budget=budget,
                                             tools=req.tools + [t for t in req.default_tools if t not in req.tools],
                                             settings=req.tool_settings, language=req.language,
                                             reuse_probe=self.config.reuse_probe)
        except HostError as exc:
            # The code was admitted but never ran: TypeScript that does not parse (its message
            # quotes the code, so only the place goes in the log), an input that cannot be sent.
            reason = exc.message.split(": ")[0] if isinstance(exc, InvalidCode) else exc.message
            self._audit(line, t0, action="allowed", outcome="invalid", error=type(exc).__name__, reason=reason)
            raise
        except anyio.get_cancelled_exc_class():  # its caller gave up (an HTTP client that hung up)
            self._audit(line, t0, action="allowed", outcome="cancelled")
            raise
        finally:
            self._release(claimed)
        name = next((e.name for e in reversed(out.logs) if e.level == "exception"), None)
        error = (name if name in _ERROR_NAMES else "other") if outcome == "exception" else None
        try:
            out = await self.hooks.after(req, out)
        except HostError as exc:
            self._audit(line, t0, action="allowed", outcome=outcome, error=type(exc).__name__, reason=exc.message)
            raise
        self._audit(line, t0, action="allowed", outcome=outcome, error=error)
        return out

    @staticmethod
    def _line(req: ExecuteRequest) -> dict[str, Any]:
        """The audit line's fields for ``req`` (whose tools get "db" when they name "db:write")."""
        if "db:write" in req.tools and "db" not in req.tools:
            req.tools.append("db")  # writing implies the tool itself
        return {
            "by": req.by, "language": req.language, "entry": req.entry[:100], "tools": req.tools,
            "code_sha256": hashlib.sha256(req.code.encode("utf-8", "surrogatepass")).hexdigest(),
            "code_chars": len(req.code),
        }

    def _audit(self, line: dict[str, Any], t0: float, **fields: Any) -> None:
        line.update((k, v) for k, v in fields.items() if v is not None)
        line["duration_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        self.runtime.audit.record("execute", **line)


__all__ = ["ExecutePools"]
