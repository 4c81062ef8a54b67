"""The control socket: ``serve`` announces itself in its state directory as a Unix socket
(``<state_dir>/control.sock``, 0600 in a 0700 directory, so only the host's own user can
connect) serving the HTTP API without tokens. A CLI command that changes state (``config set``,
``config import``, ``approve``) sends it there when a server runs on the same state directory,
so the server applies it at once and validates it with the running plugin; with no server it
acts on the state directory itself, whose stores take a lock and compare and swap."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from .errors import HostError
from .http_guard import unix_address

log = logging.getLogger("host.control")

SOCKET = "control.sock"
CONNECT_TIMEOUT = 2.0   # seconds to reach a server that announced itself
PROBE_TIMEOUT = 5.0     # seconds for its /healthz/live: a live event loop answers at once
REQUEST_TIMEOUT = 120.0  # a config change restarts the plugin's workers: allow for it


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET


class RemoteError(HostError):
    """The running server refused the request; ``type`` is its error type."""

    def __init__(self, message: str, *, type: str, status: int) -> None:
        super().__init__(message)
        self.type, self.status = type, status

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


class ServerUnresponsive(HostError):
    """A server announced itself on the state directory's control socket, took the connection,
    and did not answer: stopped (SIGSTOP), wedged or overloaded. Not "no server": starting
    another on the same state directory, or acting on its files behind it, would be wrong."""


class ControlClient:
    """Requests to the server behind a control socket."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(self, method: str, path: str, body: Any = None, *, accept: tuple[int, ...] = ()) -> Any:
        """The decoded JSON answer; RemoteError for an error answer (unless its status is in
        ``accept``: /healthz says 503 with the plugins' states while they start)."""
        try:
            async with self._session.request(method, f"http://localhost{path}", json=body) as r:
                doc = await r.json(content_type=None)
        except TimeoutError:  # aiohttp's too
            raise ServerUnresponsive(f"the server on the control socket did not answer {method} {path} within "
                                     f"{REQUEST_TIMEOUT:g} s (look at its log)") from None
        except (aiohttp.ClientError, ValueError) as exc:  # cut mid-answer; an answer that is no JSON
            raise RemoteError(f"the server on the control socket gave no answer to {method} {path} that could be "
                              f"read ({type(exc).__name__}: {str(exc)[:200]}); is it stopping, or of another "
                              "version?", type="ControlError", status=0) from None
        if r.status >= 400 and r.status not in accept:
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise RemoteError(str(err.get("message", doc)), type=str(err.get("type") or err.get("name")),
                              status=r.status)
        return doc


@contextlib.asynccontextmanager
async def control_client(state_dir: Path) -> AsyncIterator[ControlClient | None]:
    """A client of the server that serves ``state_dir``, or None when none answers there."""
    path = socket_path(state_dir)
    if not path.is_socket():
        yield None
        return
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT)
    with unix_address(str(path)) as address:
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=address), timeout=timeout) as session:
            yield await _probe(session, state_dir, path)


async def _probe(session: aiohttp.ClientSession, state_dir: Path, path: Path) -> ControlClient | None:
    """The client of the server that answers on ``session``, or None when none does."""
    try:
        async with session.get("http://localhost/healthz/live",
                               timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT, connect=CONNECT_TIMEOUT)) as r:
            alive = r.status == 200
    except TimeoutError:  # aiohttp's timeouts too: connected, and no answer
        pid = _owner(path)
        raise ServerUnresponsive(
            f"a server serves {state_dir} (its control socket {path} took the connection) but did not answer "
            f"within {PROBE_TIMEOUT:g} s: it may be stopped (SIGSTOP), wedged or overloaded; look at that process"
            f"{f' (pid {pid})' if pid else ''} (its log, `kill -CONT`, a restart) rather than start another on this "
            "state directory") from None
    except (aiohttp.ClientError, OSError):
        if _queue_full(path):  # a live server that accepts nothing: not one that died (helper-111)
            pid = _owner(path)
            raise ServerUnresponsive(
                f"a server serves {state_dir} but its control socket {path} accepts no connection (its queue is "
                f"full): it may be stopped (SIGSTOP) or wedged; look at that process{f' (pid {pid})' if pid else ''}"
                " rather than start another on this state directory") from None
        alive = False  # a socket left by a server that died
    return ControlClient(session) if alive else None


def _queue_full(path: Path) -> bool:
    """Whether a process listens on ``path`` though aiohttp could not talk to it: its listen queue
    full (a connect answers EAGAIN; aiohttp's own attempt ends in EAGAIN or ENOTCONN), or it takes
    a connection now. A dead server's socket refuses (ECONNREFUSED)."""
    import errno
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            with unix_address(str(path)) as address:
                s.connect(address)
        except OSError as exc:
            return exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    return True  # it took this connection: a live listener that answered aiohttp's no better


def _owner(path: Path) -> int | None:
    """The pid of the process listening on the control socket (SO_PEERCRED), if it can be told:
    with `serve --processes`, one of them, which ``status`` named no pid of (helper-100)."""
    import socket
    import struct

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            pid, _, _ = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            return pid or None
    except OSError:
        return None


async def start_control_site(runner: web.BaseRunner, state_dir: Path, *, quiet: bool = False) -> web.BaseSite | None:
    """Serve ``runner`` (an app without tokens) on the control socket; None, with a warning
    (unless ``quiet``), when another live server already serves this state directory there."""
    from .server import PrivateUnixSite

    site = PrivateUnixSite(runner, str(socket_path(state_dir)))
    try:
        await site.start()
    except OSError as exc:
        if not quiet:
            log.warning("control socket %s: not served (%s): is another server using this state directory? "
                        "This one takes it over once that one stops", socket_path(state_dir), exc.strerror or exc)
        return None
    return site


async def take_over_control_site(runner: web.BaseRunner, state_dir: Path, every: float = 0.5) -> None:
    """Serve the control socket once the server holding it is gone, trying every ``every``
    seconds (two serves on one state directory: before, the second never took it over when the
    first stopped, so the CLI said no server was serving while it served; with 5 s between
    tries, `status` said so for 3-5 s after each stop). Until cancelled."""
    while True:
        await anyio.sleep(every)
        if await start_control_site(runner, state_dir, quiet=True) is not None:
            log.info("control socket %s: served by this server now", socket_path(state_dir))
            return


__all__ = ["ControlClient", "RemoteError", "ServerUnresponsive", "control_client", "socket_path", "start_control_site",
           "take_over_control_site"]
