"""One Deno worker process: spawn, handshake, calls with deadlines, heartbeats, death."""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import logging
import math
import re
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from . import protocol as p
from .arity import check_arguments
from .config import WorkerLimits
from .errors import (
    CallTimeout,
    FunctionNotFound,
    HandshakeError,
    HostError,
    InvalidArguments,
    PayloadTooLarge,
    PermissionDenied,
    PluginError,
    PluginUnavailable,
    ProtocolError,
    ResourceLimitExceeded,
    SpawnFailed,
    WorkerCrashed,
    where_in,
)
from .load_advice import commonjs_advice, extension_advice, import_advice, located
from .logs import WORKER_LEVELS, worker_extra
from .process import ChildProcess, vm_data
from .runtime import Runtime, process_failure, socket_failure, tree_bytes, web_storage_dirs
from .security.permissions import Permissions
from .security.private_files import os_failure
from .security.refusals import record_error, record_kill, record_refusal
from .transport import PAUSE_MAX, ConnectionLost, DecodeShare, FrameSocket, UnixListener, WriteBufferFull
from .wake import Wake

T = TypeVar("T")
DRAIN_GRACE = 0.5  # seconds the reader may take to drain a dead worker's last frames
EXIT_GRACE = 0.5   # seconds a worker that closed its socket has to exit before it is killed
# Seconds a worker whose socket closed during the handshake has to be seen ending: a process that
# exits closes its socket as it dies, so this is the reaping's time, not the plugin's.
LOST_EXIT_GRACE = 0.25
MIN_TIMEOUT = 0.001  # seconds a request is given at least, when its deadline is all but spent
# The longest delay JavaScript timers take (2**31-1 ms, about 24.8 days): a longer one fires at
# once (setTimeout, AbortSignal.timeout), so ctx.timeout is never sent longer. The host's own
# deadline for the call is the real one.
MAX_TIMER_MS = 2**31 - 1
log = logging.getLogger("host.worker")
_HOOK_EXPORTS = frozenset(p.HOOKS.values())  # onStart, onStop, onConfigChange: never a caller's call


def timer_ms(timeout: float) -> int:
    """A deadline in seconds as the ``timeout_ms`` a plugin gets (``ctx.timeout``): at most what
    JavaScript timers take."""
    return min(int(timeout * 1000), MAX_TIMER_MS)


LogSink = Callable[["Worker", p.Log], None]
HostCallHandler = Callable[["Worker", p.HostCall], Awaitable[Any]]

# Kill reasons of the caps the host enforces on what a worker sends or leaves unread.
LIMIT_HOST_CALLS = "resource limit: host calls"
LIMIT_WRITE_BUFFER = "resource limit: write buffer"
LIMIT_WEB_STORAGE = "resource limit: web storage"
# Seconds between two looks at a plugin's Cache API files (web_storage_dirs): writes land at
# hundreds of MB a second, and what one interval lets past the cap is the overshoot.
WEB_STORAGE_CHECK = 0.25
# Caps on the parts of an error or log line a worker reports (the runtime applies the same).
MAX_ERROR_NAME = 256
MAX_ERROR_TEXT = 64 * 1024    # message, stack
MAX_ERROR_DETAILS = 64 * 1024  # details, as JSON
MAX_PARAMS, MAX_PARAM_TEXT = 256, 1024  # a signature's parameter names kept past the handshake


def _kept(params: list[str]) -> bool:
    """Whether a signature's parameter names are kept for the worker's life (else its length
    alone judges calls): a real function's are, a forged list of a million names is not."""
    return len(params) <= MAX_PARAMS and all(len(name) <= MAX_PARAM_TEXT for name in params)


@dataclass
class WorkerSpec:
    """What a worker runs and with which grants; shared by every worker of a pool."""

    plugin_id: str
    module: Path | None          # None: an execute-only worker
    base_dir: Path               # its data directory: relative file grants resolve here; its cwd
    read_paths: list[str]        # the plugin's own file or directory
    permissions: Permissions = field(default_factory=Permissions)
    limits: WorkerLimits = field(default_factory=WorkerLimits)
    config: Any = None
    inspect: str | None = None
    # Kinds the operator narrows ([plugins.ID.permissions], the API's override) -> that setting:
    # a refusal of that kind names it.
    overridden: dict[str, str] = field(default_factory=dict)
    # Kinds whose grant is not the module's metadata.permissions to edit -> what a refusal should
    # say to change instead ("{entry}": what was refused); a usage script's baseUrl, say.
    advice: dict[str, str] = field(default_factory=dict)
    # ... and what a refusal should say of a newer version waiting for approval (approval_gate.py)
    pending_advice: dict[str, str] = field(default_factory=dict)
    redact: Callable[[str], str] | None = None  # scrubs secrets from the worker's raw output
    cache_salt: str = ""         # hash of the plugin's version and config: part of result-cache keys
    egress_id: str | None = None  # who the egress proxy sees (default: plugin_id)
    tools: dict[str, Any] | None = None  # execute workers: settings of the tools code may ask for
    journal: Callable[[Worker, str, str], None] | None = None  # (worker, level, text) of each lifecycle step
    # "plugin", or "execute" for the workers of ad-hoc code: what the host's services allow a
    # worker is decided by this role (and for execute, by the tools each execution asked for),
    # never by comparing a plugin id with a name.
    role: str = "plugin"
    reused: bool = True  # one worker serves many calls (False: a fresh worker for each)
    # Execute workers: bytes their data segment (VmData, what RLIMIT_DATA bounds: the V8 heap
    # and ArrayBuffers) may grow over what it was when ready before one is retired after an
    # execution; 0: never. Code can keep memory alive after it settled (a listener on a lent
    # timer), which the next caller's execution would no longer have.
    retire_growth: int = 0
    start_hook: bool = False  # the module exports onStart: a new pool proves it in one worker, min_workers 0 too
    reading: bool = False  # the no-permission worker that reads a plugin's metadata (discovery.inspect)
    # The metadata its calls are judged by (arity.py: metadata.functions), from the manifest the
    # host validated: a serving worker's ready frame says its own, which is never kept
    metadata: Any = None
    # None while the files a new worker loads are still those this version was read from, else
    # why no new worker may start (plugins/reload.still_read)
    files_changed: Callable[[], Awaitable[str | None]] | None = None


class Lease:
    """A slot on a worker that the pool reserved for one caller; consumed by the request."""

    __slots__ = ("used", "worker")

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.used = False
        worker.reserved += 1

    def consume(self) -> bool:
        """Turn the reservation into a request (or drop it); True the first time only."""
        if self.used:
            return False
        self.used = True
        self.worker.reserved -= 1
        return True


class LogBudget:
    """Log lines the host accepts from a worker, per call (and per second outside calls): the
    runtime's own budget (``max_log_entries`` entries, ``max_log_bytes`` characters, then one
    marker), enforced again here on what arrives, since plugin code may write frames itself."""

    __slots__ = ("chars", "entries", "since", "truncated")

    def __init__(self, since: float = 0.0) -> None:
        self.entries = self.chars = 0
        self.truncated = False
        self.since = since

    def admit(self, chars: int, limits: WorkerLimits) -> bool | None:
        """True: pass the line on; None: pass the host's truncation marker instead; False: drop."""
        if self.truncated:
            return False
        # +1 entry and a little text: the runtime's own marker
        if self.entries > limits.max_log_entries or self.chars + chars > limits.max_log_bytes + 1024:
            self.truncated = True
            return None
        self.entries += 1
        self.chars += chars
        return True


class _Pending:
    __slots__ = ("answer_by", "deadline", "error", "event", "fn", "gone", "hook", "info", "limit", "log_budget",
                 "logs", "timeout", "tools", "value")

    def __init__(self, fn: str, collect_logs: bool, tools: frozenset[str] = frozenset(), hook: bool = False,
                 loop: asyncio.AbstractEventLoop | bool | None = True) -> None:
        self.hook = hook  # a lifecycle hook: past its deadline the kill says so
        self.tools = tools  # the tools an execution asked for (its host calls may use them)
        self.log_budget: LogBudget | None = None  # made at the call's first log line
        self.timeout = 0.0  # seconds its caller waits (for messages)
        self.limit = 0.0    # seconds it may run before the worker is killed: timeout, or the plugin's longer own
        self.answer_by = math.inf  # time.monotonic() past which its caller stops waiting
        self.deadline = math.inf  # time.monotonic() past which the call is killed
        self.info: p.ErrorInfo | None = None  # set when the worker answered with an error
        self.event = Wake(loop)  # the connection's loop: not looked up per call
        self.value: Any = None
        self.error: BaseException | None = None  # set when the host failed it (timeout, exit)
        self.logs: list[p.Log] | None = [] if collect_logs else None
        self.fn = fn
        self.gone: anyio.Event | None = None  # a call its caller gave up on: set once it ends here


def _gone(pending: _Pending) -> None:
    """``pending`` left the worker's calls in flight: whoever waits for its end is told."""
    if pending.gone is not None:
        pending.gone.set()


_ERROR_CLASSES: dict[str, type[PluginError]] = {
    "NotCapable": PermissionDenied, "ResourceLimitExceeded": ResourceLimitExceeded,
}


_REFUSED = re.compile(r'Requires (net|read|write|env|run|sys|ffi) access to "([^"]*)"(?:, run again with the --allow-\w+ flag)?')


def refusal_advice(message: str, module: str | None, overridden: dict[str, str] | None = None,
                   plugin: str = "", advice: dict[str, str] | None = None) -> str:
    """Deno's "Requires net access to "x:443", run again with the --allow-net flag" as what the
    operator or author of this host must change: the plugin's declared permissions (``module``:
    its file), what ``advice`` says for that kind (a generated module's source), or for ad-hoc
    code (None) the request's permissions."""
    # anywhere in it: fetch's own "fetch failed: Requires net access to ..." too (helper-113: Deno's
    # "run again with the --allow-net flag" reached the author as it was)
    m = _REFUSED.search(message.replace("\n", " ")[:4096])
    if m is None:
        return message
    head, message = message[:m.start()], message[m.start():]
    m = _REFUSED.match(message)
    assert m is not None
    kind, target = m.groups()
    entry = target.removesuffix(":443") if kind == "net" else target  # a host name's grant covers 443
    if overridden and kind in overridden:  # the operator narrowed it: that is what to change, if anything
        return (f'Requires {kind} access to "{target}": refused by the operator\'s {overridden[kind]}, '
                'which narrows what the plugin declares' + message[m.end():])
    where = (f'add "{entry}" to metadata.permissions.{kind} in {module} (a new grant waits for the operator\'s '
             "approval)" if module else f'add "{entry}" to the request\'s permissions.{kind}, within what [execute.allow] allows')
    if advice and kind in advice:
        where = advice[kind].replace("{entry}", f'"{entry}"')
    if kind in ("read", "write") and module and not target.startswith("/"):  # helper-106: granting it led nowhere
        where += (f"; a relative path is in the plugin's data directory (its working directory), not beside {module}: "
                  f'a file of a plugin directory\'s own is new URL("./{target}", import.meta.url), which needs no grant')
    if kind == "net" and module and _private(entry):  # denied whatever is declared, unless the operator opts in
        where += f"; a private or loopback address also needs [plugins.{plugin}] allow_private_network = true in host.toml"
    return f'{head}Requires {kind} access to "{target}": the sandbox refused it; {where}' + message[m.end():]


def _private(entry: str) -> bool:
    """Whether a net entry (``host[:port]``) names a loopback, private or link-local address."""
    host = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry.strip("[]")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return address.is_private or address.is_loopback or address.is_link_local


def error_from_info(info: p.ErrorInfo, *, plugin: str, function: str, module: str | None = None,
                    overridden: dict[str, str] | None = None, advice: dict[str, str] | None = None,
                    root: str | None = None) -> HostError:
    """Translate a worker's normalised error into the host's exception type; a sandbox refusal
    says which permission to add, and where (``module``: the plugin's file; None: ad-hoc code),
    a refused import what to do instead (``root``: the plugin's own file or directory)."""
    kw: dict[str, Any] = dict(plugin=plugin, function=function)
    if info.name == "FunctionNotFound":
        return FunctionNotFound(info.message, **kw)
    if info.name == "PayloadTooLarge":
        return PayloadTooLarge(info.message, **kw)
    cls = _ERROR_CLASSES.get(info.name, PluginError)
    message = info.message
    if cls is PermissionDenied:
        message = import_advice(info, module, root) or refusal_advice(message, module, overridden, plugin, advice)
    return cls(
        message, name=info.name, error_type=info.error_type, stack=info.stack,
        details=info.details, **kw,
    )


class Worker:
    """A running Deno process serving one plugin. Lives inside ``run()``, which a pool starts
    in its task group; everything the worker does in the background is bounded by it."""

    _ids = itertools.count(1)

    def __init__(
        self,
        spec: WorkerSpec,
        runtime: Runtime,
        *,
        on_log: LogSink | None = None,
        on_slot_free: Callable[[Worker], None] | None = None,
        host_call: HostCallHandler | None = None,
        on_exit: Callable[[Worker], None] | None = None,
        max_inflight: int = 1,
    ) -> None:
        self.spec = spec
        self.max_inflight = max_inflight  # the pool's calls-per-worker, told at handshake
        self._on_exit = on_exit
        self.runtime = runtime
        self.index = next(self._ids)
        self.state = "starting"
        self.pid: int | None = None
        self.metadata: Any = None
        self.welcomed_config: Any = None
        self.exports: list[str] = []
        self.signatures: dict[str, p.Signature] = {}
        self._arity: dict[tuple[str, int], int | None] = {}  # (function, argument count) -> check_arguments
        self.calls = 0
        self.reserved = 0            # slots promised by the pool, not yet sent
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self.idle_since = time.monotonic()
        self.last_seen = time.monotonic()
        self.last_heartbeat: float | None = None  # wall clock of the last pong
        self.exit_reason: str | None = None
        self.exit_error: HostError | None = None
        self._loading = False  # welcomed: the worker is importing the plugin's module
        self.retiring = False
        self.hook_failure: str | None = None  # why its last lifecycle hook failed (redacted as errors are)
        # The event loop's time its frames may take to decode: a plugin's workers share one (its
        # author writes them all); an execution's worker has its own (other callers' code)
        self._share = (DecodeShare() if spec.role == "execute"
                       else runtime.decode_shares.setdefault(spec.plugin_id, DecodeShare()))
        self.unresponsive = False    # busy and silent past heartbeat_timeout: gets no new call
        self._on_log = on_log
        self._on_slot_free = on_slot_free
        self._host_call = host_call
        self._pending: dict[int, _Pending] = {}
        self._seq = itertools.count(1)
        self._proc: ChildProcess | None = None
        self._conn: FrameSocket | None = None
        self._deadlines: list[tuple[float, int]] = []  # heap of (deadline, call id)
        self._deadline_target = math.inf
        self._deadline_wake = anyio.Event()
        self._kill_reason: str | None = None
        self._shutdown_requested = False
        self._tg: TaskGroup | None = None
        self._backlog: list[p.Message] = []
        self._reader_done = anyio.Event()
        self._exit_hooks: list[Callable[[Worker], None]] = []
        self._host_calls = 0          # host calls being served (reply not yet handed over)
        self._host_scopes: dict[int, set[anyio.CancelScope]] = {}  # an execution's, by its call id
        self._reply_lock = anyio.Lock()  # one reply at a time waits for the worker to read
        self._pong_pending = False    # a pong is being sent: pings meanwhile get none
        # Set by any pong: the worker's event loop turned. Cleared when an execution settles
        # (code it left may keep the loop from turning again); see turned().
        self._turned = anyio.Event()
        self._turned.set()
        self._probe_seq = itertools.count(1 << 40)  # pings of turned(), apart from the heartbeat's
        self._data_base: int | None = None  # VmData when ready (spec.retire_growth)
        self._loose_logs = LogBudget()  # log lines outside any call, per second
        self.exited = anyio.Event()
        self._result_limit = min(spec.limits.max_result_bytes, spec.limits.max_frame)  # a result's most bytes
        self._ended = False  # exited.is_set(), read on every call without a call
        self.log_extra = worker_extra(spec.plugin_id, self.describe())  # ``extra=`` of its log records

    # ------------------------------------------------------------------ state

    @property
    def load(self) -> int:
        return self.reserved + len(self._pending)

    @property
    def awaited(self) -> int:
        """``load`` less the calls whose caller gave up (``_give_up``): what a drain waits for."""
        return self.reserved + sum(1 for pending in self._pending.values() if not pending.event.is_set())

    @property
    def alive(self) -> bool:
        return self.state in ("ready", "starting") and not self._ended

    def describe(self) -> str:
        return f"{self.spec.plugin_id}#{self.index}"

    @property
    def _module(self) -> str | None:
        return str(self.spec.module) if self.spec.module else None

    @property
    def _root(self) -> str | None:
        """The plugin's own file or directory: all it may import."""
        return self.spec.read_paths[0] if self.spec.read_paths else None


    def _lifecycle(self, level: int, text: str) -> None:
        """A lifecycle step: logged (``--debug`` shows it) and journalled (the dashboard's log)."""
        log.log(level, "[plugin:%s] %s", self.describe(), text, extra=self.log_extra)
        if self.spec.journal is not None:
            self.spec.journal(self, logging.getLevelName(level).lower(), text)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[Worker] = anyio.TASK_STATUS_IGNORED) -> None:
        """Spawn and handshake (then report ready), serve until the process ends, clean up.
        A worker that fails to start raises a HostError (HandshakeError, WorkerCrashed,
        SpawnFailed, ...); nothing else leaves it: a socket or data directory that cannot be
        made is a StateError (a full disk: the registry tries again, plugins/state_retry.py),
        another OS refusal or a bug of ours becomes SpawnFailed before ready, and is logged and
        ends the worker after."""
        ready = False

        def report(worker: Worker) -> None:
            nonlocal ready
            ready = True
            task_status.started(worker)

        try:
            await self._run(report)
        except HostError:
            raise
        except Exception as exc:
            if not ready:
                log.warning("[plugin:%s] could not start: %s", self.describe(), exc, exc_info=exc,
                            extra=self.log_extra)
                raise SpawnFailed(f"worker {self.describe()} could not start: {type(exc).__name__}: {exc}",
                                  plugin=self.spec.plugin_id) from None
            log.error("[plugin:%s] failed while serving", self.describe(), exc_info=exc, extra=self.log_extra)
            if self._proc is not None:
                self.kill(self._kill_reason or "error")
            if not self.exited.is_set():  # the pool and the callers must still hear of its end
                with anyio.CancelScope(shield=True):
                    await self._finish()

    async def _run(self, report: Callable[[Worker], None]) -> None:
        limits = self.spec.limits
        sock_path = str(self.runtime.run_dir / "w.sock")  # where it would have been, if the directory is not
        token = secrets.token_urlsafe(24)
        try:
            sock_path = self.runtime.socket_path()  # (its directory made again if removed)
            listener = UnixListener(sock_path)
        except OSError as exc:  # a full or read-only temp directory: the host's state, retried
            raise socket_failure(sock_path, exc, self.spec.plugin_id) from None
        started = False
        try:
            rt, spec = self.runtime, self.spec
            flags = rt.flags(plugin_id=spec.plugin_id, permissions=spec.permissions,
                             base_dir=spec.base_dir, read_paths=spec.read_paths, limits=limits,
                             socket_path=sock_path, inspect=spec.inspect)
            try:
                spec.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # its data dir, its cwd
            except OSError as exc:  # the state directory out of inodes, say: retried as state
                raise os_failure(spec.base_dir, exc, "make the plugin's data directory") from None
            if spec.role == "plugin":
                rt.move_web_storage(spec.plugin_id)
            t_spawn = time.monotonic()
            try:
                self._proc = ChildProcess(
                    rt.command(flags),
                    stdin_data=rt.bootstrap(sock_path, token),
                    reaper=rt.reaper,
                    env=rt.env(spec.permissions, spec.egress_id or spec.plugin_id),
                    cwd=str(spec.base_dir),  # never the socket directory
                    data_limit_mb=limits.rlimit_data_mb,
                    cpu_seconds=limits.cpu_seconds,
                    tail_bytes=limits.stderr_tail_bytes,
                    on_output=self._on_output,
                )
            except OSError as exc:  # the interpreter or Deno gone, a process or memory limit
                raise process_failure(exc, self.describe(), spec.plugin_id, rt.command(flags),
                                      rt.env(spec.permissions, spec.egress_id or spec.plugin_id)) from None
            self.pid = self._proc.pid
            self._lifecycle(logging.DEBUG, f"spawned: pid {self.pid}")
            rt.audit.record("spawn", plugin=spec.plugin_id, pid=self.pid, flags=flags,
                            data_limit_mb=limits.rlimit_data_mb, cpu_seconds=limits.cpu_seconds)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._proc.pump_output)
                tg.start_soon(self._watch_process, tg)
                try:
                    with anyio.fail_after(limits.handshake_timeout):
                        await self._handshake(listener, token)
                except TimeoutError:
                    self.exit_error = self._load_hung(limits.handshake_timeout) if self._loading else \
                        self._handshake_failed(f"no handshake within {limits.handshake_timeout:g}s")
                    self._reader_done.set()  # no read loop will run
                except HostError as exc:
                    self.exit_error = exc
                    self.kill(self._kill_reason or "handshake")
                    self._reader_done.set()
                else:
                    self.state = "ready"
                    self.ready_at = self.idle_since = time.monotonic()
                    if self.spec.retire_growth and self.pid is not None:
                        self._data_base = vm_data(self.pid)
                    self._lifecycle(logging.DEBUG, f"ready: pid {self.pid} after "
                                                   f"{(self.ready_at - t_spawn) * 1000:.1f} ms")
                    started = True
                    report(self)
                    tg.start_soon(self._heartbeat)
                    if spec.role == "plugin":
                        tg.start_soon(self._watch_web_storage)
                finally:
                    listener.close()  # unlinked: nobody else can connect with this token
                if started:
                    tg.start_soon(self._deadline_watch)
                    await self._read_loop()
        except anyio.get_cancelled_exc_class():
            if self._proc is not None and self._proc.returncode is None:  # its owner stopped it: no crash
                self.kill(self._kill_reason or "shutdown")
            raise
        finally:
            if self._proc is not None and self._proc.returncode is None:
                self.kill(self._kill_reason or "error")
            listener.close()
            with anyio.CancelScope(shield=True):
                await self._finish()
        if not started:
            raise self.exit_error or WorkerCrashed("worker exited during startup", plugin=self.spec.plugin_id)

    async def _handshake(self, listener: UnixListener, token: str) -> None:
        lim = self.spec.limits
        self._conn = await listener.accept(lim.max_frame, min(PAUSE_MAX, lim.heartbeat_timeout / 2), self._share)
        hello = await self._next_message()
        if not isinstance(hello, p.Hello):
            raise self._handshake_failed(f"expected hello, got {type(hello).__name__}")
        reason = None
        if not secrets.compare_digest(hello.cookie.encode(), p.MAGIC_COOKIE.encode()):
            reason = "bad magic cookie"
        elif hello.protocol != p.PROTOCOL_VERSION:
            reason = f"protocol version {hello.protocol} unsupported (host speaks {p.PROTOCOL_VERSION})"
        elif not secrets.compare_digest(hello.token.encode(), token.encode()):
            reason = "bad or replayed token"
        if reason:
            try:
                await self._send(p.Reject(reason=reason))
            except HostError:
                pass
            raise self._handshake_failed(reason)
        self.welcomed_config = self.spec.config  # a config change after this is told by a hook
        self._loading = self.spec.module is not None  # past the welcome, the wait is the plugin's import
        await self._send(p.Welcome(
            plugin_id=self.spec.plugin_id,
            module=self._module,
            config=self.welcomed_config,
            tools=self.spec.tools,
            limits=p.Limits(
                heartbeat_interval_ms=int(lim.heartbeat_interval * 1000),
                heartbeat_timeout_ms=int(lim.heartbeat_timeout * 1000),
                max_frame=lim.max_frame,
                max_log_entries=lim.max_log_entries,
                max_log_bytes=lim.max_log_bytes,
                max_inflight=self.max_inflight,
                max_result_bytes=min(lim.max_result_bytes, lim.max_frame),
                max_web_workers=lim.max_web_workers,
                egress_proxy=int(self.runtime.proxied(self.spec.permissions)),
                max_host_calls=lim.max_host_calls,
                harden=int(self.spec.role == "execute" and self.spec.reused),
            ),
        ))
        while True:
            msg = await self._next_message()
            if isinstance(msg, p.Log):
                self._dispatch(msg)
            elif isinstance(msg, p.Ready):
                break
            else:
                raise self._handshake_failed(f"expected ready, got {type(msg).__name__}")
        if msg.error is not None:
            self.kill("load")
            err = self._checked_error(msg.error)  # capped here too: the runtime's caps are plugin code's to undo
            where = where_in(err.stack)  # a throw at the module's top level: say which line
            message = (import_advice(err, self._module, self._root) or commonjs_advice(err)
                       or extension_advice(err) or self._load_refusal(err) or err.message)
            raise PluginUnavailable(f"failed to load: {err.name}: {located(message, where)}", plugin=self.spec.plugin_id)
        # What a serving worker says of its metadata is the module's to forge (a 16 MiB one held
        # ~115 MiB of host memory a worker): only the reading worker's is read, and validated
        self.metadata = msg.metadata if self.spec.reading else self.spec.metadata
        self.exports = msg.exports
        self.signatures = {fn: sig if sig.params is None or _kept(sig.params) else msgspec.structs.replace(sig, params=None)
                           for fn, sig in msg.signatures.items()}

    def _load_refusal(self, err: p.ErrorInfo) -> str | None:
        """A permission refused to the module's top-level code, as what to change: reading the
        metadata runs with no permissions at all (what the plugin declares is not known yet),
        so code that needs its grants belongs in a function or onStart; a worker with its
        grants was refused one it does not declare."""
        if err.name != "NotCapable" or (m := _REFUSED.match(err.message)) is None:
            return None
        if not self.spec.reading:
            return refusal_advice(err.message, self._module, self.spec.overridden, self.spec.plugin_id,
                                  {**self.spec.pending_advice, **self.spec.advice})
        kind, target = m.groups()
        return (f'the module\'s top-level code asked for {kind} access to "{target}" while the host read its '
                "metadata, which runs with no permissions (what a plugin declares applies once it is read): "
                "move that code into the function that needs it, or into onStart(context)")

    def _load_hung(self, timeout: float) -> HandshakeError:
        """The worker said hello and got its welcome, but importing the plugin took the rest of
        the handshake's time: the module's own top level is waiting (or looping)."""
        self.kill("handshake")
        return HandshakeError(
            f"{self.spec.module}: the module did not finish loading within {timeout:g}s: a top-level await "
            "that never settles, or a loop at its top level? (the wait is [limits] handshake_timeout)",
            plugin=self.spec.plugin_id)

    def _handshake_failed(self, reason: str) -> HandshakeError:
        self.kill("handshake")
        return HandshakeError(f"handshake rejected: {reason}", plugin=self.spec.plugin_id)

    async def _next_message(self) -> p.Message:
        """One message during the handshake (before the read loop owns the socket)."""
        assert self._conn is not None
        while not self._backlog:
            try:
                self._backlog.extend(await self._conn.receive())
            except ConnectionLost:
                raise await self._lost_in_handshake() from None
            except ProtocolError as exc:
                raise self._handshake_failed(exc.message) from None
        return self._backlog.pop(0)

    async def _lost_in_handshake(self) -> HostError:
        """The worker closed its socket before it was ready. If its process is ending by itself
        (Deno.exit, out of memory at the module's top level), how it ended says why: wait a moment
        for it (``_watch_process`` may see the exit first and end the handshake with it), shielded
        from the handshake's deadline, whose error would say less."""
        assert self._proc is not None
        with anyio.CancelScope(shield=True), anyio.move_on_after(LOST_EXIT_GRACE):
            await self._proc.wait()
        if self._proc.returncode is None:
            return self._handshake_failed("connection closed")
        return self._exit_error()

    async def _watch_process(self, tg: TaskGroup) -> None:
        assert self._proc is not None
        await self._proc.wait()
        if self.state == "starting":  # died before the handshake finished: stop waiting
            self.exit_error = self._exit_error()
            tg.cancel_scope.cancel()
            return
        # The socket reaches EOF at the same moment; let the reader drain what was sent.
        with anyio.move_on_after(DRAIN_GRACE):
            await self._reader_done.wait()
        tg.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        dispatch = self._dispatch
        try:
            for msg in self._backlog:
                dispatch(msg)
            self._backlog.clear()

            def consume(msgs: list[p.Message], sizes: list[int]) -> None:
                self.last_seen = time.monotonic()
                for i, msg in enumerate(msgs):
                    dispatch(msg, sizes[i])

            try:
                await conn.serve(consume)
            except ConnectionLost:
                pass
            except ProtocolError as exc:
                self.exit_error = ProtocolError(exc.message, plugin=self.spec.plugin_id)
                self.kill("protocol")
        finally:
            self._reader_done.set()
        if self.state in ("ready", "starting"):
            self.state = "stopping"  # the connection is gone: the pool sends it nothing more
        if self._proc and self._proc.returncode is None:
            # EOF without exit: give it a moment to exit by itself, then make sure.
            with anyio.move_on_after(EXIT_GRACE):
                await self.exited_process()
            if self._proc.returncode is None:
                self.kill(self._kill_reason or "eof")
        await self.exited_process()

    async def exited_process(self) -> None:
        assert self._proc is not None
        await self._proc.wait()

    async def _finish(self) -> None:
        """After the process is gone: classify the exit and fail every call still waiting."""
        proc = self._proc
        if proc is not None:
            proc.close()
            if self.exit_error is None:
                self.exit_error = self._exit_error()
            elif self.exit_reason is None:  # killed after a protocol violation: a crash too
                self.exit_reason = self._kill_reason or "crash"
        self.state = "stopped" if self.exit_reason == "shutdown" else "crashed"
        if proc is not None:
            detail = self.exit_error.message if isinstance(self.exit_error, ProtocolError) else ""
            record_kill(self.runtime.audit, self.spec.plugin_id, self.pid, self.exit_reason, detail)
            expected = self.exit_reason in ("shutdown", "retired", "load", "hook")  # load: the plugin's state says
            if expected:
                self._lifecycle(logging.DEBUG, f"exited ({self.exit_reason}): pid {self.pid}")
            else:
                self._lifecycle(logging.WARNING, f"exited ({self.exit_reason}): {self.exit_error}")
        if self._on_exit is not None:  # before waking callers: they may look at the pool
            self._on_exit(self)
        for hook in self._exit_hooks:
            try:
                hook(self)
            except Exception:
                log.exception("exit hook of %s failed", self.describe())
        self._exit_hooks.clear()
        err = self.exit_error
        for pending in self._pending.values():
            if pending.error is None and not pending.event.is_set():
                pending.error = err
                pending.event.set()
            _gone(pending)
        self._pending.clear()
        if self._conn is not None:
            self._conn.close()
        self._ended = True
        self.exited.set()

    def _exit_error(self) -> HostError:
        proc = self._proc
        assert proc is not None
        tail = proc.stderr_tail()
        if self.spec.redact is not None:
            tail = self.spec.redact(tail)
        rc, sig = proc.exit_code, proc.exit_signal
        reason = self._kill_reason
        if self._shutdown_requested and rc == 0 and sig is None:
            # It exited by itself as asked; a write that found the socket closed before the
            # exit was seen (a heartbeat ping) noted a kill reason that is not why it ended.
            reason = "shutdown"
        elif reason is None:
            if sig == signal.SIGTRAP or "out of memory" in tail:
                reason = "memory"
            elif sig == signal.SIGXCPU:
                reason = "cpu"
            else:
                reason = "crash"
        self.exit_reason = reason
        how = f"exit code {rc}" if sig is None else f"signal {signal.Signals(sig).name}"
        text = {
            "timeout": "was killed: a call passed its deadline",
            "hook": "was killed: onStop/onConfigChange passed limits.hook_timeout",
            "memory": "ran out of memory",
            "cpu": "exceeded its CPU time limit",
            "heartbeat": "was killed: heartbeats stopped",
            "cancel": "was killed: a cancelled call did not stop in time",
            "protocol": "was killed: protocol violation",
            "left busy": "was killed: its event loop did not turn after its last execution",
            "shutdown": "shut down",
        }.get(reason, f"was killed: {reason}" if reason.startswith("resource limit") else "crashed")
        summary = f"{text} ({how})"
        if self._loading and self.state == "starting":  # the plugin's top level ended it
            summary += f" while loading {self.spec.module}"
        msg = f"worker {self.describe()} (pid {proc.pid}) {summary}"
        if reason == "memory":  # V8's GC trace and C stack (its output) say nothing more to the author
            msg += (f"; a worker's heap is limits.heap_mb ({self.spec.limits.heap_mb} MiB) and its data segment "
                    f"limits.data_limit_mb: [plugins.{self.spec.plugin_id}.limits] sets them for this plugin")
        elif tail.strip() and reason != "shutdown":
            msg += f"; output: {tail.strip()[-500:]}"
        return WorkerCrashed(
            msg, exit_code=rc, signal=sig, reason=reason, stderr_tail=tail, summary=summary,
            plugin=self.spec.plugin_id)

    def add_exit_hook(self, fn: Callable[[Worker], None]) -> None:
        """Call ``fn(worker)`` once the process is gone (at once if it already is)."""
        if self.exited.is_set():
            fn(self)
        else:
            self._exit_hooks.append(fn)

    def kill(self, reason: str) -> None:
        """SIGKILL the worker's process group now; ``reason`` is reported to waiting calls,
        unless the process had already ended by itself (a write that finds the connection cut
        by a SIGXCPU, say): then its own exit says why."""
        if self._kill_reason is None and not (self._proc is not None and self._proc.has_exited()):
            self._kill_reason = reason
        if self._proc is not None:
            self._proc.kill()
        if self.state in ("ready", "starting"):
            self.state = "stopping"

    async def shutdown(self, hook: bool = False) -> None:
        """Ask the worker to exit; SIGKILL it if it has not within the grace period. ``hook``:
        first run the plugin's ``onStop`` (if it exports one) within ``limits.hook_timeout``."""
        if self.exited.is_set():
            return
        if not self.spec.reused:  # a fresh worker keeps nothing worth a graceful stop; code it
            self.kill("shutdown")  # ran may have left it spinning, holding a slot for the grace
            await self.exited.wait()
            return
        if hook and p.HOOKS["stop"] in self.exports and self.alive:
            await self.run_hook("stop")
        self._shutdown_requested = True
        self.state = "stopping"
        try:
            await self._send(p.Shutdown())
        except HostError:
            pass
        with anyio.move_on_after(self.spec.limits.shutdown_grace):
            await self.exited.wait()
        if not self.exited.is_set():
            self.kill("shutdown-timeout")
            await self.exited.wait()

    # ------------------------------------------------------------------ frames

    async def _send(self, msg: p.Message) -> None:
        await self._write(p.encode(msg, self.spec.limits.max_frame))

    async def _write(self, data: bytes) -> None:
        """Send one encoded frame; a connection that breaks kills the worker."""
        written = self._push(data)
        if written is not None:
            await written

    def _push(self, data: bytes) -> Awaitable[None] | None:
        """``_write`` without a coroutine when the socket takes the frame at once (None);
        else what to await until it is written."""
        conn = self._conn
        if conn is None:
            raise WorkerCrashed("worker is not connected", plugin=self.spec.plugin_id)
        try:
            written = conn.push(data)
        except ConnectionLost:
            raise self._lost() from None
        return None if written is None else self._written(written)

    async def _written(self, written: Awaitable[None]) -> None:
        try:
            await written
        except ConnectionLost:
            raise self._lost() from None

    def _lost(self) -> HostError:
        self.kill(self._kill_reason or "connection lost")  # a cut stream cannot be resumed
        return self.exit_error or WorkerCrashed(f"worker {self.describe()} connection lost",
                                                plugin=self.spec.plugin_id)

    async def _write_when_read(self, msg: p.Message | bytes) -> None:
        """Send a frame the worker's own requests make the host send (a host call's reply, a
        channel event) once the worker has read what waits for it down to
        ``max_write_buffer_bytes``, encoding it only then: a worker that stops reading makes
        the host hold no more than that plus one frame. One that reads nothing of it for
        ``heartbeat_timeout`` is killed (resource limit: write buffer)."""
        conn = self._conn
        if conn is None:
            raise WorkerCrashed("worker is not connected", plugin=self.spec.plugin_id)
        lim = self.spec.limits
        await self._reply_lock.acquire()
        try:
            try:
                await conn.wait_for_space(lim.max_write_buffer_bytes, lim.heartbeat_timeout)
            except WriteBufferFull as exc:
                self.kill(LIMIT_WRITE_BUFFER)
                raise WorkerCrashed(f"worker {self.describe()} was killed: {LIMIT_WRITE_BUFFER} ({exc})",
                                    reason=LIMIT_WRITE_BUFFER, plugin=self.spec.plugin_id) from None
            data = msg if isinstance(msg, (bytes, bytearray)) else p.encode(msg, lim.max_frame)
            written = conn.push(data)
        except ConnectionLost:
            self.kill(self._kill_reason or "connection lost")
            raise WorkerCrashed(f"worker {self.describe()} connection lost", plugin=self.spec.plugin_id) from None
        finally:
            self._reply_lock.release()
        if written is not None:
            try:
                await written
            except ConnectionLost:
                self.kill(self._kill_reason or "connection lost")
                raise WorkerCrashed(f"worker {self.describe()} connection lost",
                                    plugin=self.spec.plugin_id) from None

    def _dispatch(self, msg: p.Message, size: int = 0) -> None:
        """One message from the worker, checked against every cap the host enforces (the
        runtime applies the same caps, but plugin code may write frames itself)."""
        # A call leaves _pending only once its answer is complete: if anything here raises, the
        # worker ends and _finish fails the call, which never hangs.
        if isinstance(msg, p.Result):
            pending = self._pending.get(msg.id)
            if pending is not None:
                if size > (limit := self._result_limit):
                    pending.info = p.ErrorInfo(
                        name="PayloadTooLarge", error_type="SANDBOX_LIMIT",
                        message=f"result of {size} bytes exceeds the {limit}-byte limit (limits.max_result_bytes)")
                    record_error(self.runtime.audit, self.spec.plugin_id, pending.fn, pending.info.name,
                                 pending.info.message)
                else:
                    pending.value = msg.value
                del self._pending[msg.id]
                if pending.logs is not None:  # an execution's
                    self._ran(msg.id, pending)
                pending.event.set()
                _gone(pending)
                self._settled()
        elif isinstance(msg, p.Error):
            pending = self._pending.get(msg.id)
            if pending is not None:
                info = self._checked_error(msg.error)
                record_error(self.runtime.audit, self.spec.plugin_id, pending.fn, info.name, info.message)
                pending.info = info
                del self._pending[msg.id]
                if pending.logs is not None:  # an execution's
                    self._ran(msg.id, pending)
                pending.event.set()
                _gone(pending)
                self._settled()
        elif isinstance(msg, p.Log):
            self.record_log(msg)
        elif isinstance(msg, p.Pong):
            self.last_heartbeat = time.time()
            self._turned.set()
        elif isinstance(msg, p.Ping):
            if self._tg is not None and not self._pong_pending:  # a ping flood gets one pong at a time
                self._pong_pending = True
                self._tg.start_soon(self._pong, msg.seq)
        elif isinstance(msg, p.HostCall):
            if self._host_calls >= self.spec.limits.max_host_calls:
                self.kill(LIMIT_HOST_CALLS)  # the runtime refuses more itself: this is raw frames
            elif self._tg is not None:
                self._host_calls += 1
                self._tg.start_soon(self._serve_host_call, msg)
        else:
            self.exit_error = ProtocolError(
                f"unexpected {type(msg).__name__} frame from worker", plugin=self.spec.plugin_id
            )
            self.kill("protocol")

    def record_log(self, msg: p.Log) -> None:
        """A log line of this worker, within the log budget of its call (or of the current
        second, outside calls), capped in size, secrets redacted: attached to its call (for
        execute's logs) and passed to the log sink."""
        lim = self.spec.limits
        pending = self._pending.get(msg.id) if msg.id is not None else None
        if pending is None:
            budget = self._loose_budget()
        elif (budget := pending.log_budget) is None:
            budget = pending.log_budget = LogBudget()
        # what the entry carries: its stack and name too (an entry's stack, up to 64 KiB, was free)
        verdict = budget.admit(len(msg.message) + min(len(msg.stack or ""), MAX_ERROR_TEXT)
                              + min(len(msg.name or ""), MAX_ERROR_NAME), lim)
        if verdict is False:
            return
        if verdict is None or (msg.level == "warn" and msg.message.startswith("log output truncated")):
            record_refusal(self.runtime.audit, self.spec.plugin_id, "limit", "log flood: output truncated "
                           "(limits.max_log_entries / max_log_bytes)", function=pending.fn if pending else None)
        if verdict is None:
            msg = p.Log(level="warn", id=msg.id, ts=msg.ts, message=(
                "log output truncated by the host (limits.max_log_entries / max_log_bytes)"
                if pending is not None else
                "log output truncated by the host (outside a call: more than the per-second budget)"))
        else:
            msg = p.Log(level=msg.level if msg.level in WORKER_LEVELS else "log", id=msg.id, ts=msg.ts,
                        message=_cap(msg.message, lim.max_log_bytes), name=_cap(msg.name, MAX_ERROR_NAME),
                        stack=_cap(msg.stack, MAX_ERROR_TEXT))
        r = self.spec.redact
        if r is not None:
            msg = msgspec.structs.replace(msg, message=r(msg.message), stack=r(msg.stack) if msg.stack else None)
        if pending is not None and pending.logs is not None:
            pending.logs.append(msg)
        if self._on_log is not None:
            self._on_log(self, msg)

    def tools_of(self, call: int | None) -> frozenset[str]:
        """The tools the execution ``call`` (still running on this worker) asked for."""
        pending = self._pending.get(call) if call is not None else None
        return pending.tools if pending is not None else frozenset()

    def deadline_of(self, call: int | None) -> float | None:
        """When the call ``call`` (still running on this worker) is past its deadline (monotonic):
        its caller's, which may be shorter than the plugin's own (a host call it makes after
        its caller gave up has no time left)."""
        pending = self._pending.get(call) if call is not None else None
        return pending.answer_by if pending is not None else None

    def _loose_budget(self) -> LogBudget:
        now = time.monotonic()
        if now - self._loose_logs.since >= 1.0:
            self._loose_logs = LogBudget(now)
        return self._loose_logs

    def _checked_error(self, info: p.ErrorInfo) -> p.ErrorInfo:
        """The worker's error with each part capped and secrets redacted from its message,
        stack and details."""
        details = info.details
        if details is not None:
            try:
                text = msgspec.json.encode(details, enc_hook=str).decode()
            except (TypeError, ValueError, OverflowError):
                text = ""
            if not text or len(text) > MAX_ERROR_DETAILS:
                details = text = None
        else:
            text = None
        info = p.ErrorInfo(name=_cap(info.name, MAX_ERROR_NAME) or "Error",
                           message=_cap(info.message, MAX_ERROR_TEXT) or "",
                           stack=_cap(info.stack, MAX_ERROR_TEXT),
                           error_type=_cap(info.error_type, MAX_ERROR_NAME), details=details)
        r = self.spec.redact
        if r is None:
            return info
        if text is not None and r(text) != text:
            try:  # a masked number (a numeric secret) is not JSON: the details are dropped
                details = msgspec.json.decode(r(text))
            except msgspec.DecodeError:
                details = None
        return msgspec.structs.replace(info, name=r(info.name), message=r(info.message),
                                       error_type=r(info.error_type) if info.error_type else info.error_type,
                                       stack=r(info.stack) if info.stack else info.stack, details=details)

    async def deliver(self, frame: bytes) -> bool:
        """Send a channel event, a ``p.Deliver`` frame encoded once for all its targets, to this
        worker; False (never an error) if it cannot take it (gone, or the frame too large)."""
        if not self.alive or self._conn is None or len(frame) - p.HEADER.size > self.spec.limits.max_frame:
            return False
        try:
            await self._write_when_read(frame)
        except HostError:
            return False
        return True

    def _settled(self) -> None:
        self.calls += 1
        if not self._pending:
            self.idle_since = time.monotonic()
        if self._on_slot_free is not None:
            self._on_slot_free(self)

    async def _send_quietly(self, msg: p.Message) -> None:
        try:
            await self._send(msg)
        except HostError:
            pass

    async def _pong(self, seq: int) -> None:
        try:
            await self._send_quietly(p.Pong(seq=seq))
        finally:
            self._pong_pending = False

    def _ran(self, cid: int, pending: _Pending) -> None:
        """An execution (a call with logs collected) settled: its code may have left the
        worker's event loop spinning in microtasks, where no timer runs; it turns again, as
        far as the host knows, at the next pong (the runtime sends one unasked from its next
        macrotask). Its host calls still served end with it."""
        if self.spec.role == "execute":
            for scope in self._host_scopes.pop(cid, ()):
                scope.cancel()
                # counted out now, as the runtime drops them now: the next execution may make its
                # own max_host_calls at once (before their replies were written, the 65th killed it)
                self._host_calls -= 1
            self._turned = anyio.Event()
            if self.spec.retire_growth and self._data_base is not None and not self.retiring:
                grown = (vm_data(self.pid) or self._data_base) - self._data_base
                if grown > self.spec.retire_growth:
                    self.retiring = True  # the pool gives it no other call, and stops it
                    self._lifecycle(logging.INFO, f"retired: its data grew by {grown >> 20} MiB over executions "
                                                  "([execute] retire_growth_mb)")

    async def turned(self, within: float) -> bool:
        """True if the worker's event loop has turned since its last execution settled, or
        does within ``within`` seconds (it is pinged, for a runtime that sends no pong unasked).
        A worker that does not must not be given the next execution: it would sit unread
        until its deadline."""
        if self._turned.is_set():
            return True
        if not self.alive or self._conn is None:
            return False
        turned = self._turned
        try:
            with anyio.move_on_after(within):
                await self._send(p.Ping(seq=next(self._probe_seq)))  # cut off half-written: killed anyway
                await turned.wait()
        except HostError:
            return False
        return turned.is_set()

    async def _serve_host_call(self, msg: p.HostCall) -> None:
        """Answer a host call. An execution's ends when the execution settles: the host calls it
        left unawaited (64 of a slow tool) held the worker's host-call slots, the host's and the
        runtime's, and the next caller on the worker had its own refused until they finished."""
        scope = anyio.CancelScope()
        scopes = None
        if self.spec.role == "execute" and msg.call in self._pending:
            scopes = self._host_scopes.setdefault(msg.call, set())
            scopes.add(scope)
        try:
            await self._answer_host_call(msg, scope)
        finally:
            ended = scopes is not None and self._host_scopes.get(msg.call) is not scopes  # type: ignore[arg-type]
            if not ended:  # else _ran counted it out with its execution
                self._host_calls -= 1
            if scopes is not None:
                scopes.discard(scope)
                if not scopes and not ended:
                    del self._host_scopes[msg.call]  # type: ignore[arg-type]

    def _refused(self, msg: p.HostCall) -> p.ErrorInfo | None:
        """Why execute code may not make this host call, if it may not. Executions of different
        callers share a worker, so the host (never the runtime) decides: a host call must come
        from an execution still running (code left behind by one that settled gets nothing),
        the channel only for one that asked for the tool, and no cache or storage at all
        (executions share nothing). Leaving a subscription is always allowed."""
        if self.spec.role != "execute" or msg.op == "channel.off":
            return None
        if msg.call is None or msg.call not in self._pending:
            why = "the execution that made it has ended"
        elif msg.op.startswith("channel.") and "channel" not in self.tools_of(msg.call):
            why = 'the channel serves executions that asked for it (tools: ["channel"])'
        elif msg.op.startswith(("cache.", "storage.")):
            why = "executions share nothing: cache and storage are for plugins"
        else:
            return None
        return p.ErrorInfo(name="InvalidHostCall", message=f"host call {msg.op!r} refused: {why}")

    async def _answer_host_call(self, msg: p.HostCall, scope: anyio.CancelScope) -> None:
        """Work out the reply within ``scope`` (cancelled: the call's execution ended), then
        write it (never cancelled half-way: a frame cut short ends the stream)."""
        if self._host_call is None:
            reply = p.HostReply(id=msg.id, error=p.ErrorInfo(
                name="UnknownHostCall", message=f"host call {msg.op!r} is not available"))
        elif (refusal := self._refused(msg)) is not None:
            reply = p.HostReply(id=msg.id, error=refusal)
        else:
            reply = p.HostReply(id=msg.id, error=p.ErrorInfo(
                name="InvalidHostCall", message=f"host call {msg.op!r} ended: the execution that made it has ended"))
            with scope:
                try:
                    reply = p.HostReply(id=msg.id, value=await self._host_call(self, msg))
                except HostError as exc:
                    reply = p.HostReply(id=msg.id, error=p.ErrorInfo(name=type(exc).__name__, message=exc.message))
                except Exception:  # a handler's bug must not take the worker (and its pool) down
                    log.exception("host call %s from %s failed", msg.op, self.describe())
                    reply = p.HostReply(id=msg.id, error=p.ErrorInfo(
                        name="HostCallError", message=f"host call {msg.op!r} failed inside the host"))
        try:
            await self._write_when_read(reply)
        except PayloadTooLarge as exc:  # the plugin must get an answer, not wait for its deadline
            await self._send_quietly(p.HostReply(id=msg.id, error=p.ErrorInfo(
                name="PayloadTooLarge", message=f"reply to {msg.op}: {exc.message}")))
        except HostError:
            pass

    def _on_output(self, line: str) -> None:
        if line and log.isEnabledFor(logging.DEBUG):  # (serve --debug): redacting costs more than the line
            if self.spec.redact is not None:
                line = self.spec.redact(line)
            log.debug("[plugin:%s] %s", self.describe(), line, extra=self.log_extra)

    async def _watch_web_storage(self) -> None:
        """Bound the plugin's Cache API files, which Deno writes under the host's DENO_DIR with no
        write grant and no quota (a zero-permission plugin wrote 256 MiB in seconds, and would
        have filled the state directory's disk). Past ``limits.storage_max_bytes`` (each file
        and directory counted at 4 KiB at least: 20,000 empty caches took 157 MiB) the worker
        is killed and, once it is gone, the plugin's Cache API entries (a cache) removed.
        localStorage is Deno's to bound (10 MB), and kept."""
        cache_dir = web_storage_dirs(self.runtime.deno_dir, self.spec.plugin_id)[1]
        cap = self.spec.limits.storage_max_bytes
        while True:
            await anyio.sleep(WEB_STORAGE_CHECK)
            if cache_dir.is_dir() and await anyio.to_thread.run_sync(
                    tree_bytes, cache_dir, cap, abandon_on_cancel=True) > cap:  # (most plugins have none)
                break
        self.add_exit_hook(lambda _: shutil.rmtree(cache_dir, ignore_errors=True))  # its files closed
        self.kill(LIMIT_WEB_STORAGE)
        self._lifecycle(logging.WARNING, f"killed: its Cache API files took over {cap:,} bytes "
                        f"(limits.storage_max_bytes); they are removed")

    async def _heartbeat(self) -> None:
        lim = self.spec.limits
        seq = 0
        while True:
            await anyio.sleep(lim.heartbeat_interval)
            silent = time.monotonic() - self.last_seen > lim.heartbeat_timeout
            if silent and not self._pending:
                self.kill("heartbeat")
                return
            # A busy worker may be computing (its calls' deadlines judge that) or stopped
            # (SIGSTOP): either way it takes no new call until it answers again.
            if silent != self.unresponsive:
                self.unresponsive = silent
                self._lifecycle(logging.WARNING if silent else logging.INFO,
                                "no heartbeat answer while busy: no new calls until it answers" if silent
                                else "answers again")
                if not silent and self._on_slot_free is not None:
                    self._on_slot_free(self)
            seq += 1
            await self._send_quietly(p.Ping(seq=seq))

    # ------------------------------------------------------------------ calls

    async def run_hook(self, name: str, config: Any = None) -> bool:
        """Run lifecycle hook ``name`` (protocol.HOOKS) within ``limits.hook_timeout``: True
        when the plugin's export ran and returned, False when it has none, or threw, or hung
        (then the worker is killed, like a call past its deadline). Never raises a HostError:
        a failure is logged and the caller stops or replaces the worker anyway."""
        timeout = self.spec.limits.hook_timeout
        cid = next(self._seq)
        msg = p.Hook(id=cid, name=name, config=config, timeout_ms=timer_ms(timeout))
        with anyio.CancelScope(shield=True):
            try:
                pending = await self._request(cid, msg, p.HOOKS[name], timeout, None, collect_logs=False, hook=True)
            except HostError as exc:
                self.hook_failure = str(exc)
                self._lifecycle(logging.WARNING, f"{p.HOOKS[name]} failed: {exc}")
                return False
        return pending.value is True

    def call(self, fn: str, args: list[Any], timeout: float, lease: Lease | None = None,
             limit: float | None = None) -> Awaitable[Any]:
        """Call an exported function (await what this returns: the request itself, no frame
        around it); the worker is killed if the deadline passes. With a ``limit`` longer than
        ``timeout`` (the caller chose a shorter deadline than the plugin's own), the caller gets
        CallTimeout after ``timeout`` and the call is cancelled, and the worker is killed only if
        the call still runs after ``limit``, or its event loop stopped answering (``_give_up``).
        Too few or too many arguments for what it declares raise InvalidArguments (arity.py)."""
        key = (fn, len(args))  # the verdict depends on the count only: judged once per count
        try:
            context_at = self._arity[key]
        except KeyError:
            if fn in _HOOK_EXPORTS:  # the host runs these itself (run_hook), at their moments only; never cached
                raise FunctionNotFound(f"{self.spec.plugin_id}.{fn}: a lifecycle hook, run by the host itself "
                                       "(onStart as a worker starts, onStop as it stops, onConfigChange on a config "
                                       "change)", plugin=self.spec.plugin_id) from None
            context_at = check_arguments(self.spec.plugin_id, fn, args, self.signatures.get(fn), self.metadata,
                                         self.spec.module)
            if len(self._arity) < 256:  # callers name functions and counts: keep it bounded
                self._arity[key] = context_at
        cid = next(self._seq)
        msg = p.Call(id=cid, fn=fn, args=args, timeout_ms=timer_ms(timeout), context_at=context_at)
        return self._request(cid, msg, fn, timeout, lease, collect_logs=False, value=True, limit=limit)

    async def execute(
        self, code: str, *, entry: str, input: Any, timeout: float, tools: list[str],
        lease: Lease | None = None, language: str = "javascript", settings: dict[str, Any] | None = None,
    ) -> _Pending:
        """Run ad-hoc module code; returns the settled request (value or error, plus logs).
        Its call id is random, not the next in a sequence: code an earlier caller's execution
        left behind cannot name the next one's call (to answer it in its place)."""
        cid = secrets.randbelow(1 << 52) + (1 << 52)  # JavaScript's safe integers end at 2**53
        while cid in self._pending:
            cid = secrets.randbelow(1 << 52) + (1 << 52)
        msg = p.Execute(id=cid, code=code, entry=entry, input=input,  # UNSET: not sent
                        timeout_ms=timer_ms(timeout), tools=tools, language=language,
                        tool_settings=settings or {})
        return await self._request(cid, msg, entry, timeout, lease, collect_logs=True, raise_error=False,
                                   tools=frozenset(tools))

    async def _request(
        self, cid: int, msg: p.Message, fn: str, timeout: float, lease: Lease | None, *,
        collect_logs: bool, raise_error: bool = True, tools: frozenset[str] = frozenset(), hook: bool = False,
        value: bool = False, limit: float | None = None,
    ) -> Any:
        """Send ``msg`` and wait for its answer: the settled request, or with ``value`` the
        value it answered."""
        # Encoded before anything is registered: arguments that cannot be sent leave no trace,
        # and the pool gives the unused reservation back.
        try:
            data = p.encode(msg, self.spec.limits.max_frame)
        except PayloadTooLarge as exc:
            raise PayloadTooLarge(f"arguments too large: {exc.message}",
                                  plugin=self.spec.plugin_id, function=fn) from None
        except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
            raise InvalidArguments(f"arguments cannot be sent to the plugin: {exc}",
                                   plugin=self.spec.plugin_id, function=fn) from None
        if lease is not None:  # the pool's reservation becomes this request
            lease.consume()
        if not self.alive:
            gone = self.exit_error or WorkerCrashed(f"worker {self.describe()} is gone", plugin=self.spec.plugin_id)
            raise gone.undelivered() if isinstance(gone, WorkerCrashed) else gone
        conn = self._conn
        pending = _Pending(fn, collect_logs, tools, hook, True if conn is None else conn.loop)
        self._pending[cid] = pending
        # The deadline runs from now: arguments that wait to be written (a worker that reads
        # nothing meanwhile) count against it too.
        now = time.monotonic()
        answer_by = now + timeout
        if limit is None or limit <= timeout:
            limit = timeout
        if len(self._deadlines) > 2 * len(self._pending) + 64:
            self._prune_deadlines()
        heapq.heappush(self._deadlines, (answer_by, cid))  # then (deadline, cid) if the caller gives up first
        pending.timeout, pending.limit, pending.answer_by, pending.deadline = timeout, limit, answer_by, now + limit
        if answer_by < self._deadline_target:
            self._deadline_wake.set()
        try:
            written = self._push(data)
            if written is not None:
                if limit > timeout and self._tg is not None:  # its caller may stop waiting before it is out
                    self._tg.start_soon(self._write_call, cid, pending, written)
                else:
                    await written
        except WorkerCrashed as exc:  # the connection broke before the call went out
            self._pending.pop(cid, None)
            if pending.error is not None:  # its deadline passed first (and killed the worker)
                raise pending.error from None
            raise exc.undelivered() from None
        try:
            await pending.event
        except anyio.get_cancelled_exc_class():
            if cid in self._pending:
                with anyio.CancelScope(shield=True):
                    await self._send_quietly(p.Cancel(id=cid, reason="cancelled by caller"))
                if self._tg is not None:
                    self._tg.start_soon(self._cancel_watchdog, cid)
            raise
        if pending.info is not None and pending.error is None:  # the worker answered with an error
            if raise_error:
                raise error_from_info(pending.info, plugin=self.spec.plugin_id, function=fn,
                                      module=self._module, root=self._root,
                                      overridden=self.spec.overridden,
                                      advice={**self.spec.pending_advice, **self.spec.advice})
        elif pending.error is not None:
            raise pending.error
        return pending.value if value else pending

    async def _write_call(self, cid: int, pending: _Pending, written: Awaitable[None]) -> None:
        """Write a call's frame in the worker's task group, for a caller who may give up first
        (``_give_up``): the first frame that waits drives the writes queued behind it, and
        abandoned half-way it would cut the stream."""
        try:
            await written
        except WorkerCrashed as exc:  # the connection broke before the call went out
            _gone(pending)
            if self._pending.pop(cid, None) is not None and pending.error is None:
                pending.error = exc.undelivered()
                pending.event.set()

    async def _deadline_watch(self) -> None:
        """One timer per worker instead of one per call: sleeps until the earliest deadline
        of a call in flight; a call past it is failed with CallTimeout and the worker killed.
        A call whose caller chose a shorter deadline than the plugin's own is given up at the
        caller's (``_give_up``) and watched on until its own."""
        heap = self._deadlines
        while True:
            now = time.monotonic()
            while heap and (heap[0][1] not in self._pending or heap[0][0] <= now):
                deadline, cid = heapq.heappop(heap)
                pending = self._pending.get(cid)
                if pending is not None and deadline <= now:
                    if pending.deadline > now:
                        self._give_up(cid, pending)
                    else:
                        self._time_out(cid, pending)
            self._prune_deadlines()
            self._deadline_target = heap[0][0] if heap else math.inf
            self._deadline_wake = anyio.Event()
            with anyio.move_on_after(self._deadline_target - now):
                await self._deadline_wake.wait()

    def _prune_deadlines(self) -> None:
        """Drop the entries of settled calls once they outnumber the calls in flight: the
        watcher sleeps until the earliest deadline (30 s by default), and meanwhile every call
        adds one (20,000 calls a second would hold 600,000 of them)."""
        heap = self._deadlines
        if len(heap) > 2 * len(self._pending) + 64:
            heap[:] = [(d, c) for d, c in heap if c in self._pending]
            heapq.heapify(heap)

    def _time_out(self, cid: int, pending: _Pending) -> None:
        del self._pending[cid]
        _gone(pending)
        self.kill("hook" if pending.hook else "timeout")
        pending.error = CallTimeout(
            f"call did not finish within {pending.limit:.3g}s; worker killed",
            timeout=pending.limit, plugin=self.spec.plugin_id, function=pending.fn,
        )
        pending.event.set()

    def _give_up(self, cid: int, pending: _Pending) -> None:
        """The caller's own deadline passed, the plugin's has not: the caller gets CallTimeout
        now and the call a Cancel (its ``context.signal`` aborts). The worker is not killed for a
        deadline one caller chose (a respawn per caller's timeout would be anyone's to cause): the
        call keeps its slot until it settles, and if it still runs at the plugin's own deadline
        the worker is killed then; unless its event loop stopped turning (the call spins, and
        nothing else on that worker can be served): then it is killed as soon as that is seen
        (``_cancel_watchdog``; before, a spin held a worker to the plugin's deadline, 30 s by
        default, and a pool of one answered nobody meanwhile)."""
        pending.error = CallTimeout(
            f"no answer within the caller's timeout of {pending.timeout:.3g}s; the call was cancelled "
            f"(the plugin's own limit is {pending.limit:.3g}s)",
            timeout=pending.timeout, plugin=self.spec.plugin_id, function=pending.fn, caller=True,
        )
        pending.error.settled = pending.gone = anyio.Event()  # its concurrency slot is freed then
        pending.event.set()
        heapq.heappush(self._deadlines, (pending.deadline, cid))
        if self._tg is not None:
            self._tg.start_soon(self._send_quietly, p.Cancel(id=cid, reason="the caller's deadline passed"))
            self._tg.start_soon(self._cancel_watchdog, cid, True)

    async def _cancel_watchdog(self, cid: int, only_if_stuck: bool = False) -> None:
        """Kill the worker if call ``cid`` still runs ``cancel_grace`` after its cancel;
        ``only_if_stuck`` (its caller gave up): and its event loop answers no ping within as long."""
        grace = self.spec.limits.cancel_grace
        await anyio.sleep(grace)
        if cid in self._pending and only_if_stuck:
            self._turned = anyio.Event()  # set by the next pong
            if await self.turned(grace):
                return
        if cid in self._pending:
            self.kill("cancel")


def _cap(text: str | None, limit: int) -> str | None:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


async def one_off(spec: WorkerSpec, runtime: Runtime, use: Callable[[Worker], Awaitable[T]],
                  on_log: LogSink | None = None) -> T:
    """Start a worker of ``spec``, run ``use(worker)``, shut the worker down: for a plugin's
    metadata (loading) or one call outside any pool (``validateConfig`` of a plugin not running,
    a station's connection test, whose log lines go to ``on_log``).
    A HostError is raised as itself, never wrapped in the task group's exception group."""
    worker = Worker(spec, runtime, on_log=on_log)
    error: HostError | None = None
    async with anyio.create_task_group() as tg:
        try:
            await tg.start(worker.run)
            try:
                result = await use(worker)
            finally:
                await worker.shutdown()
        except HostError as exc:
            error = exc
    if error is not None:
        raise error
    return result
