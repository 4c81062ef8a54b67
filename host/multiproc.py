"""``serve --processes N``: N host processes behind one listening socket.

One Python process tops out at a few thousand calls a second whatever the number of workers (the
host's own CPU per call is the limit), while separate host processes scale almost linearly. So a
small parent binds the address once and starts N ordinary ``serve`` processes that inherit the
socket (``--listen-fd``) and accept from its one queue: no SO_REUSEPORT, so no other program of
the same user can bind the port beside them and take a share of the connections.

Each child has its own worker pools and shares the state directory with the others, as the CLI
beside a server already does (configs, stations, switches and approvals are written under a lock
and picked up by every process's rescan; sqlite files are shared). Child 0 serves the control
socket. ``/metrics`` answered by any child is the view of all: each child serves its own on a
private Unix socket in a directory only the parent's user can enter, and the child that answers
adds the others', each sample labelled ``process="K"``.

The parent forwards SIGTERM/SIGINT/SIGHUP as a stop (each child drains its calls as a single server does), restarts
a child that dies (backoff; it gives up after RESTART_LIMIT exits in RESTART_WINDOW seconds), kills
one that stops answering (multiproc_watch.py), and
its children get SIGTERM if it is killed (PR_SET_PDEATHSIG); one that cannot act on it (stopped, wedged) is
woken and, past the drain's time, killed by a guard process (multiproc_guard.py)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from .cli_output import ListenError, UsageError
from .config import ServerConfig
from .http_guard import sweep_stale_socket
from .multiproc_guard import Guard
from .multiproc_watch import JOINING, PEER_TIMEOUT, ask_siblings, watch
from .runtime import private_run_dir
from .sd_notify import Notifier
from .serve_notify import Processes, notifying
from .stop_signals import IGNORED, Stops

if TYPE_CHECKING:
    from .plugin_host import PluginHost

log = logging.getLogger("host.serve")

MAX_PROCESSES = 64
RESTART_LIMIT = 5        # exits of one child within RESTART_WINDOW before the parent gives up
RESTART_WINDOW = 60.0    # seconds
RESTART_BACKOFF = (0.5, 10.0)  # first and longest wait before a child is started again
EXIT_USAGE = 2           # a child that exits 2 found a bad config: with none serving, every one would: stop
EXIT_UNAVAILABLE = 75    # a child that could not start for the state database (EX_TEMPFAIL): see keep()
STOP_MARGIN = 15.0       # seconds past shutdown_grace before a child that has not drained is killed
REAP_MARGIN = 5.0        # seconds, past that, for the parent to kill and reap what is left and exit
EXIT_POLL = 1.0          # seconds between looks at a child whose exit cannot be waited on (no pidfd)
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def process_count(value: str | int) -> int:
    """``--processes``/``[server] processes``: a number from 1 to MAX_PROCESSES, or ``auto`` (one per core)."""
    if value == "auto":
        return max(1, min(MAX_PROCESSES, os.cpu_count() or 1))
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= MAX_PROCESSES:
        raise UsageError(f"--processes (or [server] processes) must be a number from 1 to {MAX_PROCESSES} "
                         f"or auto, got {value!r}")
    return n


def child_argv(argv: Sequence[str]) -> list[str]:
    """The serve command line without ``--processes``, for a child to run as a single server."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--processes":
            skip = True
        elif not arg.startswith("--processes="):
            out.append(arg)
    return out


def listening_socket(srv: ServerConfig) -> socket.socket:
    """The address every child will accept on, bound once here (ListenError when it cannot be)."""
    where = f"unix:{srv.unix_socket}" if srv.unix_socket is not None else f"{srv.host}:{srv.port}"
    try:
        if srv.unix_socket is not None:
            sweep_stale_socket(srv.unix_socket)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)
            try:
                sock.bind(srv.unix_socket)
            finally:
                os.umask(old)
        else:
            infos = socket.getaddrinfo(srv.host or None, srv.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, address = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        raise ListenError.of(where, exc, srv.unix_socket) from None
    sock.set_inheritable(True)
    return sock


def _die_with_parent(parent: int) -> None:  # in the child, between fork and exec
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


class _Child:
    """One slot: the serve process in it now, and when it last exited."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[float] = []
        self.up: subprocess.Popen[bytes] | None = None  # the process that answered /live (it serves)
        self.waits = 0  # starts failed for the state database since it last served

    def serving(self) -> bool:
        return self.proc is not None and self.up is self.proc and self.proc.poll() is None

    def served(self, proc: subprocess.Popen[bytes]) -> None:
        self.up, self.waits = proc, 0

    async def wait(self) -> int:
        assert self.proc is not None
        try:
            fd = os.pidfd_open(self.proc.pid)
        except OSError:  # out of descriptors: ask now and then instead
            while self.proc.poll() is None:
                await anyio.sleep(EXIT_POLL)
            return self.proc.returncode
        try:
            await anyio.wait_readable(fd)
        finally:
            os.close(fd)
        return self.proc.wait()

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


async def supervise(argv: Sequence[str], srv: ServerConfig, count: int, notifier: Notifier | None = None,
                    config_path: str | None = None) -> int:
    """Run ``count`` children serving ``argv`` on one socket until SIGTERM/SIGINT; their exit status.
    ``notifier``: systemd's, told READY=1 once every child is ready (serve_notify.py).
    ``config_path``: host.toml, copied now: every child reads that copy, so that one started
    again reads the file the others were started with, not an edit made since (an edit whose
    typo stopped every process when one child was restarted, or a rate limit that held on
    one process only); an edit is applied by restarting the service."""
    # 0700: only this user reaches the metrics; those of a parent SIGKILLed (named by its pid) swept
    peers = private_run_dir("peers-")
    snapshot: list[str] = []
    if config_path is not None:
        try:
            copy = Path(peers) / "host.toml"
            copy.write_bytes(Path(config_path).read_bytes())
            snapshot = ["--config-snapshot", str(copy)]
        except OSError:  # unreadable now: each child reads the file and says why, as one server would
            pass
    try:
        sock = listening_socket(srv)
    except ListenError:
        shutil.rmtree(peers, ignore_errors=True)
        raise
    try:  # kills a child that cannot act on the SIGTERM of this parent's death (multiproc_guard.py)
        guard = Guard(srv.shutdown_grace + STOP_MARGIN)
    except OSError as exc:
        sock.close()
        shutil.rmtree(peers, ignore_errors=True)
        raise ListenError(f"cannot start the serve processes' guard: {exc.strerror or exc}") from None
    children = [_Child(k) for k in range(count)]
    stopping = anyio.Event()
    outcome = 0
    parent = os.getpid()

    def start(child: _Child) -> None:
        # started again while a sibling serves: it takes connections once its plugins settled
        # (before: the calls it accepted meanwhile got 503 "plugin is loading", a sibling idle)
        again = child.proc is not None and any(c.serving() for c in children if c is not child)
        late = ["--join-late"] if again else []
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "host", *child_argv(argv), "--listen-fd", str(sock.fileno()),
             "--process-index", str(child.index), "--peers-dir", peers, *snapshot, *late],
            pass_fds=(sock.fileno(),), preexec_fn=lambda: _die_with_parent(parent))
        guard.watch(child.proc.pid)
        log.info("serve process %d started (pid %d)", child.index, child.proc.pid)

    async def keep(child: _Child) -> None:
        nonlocal outcome
        while not stopping.is_set():
            try:
                start(child)
            except OSError as exc:  # the fork refused (a pid or memory limit), the interpreter gone
                code, what = None, f"could not be started ({exc.strerror or exc})"
            else:
                code = await child.wait()
                what = f"exited {code}"
            if stopping.is_set():
                return
            now = time.monotonic()
            if any(c.serving() for c in children if c is not child):
                # it cannot serve now (the state database down, a full disk, the key file replaced,
                # a plugin directory gone: a usage error too), its siblings do: giving up would stop
                # them too (their calls on what failed fail typed); it is started again with the
                # backoff, and serves once the fault is gone
                child.waits += 1
                what += (" (the state database cannot be reached; the others serve on)" if code == EXIT_UNAVAILABLE
                         else " (a usage or config error; the others serve on: see its log above)"
                         if code == EXIT_USAGE else " (the others serve on)")
            else:
                child.exits = [t for t in child.exits if now - t < RESTART_WINDOW] + [now]
                if code == EXIT_USAGE or len(child.exits) >= RESTART_LIMIT:
                    why = ("a usage or config error" if code == EXIT_USAGE
                           else f"{len(child.exits)} exits in {RESTART_WINDOW:.0f} s")
                    log.error("serve process %d %s (%s): stopping all", child.index, what, why)
                    outcome = 1 if code in (None, 0, EXIT_UNAVAILABLE) else code
                    stopping.set()
                    return
            tries = min(len(child.exits) + child.waits, 16)  # a long outage: no overflow
            wait = min(RESTART_BACKOFF[1], RESTART_BACKOFF[0] * 2 ** (tries - 1))
            log.warning("serve process %d %s: starting it again in %.1f s", child.index, what, wait)
            with anyio.move_on_after(wait):
                await stopping.wait()

    async def on_signals() -> None:
        # Held until the end: a second Ctrl-C or SIGTERM during the drain is taken here too, as a
        # single server takes it, not by the default handler (which would kill this parent alone,
        # or, for SIGINT, every child mid-call).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *IGNORED) as received:
            async for sig in Stops(received):
                name = signal.Signals(sig).name
                if stopping.is_set():
                    log.info("received %s: still draining the serve processes", name)
                    continue
                log.info("received %s: draining and stopping %d serve processes", name, count)
                stopping.set()

    notifier = notifier or Notifier()
    # a watchdog ping needs one child's /live at least answered within half its interval
    service = Processes([peer_socket(peers, k) for k in range(count)],
                        min(PEER_TIMEOUT, notifier.watchdog / 2) if notifier.watchdog else PEER_TIMEOUT)
    try:
        async with anyio.create_task_group() as tg, notifying(notifier, service) as notice:
            tg.start_soon(on_signals)
            for child in children:
                tg.start_soon(keep, child)
                tg.start_soon(watch, child.index, lambda c=child: None if stopping.is_set() else c.proc,
                              peer_socket(peers, child.index), srv.process_timeout,
                              srv.process_start_timeout, child.served)
            log.info("serving with %d processes on one socket", count)
            await stopping.wait()
            notice.stopping(f"draining {count} serve processes", srv.shutdown_grace + STOP_MARGIN + REAP_MARGIN)
            for child in children:
                child.signal(signal.SIGTERM)
            # the children stop accepting as they drain: with this copy closed too, a new
            # connection is refused at once (before: queued on a socket nobody accepted from any
            # more, then reset once the drain ended)
            sock.close()
            with anyio.move_on_after(srv.shutdown_grace + STOP_MARGIN):
                for child in children:
                    if child.proc is not None and child.proc.poll() is None:
                        await child.wait()
            for child in children:
                if child.proc is not None and child.proc.poll() is None:  # said: its calls were cut short
                    log.warning("process %d (pid %d) did not finish draining within %g s ([server] shutdown_grace): "
                                "killed", child.index, child.proc.pid, srv.shutdown_grace + STOP_MARGIN)
                child.signal(signal.SIGKILL)
            tg.cancel_scope.cancel()
    finally:
        for child in children:
            if child.proc is not None:
                child.signal(signal.SIGKILL)
                child.proc.wait()
        sock.close()
        if srv.unix_socket is not None:
            with contextlib.suppress(OSError):
                os.unlink(srv.unix_socket)
        shutil.rmtree(peers, ignore_errors=True)
        guard.close()
    return outcome


def peer_socket(peers_dir: str, index: int) -> str:
    return os.path.join(peers_dir, f"metrics-{index}.sock")


async def merged_metrics(own: bytes, index: int, peers_dir: str) -> bytes:
    """This process's metrics and every sibling's, each sample labelled with its process."""
    return _render([(index, own.decode()), *await ask_siblings(index, peers_dir, "/metrics")])


def _render(texts: list[tuple[int, str]]) -> bytes:
    """Families merged by name across processes, in the text exposition format."""
    families: dict[str, tuple[str, str, list[Sample]]] = {}
    for k, text in sorted(texts):
        try:
            parsed = list(text_string_to_metric_families(text))
        except ValueError as exc:  # a sibling's answer cut short: the view goes without it
            log.warning("metrics of serve process %d not read: %s", k, exc)
            continue
        for fam in parsed:
            _, _, samples = families.setdefault(fam.name, (fam.type, fam.documentation, []))
            samples.extend(s._replace(labels={**s.labels, "process": str(k)}) for s in fam.samples)
    lines: list[str] = []
    for name, (kind, doc, samples) in families.items():
        if kind == "counter":  # the parser names it without _total; the text format names it as its samples
            name += "_total"
        lines.append(f"# HELP {name} {_escape(doc, help_=True)}")
        lines.append(f"# TYPE {name} {kind}")
        for s in samples:
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in s.labels.items())
            lines.append(f"{s.name}{{{labels}}} {_number(s.value)}")
    return ("\n".join(lines) + "\n").encode()


def _escape(text: str, *, help_: bool = False) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text if help_ else text.replace('"', r"\"")


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else f"{value:.1f}"




def inherited_site(runner: web.BaseRunner, fd: int) -> web.SockSite:
    """A child's site: the socket its parent bound (``--listen-fd``)."""
    return web.SockSite(runner, socket.socket(fileno=fd))


def inherited_address(fd: int) -> tuple[str, int] | None:
    """The (host, port) of the socket the parent bound, before this child accepts on it."""
    with socket.socket(fileno=os.dup(fd)) as sock:
        address = sock.getsockname()
    return (address[0], address[1]) if isinstance(address, tuple) else None


def number_log_lines(index: int) -> None:
    """Start each log line of this serve process with its number, from its first line on."""
    make_record = logging.getLogRecordFactory()

    def numbered(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        if isinstance(record.msg, str):
            record.msg = f"[process {index}] {record.msg}"
        return record

    logging.setLogRecordFactory(numbered)


async def join_siblings(app: web.Application, host: PluginHost, index: int, peers_dir: str,
                        control: web.Application, accepting: Callable[[], bool] = lambda: True) -> web.AppRunner:
    """Serve this process's own part to its siblings, make ``app``'s /metrics, plugin statuses
    and logs the view of all, and have the siblings follow a change made through ``app`` or
    ``control`` (multiproc_views.py)."""
    from .multiproc_views import follow_hook, logs_view, own_routes, plugins_view
    from .serve_notify import plugin_counts
    from .server import FOLLOW, LOGS_VIEW, METRICS_VIEW, PLUGINS_VIEW, PrivateUnixSite, serving_ready

    render = host.metrics.render

    async def own(request: web.Request) -> web.Response:
        return web.Response(body=render(), content_type="text/plain")

    async def live(request: web.Request) -> web.Response:  # the parent's watch (multiproc_watch.py)
        return web.Response(text="ok" if accepting() else JOINING)  # joining: alive, not accepting yet

    async def ready(request: web.Request) -> web.Response:  # the parent's READY=1 waits for each (serve_notify.py)
        ok = accepting() and serving_ready(app, host)
        return web.Response(text=plugin_counts(host.states().values()), status=200 if ok else 503)

    peer_app = web.Application()
    peer_app.router.add_get("/metrics", own)
    peer_app.router.add_get("/live", live)
    peer_app.router.add_get("/ready", ready)
    own_routes(peer_app, host)
    runner = web.AppRunner(peer_app, handle_signals=False)
    await runner.setup()
    await PrivateUnixSite(runner, peer_socket(peers_dir, index)).start()
    app[METRICS_VIEW] = lambda: merged_metrics(render(), index, peers_dir)
    app[LOGS_VIEW] = logs_view(host, index, peers_dir)
    app[PLUGINS_VIEW] = plugins_view(host, index, peers_dir)
    app[FOLLOW] = control[FOLLOW] = follow_hook(index, peers_dir)
    return runner


__all__ = ["PEER_TIMEOUT", "inherited_site", "join_siblings", "merged_metrics", "number_log_lines", "peer_socket",
           "process_count", "supervise"]
