"""Every error the host raises is a HostError; subclasses name what happened."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


class HostError(Exception):
    """Base of every Plugin Host error. ``plugin`` and ``function`` say where it happened."""

    def __init__(self, message: str, *, plugin: str | None = None, function: str | None = None):
        super().__init__(message)
        self.message = message
        self.plugin = plugin
        self.function = function

    def __str__(self) -> str:
        where = self.plugin or ""
        if self.function:
            where = f"{where}.{self.function}" if where else self.function
        return f"{where}: {self.message}" if where else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self)}


# A stack frame's place is a token (between spaces, parentheses and quotes) ending in
# :line:column: an absolute path, maybe as a file:// URL, maybe after "name@" (not one inside
# "ext:deno_fetch/..."). Read a token at a time: one pattern that may start after any "@" or "/",
# retried from each, took 7.7 s on 64 KiB of plugin text.
_TOKEN = re.compile(r"[^\s()'\"]+")
_LINE_COLUMN = re.compile(r":(\d{1,9}):(\d{1,9})(?!\d)")


def places(text: str | None) -> Iterator[tuple[str, int, int]]:
    """Each ``(path, line, column)`` a stack or message names, in order, in time proportional to
    its length (plugin text: a stack can be set to anything)."""
    for token in _TOKEN.finditer(text or ""):
        word = token.group()
        end = None
        for end in _LINE_COLUMN.finditer(word):  # noqa: B007 (the last one)
            continue
        if end is not None and (path := _path_in(word, end.start())) is not None:
            yield path, int(end[1]), int(end[2])


def where_in(stack: str | None) -> str | None:
    """The first frame of ``stack`` in the plugin's own code (not the worker runtime's, not
    Deno's internals): ``/path/to/mod.ts:46:9``, or None."""
    return next((f"{path}:{line}:{column}" for path, line, column in places(stack)
                 if "/worker_runtime/" not in path), None)


def _path_in(token: str, end: int) -> str | None:
    """The absolute path ending at ``end`` that starts ``token`` or follows one of its "@"."""
    start = 0
    while start >= 0 and start < end:
        if token.startswith("file:///", start):
            return token[start + 7:end]
        if token.startswith("/", start):
            return token[start:end]
        start = token.find("@", start, end)
        start = start + 1 if start >= 0 else -1
    return None


class PluginError(HostError):
    """The plugin threw. ``error_type`` is its PluginError type (NETWORK_ERROR, ...) or None."""

    def __init__(
        self,
        message: str,
        *,
        name: str = "Error",
        error_type: str | None = None,
        stack: str | None = None,
        details: Any = None,
        plugin: str | None = None,
        function: str | None = None,
    ):
        super().__init__(message, plugin=plugin, function=function)
        self.name = name
        self.error_type = error_type
        self.stack = stack
        self.details = details

    def __str__(self) -> str:
        base = super().__str__()
        tag = self.error_type or self.name
        return f"{base} [{tag}]"

    @property
    def where(self) -> str | None:
        """Where the plugin threw: the first frame of its stack in a file that is not the
        worker runtime's (``/path/to/mod.ts:46:9``), or None."""
        return where_in(self.stack)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(name=self.name, error_type=self.error_type)
        if (where := self.where) is not None:
            d["where"] = where
        if self.details is not None:  # PluginError's third argument (retryAfter, say), as redacted
            d["details"] = self.details
        return d


class PermissionDenied(PluginError):
    """The sandbox refused an operation the plugin attempted (Deno's NotCapable)."""


class ResourceLimitExceeded(PluginError):
    """The plugin hit a sandbox cap it can survive: too many Workers, an egress response over
    ``security.max_response_bytes``. (Caps that kill the worker raise WorkerCrashed.)"""


class GrantRefused(HostError):
    """A request asked for a permission the operator does not allow it (``[execute] allow``,
    strict mode): nothing ran. The message names the grant and the setting that would allow it."""


class FunctionNotFound(HostError):
    """The plugin has no exported function of that name."""


class PluginNotFound(HostError):
    """No plugin with that id is installed."""


class StationNotFound(HostError):
    """No relay station with that name (``host.toml``'s ``[stations]`` or one added since)."""


class PluginUnavailable(HostError):
    """The plugin cannot take calls now: it failed to load, is in a crash loop, or is closing."""


class CallTimeout(HostError):
    """The call passed its deadline; the worker running it was killed. With ``caller`` the
    deadline was one the caller chose, shorter than the plugin's own: the call was cancelled
    instead (its worker killed only if it still runs at the plugin's deadline, or spins), and the plugin's
    circuit breaker does not count it."""

    def __init__(self, message: str, *, timeout: float, caller: bool = False, **kw: Any):
        super().__init__(message, **kw)
        self.timeout = timeout
        self.caller = caller
        self.settled: Any = None  # with caller: an anyio.Event set once the call ends on its worker


def callers_own(exc: BaseException) -> bool:
    """A CallTimeout at a deadline its caller chose shorter than the plugin's own: it says how long
    that caller would wait, nothing of the plugin (no breaker, no error rate, no shared answer)."""
    return isinstance(exc, CallTimeout) and exc.caller


class CallCancelled(HostError):
    """The call was cancelled before it settled."""


class WorkerCrashed(HostError):
    """The worker process died while the call was in flight."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        reason: str = "crash",
        stderr_tail: str = "",
        delivered: bool = True,
        summary: str = "",
        **kw: Any,
    ):
        super().__init__(message, **kw)
        self.summary = summary  # what happened, without the pid, the worker's name or its output
        self.exit_code = exit_code
        self.signal = signal
        self.reason = reason
        self.stderr_tail = stderr_tail
        self.delivered = delivered  # False: the call never reached the worker (safe to resend)

    def undelivered(self) -> WorkerCrashed:
        """This error, for a call that never reached the worker."""
        return WorkerCrashed(self.message, exit_code=self.exit_code, signal=self.signal,
                             reason=self.reason, stderr_tail=self.stderr_tail, delivered=False,
                             summary=self.summary, plugin=self.plugin, function=self.function)


class SpawnFailed(HostError):
    """A worker could not be started: the operating system refused a step (its socket, the
    process) or the host failed at it. The pool counts it as a crash and retries with backoff,
    unless it is ``permanent`` (the same spawn would fail again: a command line too long for
    the system): then the pool is in `error` at once and its waiting callers get this error."""

    def __init__(self, message: str, *, permanent: bool = False, **kw: Any):
        super().__init__(message, **kw)
        self.permanent = permanent


class ProtocolError(HostError):
    """A frame that is truncated, garbled, unknown or out of order."""


class HandshakeError(ProtocolError):
    """The worker's hello had a wrong cookie, protocol version or token, or came too late."""


class PayloadTooLarge(HostError):
    """A frame, argument or result over the configured maximum size."""


class ApprovalChanged(HostError):
    """An approval named grants other than the ones the plugin's waiting version asks for now
    (its file changed again since the operator looked): nothing was approved; look again."""


MAX_TIMEOUT = 7 * 24 * 3600.0  # seconds: the longest deadline a call or an execution may ask for


def check_timeout(timeout: object, *, what: str = "timeout") -> float:
    """``timeout`` in seconds as a float: InvalidConfig unless a number above 0 and at most
    MAX_TIMEOUT (an infinite or huge one would overflow the clocks it is added to)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidConfig(f"{what} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
                            f"got {timeout!r}")
    return float(timeout)


class InvalidArguments(HostError):
    """A call's arguments cannot be sent to a worker (an integer beyond 64 bits, an object of a
    type MessagePack has no form for, nesting too deep). Nothing was sent."""


class InvalidCode(InvalidArguments):
    """Code given to ``execute`` that cannot run as written: TypeScript that does not parse.
    The message names the line and column. Nothing of it ran."""


class InvalidConfig(HostError):
    """A host or plugin configuration value is invalid."""


class StateError(HostError):
    """The state directory, or a file in it, cannot be used: missing, read-only, full, or not
    what it should be. The message names the file and what to do; nothing else is lost."""


class StateUnavailable(StateError):
    """The ``[state] database`` could not be reached or did not answer (down, restarting,
    refusing connections, hung): the same operation may succeed once it is back, unlike a
    StateError about what the state is."""


class StateFileDamaged(InvalidConfig, StateError):
    """A state file the host keeps (``config.json``, ``plugin_switches.json``, ``stations.json``,
    ``approvals.json``) holds what the host never writes: not JSON, or not its shape. At start it
    is the operator's to mend, as a bad config file (an InvalidConfig: exit 2); met while serving
    (a change re-reads it) it is the server's fault, not the caller's: HTTP 503, never a 400.
    The message names the file; nothing is written over it."""


class SecretsError(HostError):
    """A secret config value could not be decrypted: the key (or an export's passphrase) is
    not the one it was encrypted with, or the host's key cannot be used (its file missing, empty,
    unreadable or not private; its variable not a key): the server's problem, not the caller's
    (HTTP 503). The message names the file or variable, never the value or the key."""


class _RetryAfter(HostError):
    """A refusal that says when to try again: ``retry_after`` seconds (None: unknown)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(_RetryAfter):
    """The call was refused by a rate limit; retry after ``retry_after`` seconds. ``strategy``:
    the plugin's (``degrade``: a balance query answers its last balance instead, marked stale)."""

    strategy = "reject"


class CircuitOpen(_RetryAfter):
    """The plugin's circuit breaker is open; calls are refused until it half-opens, in about
    ``retry_after`` seconds."""


class PolicyStorageError(HostError):
    """The shared storage of rate-limit counters (a ``redis://`` URI) could not be reached.
    Calls then fail rather than run past a quota the hosts share."""


class HostClosed(HostError):
    """The host is not running (not started yet, or closing)."""


class WrongThread(HostError):
    """A running host's coroutine method was called on another thread's event loop (run_once.py)."""


class HostCallError(HostError):
    """A plugin's request to a host service (cache, storage, channel, log) was refused."""


class UnknownHostCall(HostCallError):
    """The worker asked for a host service the host does not offer."""


class InvalidHostCall(HostCallError):
    """A host call with missing arguments or arguments of the wrong type."""


class StorageError(HostCallError):
    """The plugin's persistent storage could not be read or written."""


class StorageFull(StorageError):
    """A ``storage.set`` refused because it would take the plugin's storage past its cap
    (``limits.storage_max_bytes``), or because the state directory's file system is nearly
    full: nothing was written; deleting keys makes room."""


class DbError(HostCallError):
    """The execute ``db`` tool's database refused a statement (a constraint, a type), or a
    transaction was rolled back. The message never carries the database URL's password."""


class DbUnavailable(DbError):
    """The execute ``db`` tool's database could not be reached, or did not answer within
    ``[execute] db_timeout`` (or the execution's own deadline)."""


class DbRefused(DbError):
    """The execute ``db`` tool refuses its database: ``[execute] database`` is the host's own
    state (``[state] database`` reached another way, or a file of ``state_dir``), as the servers
    or the file system say when the tool first connects. Kept for the host's life; the operator
    gives /execute a database of its own."""


class ToolFailed(HostCallError):
    """An operator's ``execute`` tool (``[execute.tools.NAME]``) raised, did not answer within
    the execution's deadline, or returned what MessagePack cannot carry. The code sees it as an
    error named ToolFailed."""


class ExecuteRefused(HostError):
    """An ``[execute.hooks] validate`` hook refused the request (HTTP 400); the message names
    the hook and says why."""


class HookFailed(HostError):
    """An ``[execute.hooks]`` hook raised, returned the wrong type, or did not finish within
    ``[execute.hooks] timeout``; the message names the hook."""


def js_type(v: object) -> str:
    """What JavaScript calls the type of a value that came from it (not Python's int, NoneType),
    for messages to plugin authors."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, bytes):
        return "Uint8Array"
    return "array" if isinstance(v, list) else "object" if isinstance(v, dict) else type(v).__name__
