"""The server's transport guard (server.py): which Host and Origin names are this server's
(DNS rebinding), bearer tokens compared in constant time, deadlines on request heads and
bodies, a cap on open connections, request bodies taken only as sent (never inflated), errors
of clients answered in JSON and logged in one line, work for a client that hung up cancelled
(``until_gone``), and the owner-only Unix socket site."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import stat
import struct
import termios
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import anyio
from aiohttp import web
from aiohttp.streams import StreamReader

from .server_params import error_doc

log = logging.getLogger("host.server")
IDENTITY = ("", "identity")  # the only Content-Encoding a request body may have
SLOW_HEAD = 1.0  # seconds a connection may take over its head before it may give its slot up
OVERDUE_CHECK = 0.25  # seconds between checks of a head overdue while its connection still answers
SEND_STEP = 64 * 1024  # bytes of a waiting answer a client must take every send_timeout seconds
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def canonical(name: str) -> str:
    """A host name lowercased; an IP literal in its canonical form (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return name.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def authority(netloc: str, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (an IPv6 literal in brackets) as a canonical (host, port); None when it
    is not one (a path, user info, a bad port)."""
    try:
        parts = urlsplit(f"//{netloc}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or "@" in netloc or parts.path or parts.query or parts.fragment:
        return None
    return canonical(name), default_port if port is None else port


class HostNames:
    """The names a request may call this server by (against DNS rebinding): the address and
    port its connection reached (an IP literal), loopback names when that address is loopback,
    any loopback name on a Unix socket, and ``allowed_hosts`` as written (a reverse proxy's
    public name, with its port unless it is the default one)."""

    _MEMO = 256  # verdicts remembered (clients send few distinct names; a flood of others is judged afresh)

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.extra = frozenset(h.lower() for h in allowed_hosts)
        self._memo: dict[tuple[str, int, Any], bool] = {}

    def allow(self, netloc: str | None, default_port: int, local: Any) -> bool:
        if not netloc:
            return False
        key = (netloc, default_port, local)
        verdict = self._memo.get(key)
        if verdict is None:
            verdict = self._judge(netloc, default_port, local)
            if len(self._memo) < self._MEMO:
                self._memo[key] = verdict
        return verdict

    def _judge(self, netloc: str, default_port: int, local: Any) -> bool:
        if netloc.lower() in self.extra:
            return True
        found = authority(netloc, default_port)
        if found is None:
            return False
        name, port = found
        if isinstance(local, tuple):  # TCP: (address, port, ...) of this end of the connection
            address = canonical(str(local[0]))
            return port == local[1] and (name == address or (
                name in LOOPBACK_NAMES and ipaddress.ip_address(address).is_loopback))
        return isinstance(local, str) and name in LOOPBACK_NAMES  # a Unix socket's path

    def allow_origin(self, origin: str, local: Any) -> bool:
        """An ``Origin`` (sent by browsers) of a page served by this server, by the same names."""
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1", say
            return False
        return parts.scheme in ("http", "https") and self.allow(
            parts.netloc, 443 if parts.scheme == "https" else 80, local)


def token_digest(token: str) -> bytes:
    # Compared as digests: equal lengths, so compare_digest's time tells nothing of the token's.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def bearer_ok(request: web.Request, tokens: tuple[bytes, ...]) -> bool:
    """The request carries exactly ``Authorization: Bearer <one of tokens>``."""
    value = request.headers.get("Authorization", "")
    given = token_digest(value[len("Bearer "):]) if value.startswith("Bearer ") else b""
    return any([hmac.compare_digest(given, t) for t in tokens])  # a list: every token compared


def body_refusal(request: web.BaseRequest, cap: int) -> tuple[int, str, str] | None:
    """(status, type, message) for a request body refused before a byte of it is read: one
    compressed (``Content-Encoding``: the server never inflates a body, so a small one cannot
    cost it a gigabyte), or announced larger than ``cap``."""
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in IDENTITY and request.body_exists:
        return 415, "UnsupportedMediaType", (f"request bodies are taken as sent, not {encoding[:40]!r}: "
                                             "send it without Content-Encoding")
    if (size := request.content_length) is not None and size > cap:
        return 413, "PayloadTooLarge", f"request body over {cap} bytes"
    return None


def body_deadline(request: web.BaseRequest, seconds: float) -> asyncio.TimerHandle | None:
    """Close the connection unless the request's whole body has arrived within ``seconds``
    (cancel the handle once answered): a client that announces a body and sends it slowly, or
    not at all, must not hold a connection and its handler for long."""
    if not request.body_exists or request.content.is_eof():
        return None

    def overdue() -> None:
        if not request.content.is_eof() and (handler := request.protocol) is not None:
            log.debug("closing a connection whose request body did not arrive within %gs", seconds)
            handler.force_close()
    return asyncio.get_running_loop().call_later(seconds, overdue)


def connection_cap(configured: int) -> int:
    """``server.max_connections``, within what the process may open: the soft limit on open
    files raised to the hard one first (systemd's default soft limit is 1024), then at most
    half of it, the rest left to the workers' sockets and pipes, the state files and logs."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (OSError, ValueError):
        return configured
    if soft == resource.RLIM_INFINITY or configured <= soft // 2:
        return configured
    log.warning("server.max_connections = %d, but the process may open %d files: at most %d connections "
                "at once (raise the limit, e.g. LimitNOFILE= in the systemd unit)", configured, soft, soft // 2)
    return max(1, soft // 2)


class HeadDeadline(web.RequestHandler):
    """aiohttp's connection handler with a deadline on each request head: counted from the
    connection's start, and on a kept-alive connection from the first byte of the next request
    (an idle one is left to keepalive_timeout), the head must be complete within
    ``header_timeout`` seconds or the connection is closed. aiohttp itself reaps only idle
    connections, after an hour: a client that sends half a head, or one byte at a time, would
    hold its connection (and a file descriptor) that long.

    Past ``max_connections`` open at once, a new connection closes the oldest one not being
    answered (idle kept-alive, or still sending its head after ``SLOW_HEAD``: a client opens
    another when it needs one), or itself when there is none: idle or slow clients cannot take every file descriptor
    the host has (its workers need some too), nor every slot.

    An answer the client does not take is not held: while the connection's write buffer is
    over its high-water mark (aiohttp then waits for it to drain), the client must take
    ``SEND_STEP`` bytes of it (or all that is left) every ``send_timeout`` seconds, else the
    connection is aborted and the buffer freed. Before, a client that sent a request and never
    read held the whole answer in the host's memory for as long as it kept the connection
    open (20 such clients of a 6 MiB answer: +240 MiB), past every other deadline.

    A request aiohttp cannot parse is answered in JSON like every other error and logged in
    one debug line (not a traceback at ERROR for each: a client could fill the log).

    Bytes that arrive while a request is being handled are timed as a next head once that
    request's whole body is in (before, they are its body, whose own deadline is
    ``body_deadline``); a head overdue while its connection is still answering the last
    request is closed as soon as that answer is out (checked every ``OVERDUE_CHECK`` seconds).
    The start of a next head that comes in one read with a whole request before it is left to
    keepalive_timeout: aiohttp's parser does not tell that it holds such bytes.
    (aiohttp has no hook for this: it reads ``_request_count``, ``_waiter`` and ``_messages``,
    which its own keep-alive check and request loop use;
    tests/security/test_http_hardening.py fails if an upgrade changes them.)"""

    __slots__ = ("_body", "_body_counted", "_born", "_head_timer", "_header_timeout", "_max_connections",
                 "_send_timeout", "_send_timer", "_sent_left", "on_lost")

    def __init__(self, manager: web.Server, *, header_timeout: float, max_connections: int,
                 send_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._send_timeout = send_timeout
        self._send_timer: asyncio.TimerHandle | None = None
        self._sent_left = 0  # the write buffer's size when the send timer was last set
        self._head_timer: asyncio.TimerHandle | None = None
        # the payload of the last request head parsed (its body), and whether its length is known
        # (Content-Length: its bytes are the data's; chunked framing is not counted)
        self._body: StreamReader | None = None
        self._body_counted = False
        self.on_lost: set[Callable[[], object]] = set()  # called once the connection is gone (until_gone)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._born = self._loop.time()
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)
        open_now = self._manager._connections  # in the order they were made
        if len(open_now) > self._max_connections:
            # idle kept-alive, or still sending a head after SLOW_HEAD seconds: none is being answered
            # (a slow head must not keep a slot a client about to send a whole request could use;
            # one just accepted has not had time to send its head, it is not slow yet)
            old = self._loop.time() - SLOW_HEAD
            idle = [h for h in open_now if h is not self and isinstance(h, HeadDeadline) and h._awaiting_head()
                    and (h._head_timer is None or h._born < old)]
            victim = idle[0] if idle else self  # the oldest: connections are kept in order
            log.debug("%d connections open (server.max_connections): closing %s", len(open_now),
                      "the longest idle one" if idle else "the new one")
            victim.force_close()

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        # the body the last head announced, if it is still coming, and what of it came before these bytes
        body = self._body if self._body is not None and not self._body.is_eof() else None
        had = body.total_bytes if body is not None else 0
        super().data_received(data)
        if self._request_count != heads:  # a head is complete: its deadline is met
            self._stop_head_timer()
            if self._messages:
                message, self._body = self._messages[-1]
                self._body_counted = not getattr(message, "chunked", True)
        elif data and self._head_timer is None and self._next_head_bytes(data, body, had):
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None and self.transport is not None:
            self._sent_left = self._waiting(self.transport)
            self._send_timer = self._loop.call_later(self._send_timeout, self._send_overdue)

    @staticmethod
    def _waiting(transport: asyncio.Transport) -> int:
        """Bytes of answers the client has not taken: the transport's buffer and the kernel's
        send queue (which may hold megabytes and frees room for the transport only in steps)."""
        size = transport.get_write_buffer_size()
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError, TypeError):
            size += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        return size

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_timer()

    def _send_overdue(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is None or not self._paused:
            return
        left = self._waiting(transport)
        if self._sent_left - left >= min(SEND_STEP, self._sent_left):  # it reads, if slowly: another window
            self._sent_left = left
            self._send_timer = self._loop.call_later(self._send_timeout, self._send_overdue)
            return
        log.debug("aborting a connection whose client took under %d of the %d bytes waiting for it in %gs "
                  "(server.send_timeout)", SEND_STEP, left, self._send_timeout)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError, AttributeError, ValueError):  # a reset: the kernel drops its queue too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()  # close() would wait for the buffer to drain, which is what does not happen

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        self._stop_send_timer()
        super().connection_lost(exc)
        lost, self.on_lost = self.on_lost, set()
        for callback in lost:
            callback()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        why = str(message or exc or "")[:300]
        log.debug("bad HTTP request from %s: %s", request.remote, why)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already")
        resp = web.json_response(error_doc("BadRequest", f"bad HTTP request: {why}"), status=status)
        resp.force_close()
        return resp

    def _awaiting_head(self) -> bool:
        """Waiting for the next request: no request is being handled (aiohttp's own notion of
        an idle connection, as its keep-alive check uses)."""
        return self._waiter is not None and not self._waiter.done()

    def _next_head_bytes(self, data: bytes, open_body: StreamReader | None, had: int) -> bool:
        """Whether ``data`` (no head completed in it) holds the start of a next request's head:
        aiohttp waits for one; or the last request's body was whole before these bytes came
        (``open_body`` None), so they cannot be body (pipelined while it is answered, or in the
        moment between its answer and aiohttp's going back to wait: a client that reads an answer
        and writes at once lands there); or they completed ``open_body``, of a known length, which
        held ``had`` bytes before, and went on past it. Bytes of a body, however it is read
        (before its handler runs, by it, by aiohttp's lingering read of one it left), are not
        timed: ``body_deadline`` is theirs."""
        if self._awaiting_head() or open_body is None:
            return True
        return self._body_counted and open_body.is_eof() and len(data) > open_body.total_bytes - had

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._awaiting_head():
            log.debug("closing a connection that sent no complete request head within %gs", self._header_timeout)
            self.force_close()
        else:  # a head begun while the last request is still answered: overdue once that is done
            self._head_timer = self._loop.call_later(min(self._header_timeout, OVERDUE_CHECK), self._head_overdue)


@contextlib.contextmanager
def until_gone(request: web.BaseRequest) -> Iterator[anyio.CancelScope]:
    """A cancel scope the client's hanging up cancels (its ``cancel_called`` then says so): a
    call or an execution stops when nobody waits for its answer, through the call's own cancel
    path (the worker told, killed after ``cancel_grace`` if it runs on), instead of holding its
    worker and its concurrency slot to its deadline while the client retries. aiohttp's own
    ``handler_cancellation`` would cancel every handler so, a change to a config or a package
    half made too; this is for the handlers that only wait on plugin code. A connection not
    made by ``Runner`` (``HeadDeadline``) is not watched."""
    handler = request.protocol
    with anyio.CancelScope() as scope:
        if isinstance(handler, HeadDeadline):
            if handler.transport is None:  # gone already, before the work began
                scope.cancel()
            handler.on_lost.add(scope.cancel)
        try:
            yield scope
        finally:
            if isinstance(handler, HeadDeadline):
                handler.on_lost.discard(scope.cancel)


class DeadlineServer(web.Server):
    """aiohttp's low-level server with ``HeadDeadline`` connections."""

    def __init__(self, *args: Any, header_timeout: float, max_connections: int, send_timeout: float = 30.0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._send_timeout = send_timeout

    def __call__(self) -> web.RequestHandler:
        return HeadDeadline(self, loop=self._loop, header_timeout=self._header_timeout,
                            max_connections=self._max_connections, send_timeout=self._send_timeout, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections must deliver each request head within
    ``header_timeout`` seconds (``server.header_timeout``), at most ``max_connections`` of
    them open at once, idle ones kept ``keepalive_timeout`` seconds, answers taken at a pace
    (``send_timeout``), bodies never inflated."""

    __slots__ = ("_header_timeout", "_max_connections", "_send_timeout")

    def __init__(self, app: web.Application, *, header_timeout: float, max_connections: int = 1024,
                 keepalive_timeout: float = 30.0, send_timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=keepalive_timeout, auto_decompress=False, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._send_timeout = send_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return DeadlineServer(plain.request_handler, request_factory=plain.request_factory,
                       handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                       header_timeout=self._header_timeout, max_connections=self._max_connections,
                       send_timeout=self._send_timeout, **self._kwargs)


class PrivateUnixSite(web.UnixSite):
    """``web.UnixSite`` for a socket only its owner may connect to: created mode 0600 (under a
    umask, so there is no moment when it is open to others), a stale socket file left by a
    crash replaced, one a live server listens on refused (EADDRINUSE: asyncio alone would
    replace it too, taking that server's path), and the file removed when the site stops."""

    __slots__ = ("_inode",)

    def __init__(self, runner: web.BaseRunner, path: str, **kwargs: Any) -> None:
        super().__init__(runner, path, **kwargs)
        self._inode: int | None = None

    async def start(self) -> None:
        path = str(self._path)
        with unix_address(path) as address:  # a path longer than an AF_UNIX address: through its directory
            sweep_stale_socket(address)
            if os.path.lexists(path):  # a live server's: asyncio would replace it and take its path
                raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE), path)
            old = os.umask(0o177)  # process-wide, but nothing else creates files while serve binds
            self._path = address
            try:
                await super().start()
            finally:
                self._path = path
                os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.stat(path).st_ino

    async def stop(self) -> None:
        await super().stop()
        path = str(self._path)
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(path).st_ino == self._inode:
                os.unlink(path)  # ours still (another server may have replaced it since)


def expect_with(app: web.Application, handler: Callable[[web.Request], Any]) -> None:
    """Every request with ``Expect`` goes to ``handler`` (which aiohttp calls before any
    middleware), also one for no route (404) or another method (405): aiohttp makes their routes
    per request, with its own handler, which sends ``100 Continue`` to anyone."""
    resolve = app.router.resolve

    async def resolved(request: web.Request) -> Any:
        match = await resolve(request)
        match.route._expect_handler = handler  # type: ignore[attr-defined]
        return match

    app.router.resolve = resolved  # type: ignore[method-assign]


SUN_PATH_MAX = 107  # bytes of a Unix socket's path bind() and connect() take (sun_path, its NUL aside)


@contextlib.contextmanager
def unix_address(path: str) -> Iterator[str]:
    """``path`` as bind() and connect() take it: itself, or, when it is longer than an AF_UNIX
    address holds (a state directory deep in a home directory), the same file named through
    /proc/self/fd of its directory, held open for the block. Before, such a server served no
    control socket, and the CLI said no server was serving."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def sweep_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; anything else is left for bind to
    refuse (EADDRINUSE), a file that is not a socket never removed."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
        except OSError:
            pass


__all__ = ["HostNames", "PrivateUnixSite", "Runner", "bearer_ok", "body_deadline", "body_refusal", "connection_cap",
           "expect_with", "unix_address",
           "token_digest", "until_gone"]
