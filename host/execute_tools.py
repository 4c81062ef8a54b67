"""The tools of ``execute``: one registry holding the built-in ones (crypto, channel, db,
db:write) and those the operator adds in host.toml, so that every tool a request names goes
through the same lookup and the same admission checks.

An operator's tool (``[execute.tools.NAME] kind = "host", function = "package.module:func"``)
is a Python callable of the host, sync (run in a thread) or async, that code calls as the
global ``NAME(...args)``; the worker forwards the call as the host call ``tool.call``. The
host checks that the execution asked for the tool, runs the callable within the execution's
deadline (and the tool's own ``timeout``), and records one audit line per call. Arguments and
results cross as MessagePack; a callable that raises, times out or returns what MessagePack
cannot carry becomes a ToolFailed the code can catch (a HostError it raises passes as is).

A module tool (``kind = "module"``, ``module = "path/to/tool.js"``) is JavaScript/TypeScript the
host reads (it may live outside the plugins directory) and sends to every execute worker; an
execution asking for it runs the module in its own context, before its code, and gets what
``setup(ctx)`` returns (``ctx``: ``{name, config}``) as the global ``NAME``. Its
``permissions`` join the execution's set, so they must lie within ``[execute.allow]``
(checked at start) and are the code's too: the worker runtime only helps, Deno enforces."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from . import protocol as p
from .errors import GrantRefused, HostError, InvalidConfig, InvalidHostCall, ToolFailed
from .execute_config import CRYPTO_METHODS, CryptoToolConfig, ToolConfig
from .execute_config import TOOLS as BUILTIN_TOOLS
from .plugins.schema_rules import shown
from .security.grant_entries import problems
from .security.permissions import Permissions, beyond

ALIASES = {"database": "db"}  # the Isolate engine's other names of built-in tools
# The settings a request may give a tool as [name, settings] (the Isolate engine's ToolSpec):
# crypto's narrow what the operator's [execute.crypto] allows, never widen it; db's "hosts"
# (more database hosts the engine's worker may reach) changes nothing here, where the worker
# reaches no database: the host opens the one [execute] database names.
TOOL_SETTINGS = {"crypto": ("subtle", "limit", "methods"), "db": ("hosts",)}
DEFAULT_TOOLS = ("crypto",)  # a request that leaves "tools" out: the engine's workers always have Web Crypto

# Names an operator's tool may not take: it becomes a global of the execution's context.
_RESERVED = frozenset({
    *BUILTIN_TOOLS, "console", "globalThis", "self", "window", "fetch", "Deno", "Object", "Array", "Function",
    "Promise", "JSON", "Math", "Date", "Error", "Symbol", "Reflect", "Proxy", "setTimeout", "setInterval",
    "clearTimeout", "clearInterval", "queueMicrotask", "structuredClone", "undefined", "eval", "tools",
})
MAX_MODULE_BYTES = 256 * 1024  # a module tool's source, sent in every execute worker's welcome
_NAME = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}\Z")  # a JavaScript identifier


def _strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _narrowed(crypto: CryptoToolConfig, given: dict[str, Any], where: str) -> dict[str, Any]:
    """The crypto tool's settings for one execution: the operator's, narrowed by the request's
    ``subtle`` (false: none), ``methods`` (the engine's allow-list: only those named, "subtle"
    among them) and ``limit`` (bytes getRandomValues fills at most)."""
    subtle, methods, limit = given.get("subtle", True), given.get("methods"), given.get("limit", crypto.max_bytes)
    if not isinstance(subtle, bool):
        raise InvalidConfig(f"{where}: crypto's subtle is true or false (got {shown(subtle)})")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidConfig(f"{where}: crypto's limit is a number of bytes above 0 (got {shown(limit)})")
    known = (*CRYPTO_METHODS, "subtle")
    if methods is not None and (not _strings(methods) or any(m not in known for m in methods)):
        raise InvalidConfig(f"{where}: crypto's methods is a list of {', '.join(known)} (got {shown(methods)})")
    return {
        "subtle": crypto.subtle and subtle and (methods is None or "subtle" in methods),
        "methods": [m for m in crypto.methods if methods is None or m in methods],
        "max_bytes": min(crypto.max_bytes, limit),
    }


def resolve_callable(spec: str, setting: str) -> Callable[..., Any]:
    """The callable ``spec`` (``package.module:attr.attr``) names, or InvalidConfig naming
    ``setting``."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise InvalidConfig(f"{setting} = {spec!r}: write it as \"package.module:function\"")
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as exc:  # an operator's module failing to import: any error it raises
        raise InvalidConfig(f"{setting} = {spec!r}: cannot import {mod_name!r} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise InvalidConfig(f"{setting} = {spec!r}: {mod_name!r} has no {attr!r}")
    if not callable(obj):
        raise InvalidConfig(f"{setting} = {spec!r}: {attr!r} is not callable")
    return obj


async def call_with_deadline(fn: Callable[..., Any], args: tuple[Any, ...], budget: float) -> tuple[bool, Any]:
    """``fn(*args)`` within ``budget`` seconds: awaited if a coroutine function, else in a
    worker thread (abandoned, not waited for, past the budget). ``(False, None)``: timed out."""
    with anyio.move_on_after(max(budget, 0)) as scope:
        if inspect.iscoroutinefunction(fn):
            value = await fn(*args)
        else:
            value = await anyio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)
            if inspect.isawaitable(value):
                value = await value
        return True, value
    assert scope.cancelled_caught
    return False, None


class _HostTool:
    __slots__ = ("fn", "name", "spec", "timeout")

    def __init__(self, name: str, fn: Callable[..., Any], spec: str, timeout: float | None) -> None:
        self.name, self.fn, self.spec, self.timeout = name, fn, spec, timeout


class ToolRegistry:
    """Every tool ``execute`` knows, built-in and the operator's; see the module docstring.
    ``audit``: records one line per operator tool call (the host's audit log)."""

    def __init__(self, tools: dict[str, ToolConfig], *, database: str | None, db_writes: bool,
                 allow: Permissions | None = None, audit: Callable[..., None] | None = None) -> None:
        self._database, self._db_writes, self._audit = database, db_writes, audit
        self._host: dict[str, _HostTool] = {}
        self._modules: dict[str, dict[str, Any]] = {}  # name -> what the worker gets (source, config)
        self._perms: dict[str, Permissions] = {}
        for name, tc in tools.items():
            where = f"[execute.tools.{name}]"
            if not _NAME.match(name) or name in _RESERVED:
                raise InvalidConfig(f"{where}: the name must be a JavaScript identifier and not one of the "
                                    f"built-in tools or globals ({', '.join(sorted(_RESERVED))})")
            if tc.kind == "module":
                self._add_module(name, tc, where, allow or Permissions())
                continue
            if tc.module or tc.permissions is not None or tc.config:
                raise InvalidConfig(f'{where}: module, permissions and config belong to kind = "module"')
            if not tc.function:
                raise InvalidConfig(f'{where} function: required with kind = "host" ("package.module:function")')
            self._host[name] = _HostTool(name, resolve_callable(tc.function, f"{where} function"), tc.function,
                                         tc.timeout)

    def _add_module(self, name: str, tc: ToolConfig, where: str, allow: Permissions) -> None:
        if not tc.module.endswith((".js", ".ts", ".mjs")):
            raise InvalidConfig(f"{where} module: a .js or .ts file is required (got {tc.module!r})")
        if tc.function:
            raise InvalidConfig(f'{where} function: belongs to kind = "host"; a module tool has a setup(ctx)')
        try:
            with open(tc.module, "rb") as f:
                raw = f.read(MAX_MODULE_BYTES + 1)
        except OSError as exc:
            raise InvalidConfig(f"{where} module = {tc.module!r}: cannot read it ({exc.strerror})") from None
        if len(raw) > MAX_MODULE_BYTES:
            raise InvalidConfig(f"{where} module = {tc.module!r}: larger than {MAX_MODULE_BYTES} bytes")
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidConfig(f"{where} module = {tc.module!r}: not UTF-8 text") from None
        perms = Permissions.parse(tc.permissions, where=f"{where} permissions")
        for kind, entry, why in problems(perms):
            raise InvalidConfig(f"{where} permissions.{kind}: {entry!r} {why}")
        if extra := beyond(perms, allow):
            raise InvalidConfig(f"{where} permissions ask for {', '.join(extra)}, beyond [execute.allow]; "
                                "widen [execute.allow] or narrow the tool's permissions")
        if not perms.empty or perms.allow_private_network:
            self._perms[name] = perms
        self._modules[name] = {"source": source, "config": tc.config,
                               "language": "typescript" if tc.module.endswith(".ts") else "javascript"}

    @property
    def names(self) -> tuple[str, ...]:
        return BUILTIN_TOOLS + tuple(self._host) + tuple(self._modules)

    @property
    def module_tools(self) -> dict[str, dict[str, Any]]:
        """The operator's module tools as execute workers get them (in the welcome)."""
        return self._modules

    def permissions(self, tools: list[str]) -> list[Permissions]:
        """What the module tools among ``tools`` need (joined to the execution's set)."""
        return [self._perms[t] for t in tools if t in self._perms]

    @property
    def host_tools(self) -> list[str]:
        """The operator's host-function tools (the worker makes a global function of each)."""
        return list(self._host)

    def canonical(self, tools: list[str]) -> list[str]:
        """``tools`` with the Isolate engine's other names for a built-in tool replaced by ours:
        its tool definitions, permission flow and client examples call the db tool
        ``"database"`` (its curl examples ``"db"``). An operator's tool of that name wins."""
        return [ALIASES[t] if t in ALIASES and t not in self.names else t for t in tools]

    def read(self, specs: Any, crypto: CryptoToolConfig) -> tuple[list[str], dict[str, Any]]:
        """A request's ``tools`` as tool names and the settings the worker applies: each entry
        a name or ``[name, settings]`` (the Isolate engine's ToolSpec); left out (None): none
        (the default ones, DEFAULT_TOOLS, are the request's ``default_tools``). Settings of crypto (``subtle``, ``limit``,
        ``methods``) narrow ``crypto`` (the operator's); a setting a tool does not take, or a
        value of the wrong kind, is InvalidConfig naming ``tools[i]``."""
        if specs is None:
            return [], {}
        if isinstance(specs, (str, bytes)) or not isinstance(specs, (list, tuple)):
            raise InvalidConfig(f"tools: a list of tool names or [name, settings] pairs (got {type(specs).__name__})")
        names: list[str] = []
        settings: dict[str, Any] = {}
        for i, spec in enumerate(specs):
            where = f"tools[{i}]"
            given: Any = None
            if isinstance(spec, (list, tuple)) and len(spec) == 2 and isinstance(spec[0], str):
                spec, given = spec
            if not isinstance(spec, str):
                raise InvalidConfig(f"{where}: a tool name, or [name, settings] (got {shown(spec)})")
            name = self.canonical([spec])[0]
            names.append(name)
            if given is None:
                continue
            if not isinstance(given, dict):
                raise InvalidConfig(f"{where}: the settings of {spec[:64]!r} are an object (got {shown(given)})")
            takes = TOOL_SETTINGS.get(name, ()) if name in BUILTIN_TOOLS else ()
            if unknown := [k for k in given if k not in takes]:
                raise InvalidConfig(f"{where}: {spec[:64]!r} takes no setting {shown(unknown[0])}"
                                    + (f"; its settings are {', '.join(takes)}" if takes else
                                       " (its settings are the operator's, in host.toml)"))
            if name == "crypto":
                settings["crypto"] = _narrowed(crypto, given, where)
            elif name == "db" and "hosts" in given and not _strings(given["hosts"]):
                raise InvalidConfig(f"{where}: db's hosts is a list of host names")
        return names, settings

    def admit(self, tools: list[str]) -> None:
        """Refuse a request naming a tool nobody registered (InvalidConfig), or one whose
        setting is off: db without ``[execute] database``, db:write without ``db_writes``."""
        if unknown := [t for t in tools if t not in self.names]:
            raise InvalidConfig(f"unknown tool {unknown[0]!r}; the tools are {', '.join(self.names)} "
                                "(the operator adds tools with [execute.tools.NAME] in host.toml)")
        if {"db", "db:write"} & set(tools) and self._database is None:
            raise InvalidConfig("the db tool needs a database: set [execute] database "
                                "(a sqlite file or a postgresql:// URL)")
        if "db:write" in tools and not self._db_writes:
            raise GrantRefused('tools ["db:write"]: database writes are off; the operator turns them on '
                               "with [execute] db_writes = true in host.toml", plugin="execute")

    async def call(self, worker: Any, msg: p.HostCall) -> Any:
        """Serve the host call ``tool.call`` (args: the tool's name and its arguments) for the
        execution ``msg.call`` of ``worker``."""
        if len(msg.args) != 2 or not isinstance(msg.args[0], str) or not isinstance(msg.args[1], list):
            raise InvalidHostCall("tool.call takes (name, [arguments])")
        name, args = msg.args
        tool = self._host.get(name)
        if tool is None or worker.spec.role != "execute" or name not in worker.tools_of(msg.call):
            raise InvalidHostCall(f"tool {name[:64]!r} serves execute code that asked for it "
                                  f"(tools: [{name[:64]!r}]) and that the operator registered ([execute.tools])")
        deadline = worker.deadline_of(msg.call)
        budget = (deadline - time.monotonic()) if deadline is not None else tool.timeout or 0
        if tool.timeout is not None:
            budget = min(budget, tool.timeout)
        t0 = time.perf_counter()
        outcome, error = "ok", None
        try:
            try:
                done, value = await call_with_deadline(tool.fn, tuple(args), budget)
            except HostError:
                raise
            except Exception as exc:  # the operator's callable failing: whatever it raises
                raise ToolFailed(f"tool {name}: {type(exc).__name__}: {str(exc)[:300]}", plugin="execute",
                                 function=name) from None
            if not done:
                raise ToolFailed(f"tool {name}: no answer within {max(budget, 0):.3g}s (the execution's deadline"
                                 f"{f', [execute.tools.{name}] timeout' if tool.timeout else ''})",
                                 plugin="execute", function=name)
            try:
                return msgspec.Raw(msgspec.msgpack.encode(value))
            except (TypeError, OverflowError, ValueError) as exc:
                raise ToolFailed(f"tool {name}: returned a value MessagePack cannot carry ({exc})",
                                 plugin="execute", function=name) from None
        except HostError as exc:
            outcome, error = "error", type(exc).__name__
            raise
        except anyio.get_cancelled_exc_class():  # its execution ended first (or the host stops)
            outcome = "cancelled"
            raise
        finally:
            if self._audit is not None:
                fields = {"tool": name, "function": tool.spec, "outcome": outcome,
                          "duration_ms": round((time.perf_counter() - t0) * 1000, 3)}
                self._audit("execute.tool", **fields, **({"error": error} if error else {}))


__all__ = ["ALIASES", "ToolRegistry", "call_with_deadline", "resolve_callable"]
