"""The HTTP face of a PluginHost (aiohttp, asyncio only): plugin listing, calls, health, and
the Isolate-compatible ``POST /execute`` when enabled.

Every request passes one guard before its handler. The ``Host`` header must name this server
as the client reached it (the connection's own address and port, ``localhost`` on a loopback
one, or a name in ``server.allowed_hosts``): a page whose DNS name was rebound to 127.0.0.1
is the same origin as the API to the browser, so only the name it sends tells it apart. An
``Origin``, when sent, must be one of the same names. With a token configured, reads need the
read or the admin token and changes the admin token, as ``Authorization: Bearer <token>``;
``/healthz*`` and the dashboard's files stay open. ``Runner`` closes connections that do not
deliver a request head within ``server.header_timeout``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import stat
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
from aiohttp import web

from .dashboard import add_routes as add_dashboard_routes
from .errors import (
    MAX_TIMEOUT,
    ApprovalChanged,
    CallTimeout,
    FunctionNotFound,
    GrantRefused,
    HostClosed,
    HostError,
    InvalidArguments,
    InvalidConfig,
    PayloadTooLarge,
    PluginNotFound,
    PluginUnavailable,
    StateError,
)
from .info import json_default
from .logbook import LEVELS
from .metrics import CONTENT_TYPE
from .plugin_host import PluginHost
from .plugins.lifecycle import STARTING

_STATUS = {
    PluginNotFound: 404, FunctionNotFound: 404, InvalidConfig: 400, PayloadTooLarge: 413,
    CallTimeout: 504, PluginUnavailable: 503, HostClosed: 503, GrantRefused: 403, InvalidArguments: 400,
    ApprovalChanged: 409, StateError: 503,
}
_encoder = msgspec.json.Encoder(enc_hook=json_default)
log = logging.getLogger("host.server")
DRAINING = web.AppKey("draining", anyio.Event)  # set when shutdown begins: readiness turns 503


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, type_: str, message: str) -> web.Response:
    return _json({"error": {"type": type_, "message": message}}, status)


def _host_error(exc: HostError) -> web.Response:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 502)
    return _json({"error": exc.to_dict()}, status)


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except (ValueError, RecursionError) as exc:  # (HTTPRequestEntityTooLarge passes on)
        why = f"nested deeper than Python's JSON decoder allows ({exc})" if isinstance(exc, RecursionError) else exc
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"type": "BadRequest", "message": f"invalid JSON: {why}"}}),
            content_type="application/json",
        ) from None


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_READS = ("GET", "HEAD", "OPTIONS")


def _canonical(name: str) -> str:
    """A host name lowercased; an IP literal in its canonical form (IPv4-mapped IPv6 as IPv4)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return name.lower()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def _authority(netloc: str, default_port: int) -> tuple[str, int] | None:
    """``host[:port]`` (an IPv6 literal in brackets) as a canonical (host, port); None when it
    is not one (a path, user info, a bad port)."""
    try:
        parts = urlsplit(f"//{netloc}")
        name, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not name or "@" in netloc or parts.path or parts.query or parts.fragment:
        return None
    return _canonical(name), default_port if port is None else port


class _Names:
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
        found = _authority(netloc, default_port)
        if found is None:
            return False
        name, port = found
        if isinstance(local, tuple):  # TCP: (address, port, ...) of this end of the connection
            address = _canonical(str(local[0]))
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


def _digest(token: str) -> bytes:
    # Compared as digests: equal lengths, so compare_digest's time tells nothing of the token's.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _bearer(request: web.Request, tokens: tuple[bytes, ...]) -> bool:
    """The request carries exactly ``Authorization: Bearer <one of tokens>``."""
    value = request.headers.get("Authorization", "")
    given = _digest(value[len("Bearer "):]) if value.startswith("Bearer ") else b""
    return any([hmac.compare_digest(given, t) for t in tokens])  # a list: every token compared


def _instant(text: str) -> dt.datetime:
    """``2026-11-23T10:00:00Z`` (no zone: UTC) or unix seconds."""
    try:
        return dt.datetime.fromtimestamp(float(text), dt.UTC)
    except ValueError:
        t = dt.datetime.fromisoformat(text)
        return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _flag(request: web.Request, name: str) -> bool:
    """A yes/no query parameter: ``?name=1`` or ``?name=true``."""
    return request.query.get(name, "") in ("1", "true")


def _positive(x: Any, scale: float = 1.0) -> bool:
    """A number above zero and at most MAX_TIMEOUT once divided by ``scale`` (a timeout of 0 or
    less would kill the worker it reached; 1e308 would overflow the clock it is added to)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x / scale <= MAX_TIMEOUT


def create_app(host: PluginHost, *, admin_token: str | None = None, read_token: str | None = None,
               enable_execute: bool = False, max_body: int = 2 * 1024 * 1024,
               allowed_hosts: Iterable[str] = (), via: str = "http") -> web.Application:
    """The API over ``host``. With ``admin_token`` or ``read_token`` set, every route but
    ``/healthz*`` and the dashboard's files needs a token: the admin one to change anything,
    either to read. ``allowed_hosts``: Host names accepted besides the server's own addresses.
    ``via``: who approvals are recorded as made by ("cli" on the control socket)."""
    names = _Names(allowed_hosts)
    admin = (_digest(admin_token),) if admin_token else ()
    readers = admin + ((_digest(read_token),) if read_token else ())

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        local = request.transport.get_extra_info("sockname") if request.transport else None
        netloc = request.headers.get("Host")
        if not names.allow(netloc, 80, local):  # a DNS name rebound to this machine, say
            return _error(403, "Forbidden", f"Host {(netloc or '')[:200]!r} is not an address of this server; "
                          "list the names it is reached by in server.allowed_hosts (--allowed-host)")
        origin = request.headers.get("Origin")
        if origin is not None and not names.allow_origin(origin, local):  # a page elsewhere
            return _error(403, "Forbidden", f"cross-origin request from {origin[:200]!r} refused; "
                          "list the names this server is reached by in server.allowed_hosts")
        # A browser says where a request comes from even when it sends no Origin (an <img> or
        # <script> GET from another site): such a request could not read the answer, but it
        # could make the host work (``/api/balances?refresh=1``), so none is served.
        if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
            return _error(403, "Forbidden", "a request another site's page made is refused (Sec-Fetch-Site)")
        if request.method not in _READS:
            if admin and not _bearer(request, admin):
                return _error(401, "Unauthorized", "admin token required")
        elif readers and request.match_info.route.resource not in public and not _bearer(request, readers):
            return _error(401, "Unauthorized", "a read token or the admin token is required")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _json({"error": {"name": "PayloadTooLarge", "type": "PayloadTooLarge",
                                    "message": f"request body over {max_body} bytes"}}, 413)
        except HostError as exc:
            return _host_error(exc)
        except web.HTTPException as exc:  # aiohttp's own 404/405/400: JSON like every other error
            if exc.content_type == "application/json" or exc.status < 400:
                raise
            return _error(exc.status, exc.reason.replace(" ", ""), f"{request.method} {request.path}: {exc.reason}")

    app = web.Application(middlewares=[guard], client_max_size=max_body)

    def readiness() -> tuple[bool, dict[str, str]]:
        """Ready: serving, and no plugin still starting (one that failed or was disabled is
        settled; it shows in the plugin states, not as a host that is not ready)."""
        states = host.states()
        starting = any(state in STARTING for state in states.values())
        return not app[DRAINING].is_set() and host.running and not starting, states

    async def healthz(request: web.Request) -> web.Response:
        ready, states = readiness()
        return _json({"live": True, "ready": ready, "draining": app[DRAINING].is_set(), "plugins": states},
                     200 if ready else 503)

    async def live(request: web.Request) -> web.Response:
        return _json({"live": True})  # the event loop answers: the process is not wedged

    async def ready(request: web.Request) -> web.Response:
        ok, _ = readiness()
        return _json({"ready": ok, "draining": app[DRAINING].is_set()}, 200 if ok else 503)

    async def list_plugins(request: web.Request) -> web.Response:
        return _json(host.plugins())

    async def get_plugin(request: web.Request) -> web.Response:
        return _json(host.plugin(request.match_info["id"]))

    async def call(request: web.Request) -> web.Response:
        body = await _body(request)
        args = body.get("args", []) if isinstance(body, dict) else None
        if not isinstance(args, list):
            return _error(400, "BadRequest", 'body must be {"args": [...]}')
        timeout = body.get("timeout")
        if timeout is not None and not _positive(timeout):  # float() would raise, 1e400 overflow later
            return _error(400, "BadRequest", "timeout must be a positive number of seconds")
        result = await host.call(request.match_info["id"], request.match_info["fn"], *args,
                                 timeout=float(timeout) if timeout is not None else None)
        return _json({"ok": True, "result": result})

    async def execute(request: web.Request) -> web.Response:
        if not enable_execute:
            return _error(403, "Forbidden", "/execute is disabled; start the server with --enable-execute")
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            return _error(400, "BadRequest", 'body must be {"code": "...", ...}')
        tools = body.get("tools") or []
        # A non-string entry would reach the worker and kill it with a protocol error.
        if not isinstance(body.get("entry") or "", str) or not (
                isinstance(tools, list) and all(isinstance(t, str) for t in tools)):
            return _error(400, "BadRequest", "entry must be a string and tools a list of strings")
        timeout_ms = body.get("timeout")
        if timeout_ms is not None and not _positive(timeout_ms, 1000):
            return _error(400, "BadRequest", "timeout must be a positive number of milliseconds")
        try:
            out = await host.execute(
                body["code"], body.get("input"), entry=body.get("entry") or "default",
                timeout=timeout_ms / 1000 if timeout_ms is not None else None,
                permissions=body.get("permissions"), tools=tools,
            )
        except PayloadTooLarge as exc:
            return _json({"error": {"name": "PayloadTooLarge", "message": exc.message}}, 413)
        resp: dict[str, Any] = {"ok": out.ok}
        if out.ok:
            resp["result"] = out.result
        if out.logs:
            resp["logs"] = out.logs
        resp["duration"] = out.duration
        return _json(resp)

    async def control(request: web.Request) -> web.Response:
        pid, action = request.match_info["id"], request.match_info["action"]
        if action == "restart":
            await host.restart(pid)
        elif action == "reload":
            if not await host.reload(pid):
                info = host.plugin(pid)
                if info.pending_approval:
                    return _error(409, "ApprovalPending",
                                  f"the new version asks for {', '.join(info.pending_approval)} beyond its approved "
                                  f"grants; the old version keeps serving until POST /api/plugins/{info.id}/approve")
                return _error(409, "ReloadFailed", f"{info.reload_error or info.error}; the old version keeps serving")
        elif action == "approve":
            body = await _body(request) if request.can_read_body else {}
            grants = body.get("grants") if isinstance(body, dict) else None
            if grants is not None and not (isinstance(grants, list) and all(isinstance(g, str) for g in grants)):
                return _error(400, "BadRequest", 'body must be {"grants": ["kind: entry", ...]} or empty')
            await host.approve(pid, by=via, grants=grants)
        elif action == "enable":
            await host.enable(pid)
        else:
            await host.disable(pid)
        return _json(host.plugin(pid))

    async def logs(request: web.Request) -> web.Response:
        q = request.query
        level = q.get("level", "debug")
        if level not in LEVELS:
            return _error(400, "BadRequest", f"level must be one of {', '.join(LEVELS)}")
        try:
            after, limit = int(q.get("after", "0")), min(int(q.get("limit", "200")), 1000)
        except ValueError:
            return _error(400, "BadRequest", "after and limit must be integers")
        entries = host.logs(request.match_info["id"], level=level, after=after, limit=limit)
        return _json({"entries": entries, "last": entries[-1].seq if entries else after})

    async def schema(request: web.Request) -> web.Response:
        return _json(host.config_schema(request.match_info["id"]))

    async def get_config(request: web.Request) -> web.Response:
        return _json(host.get_config(request.match_info["id"]))  # secrets masked

    async def put_config(request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            return _error(400, "BadRequest", "body must be the config object")
        return _json(await host.set_config(request.match_info["id"], body, replace=_flag(request, "replace")))

    async def import_config(request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("document"), dict) or not (
                body.get("passphrase") is None or isinstance(body.get("passphrase"), str)):
            return _error(400, "BadRequest", 'body must be {"document": {...}, "passphrase": "..."?, "replace": bool?}')
        return _json(await host.import_config(body["document"], passphrase=body.get("passphrase"),
                                              replace=body.get("replace") is True))

    async def event(request: web.Request) -> web.Response:
        payload = await _body(request) if request.can_read_body else None
        replies = await host.emit(request.match_info["event"], payload, stop_at_first=_flag(request, "first"))
        return _json({"event": request.match_info["event"], "replies": replies})

    async def balances(request: web.Request) -> web.Response:
        return _json(await host.query_balances(refresh=_flag(request, "refresh")))

    async def balance_history(request: web.Request) -> web.Response:
        q = request.query
        try:
            since, until = (_instant(q[k]) if k in q else None for k in ("since", "until"))
            limit = int(q.get("limit", "10000"))
        except ValueError as exc:
            return _error(400, "BadRequest", f"since/until must be ISO 8601 or unix seconds, limit an integer: {exc}")
        points = await host.balance_history(q.get("provider"), since=since, until=until, limit=limit)
        return _json(points)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=host.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app[DRAINING] = anyio.Event()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/healthz/live", live)
    app.router.add_get("/healthz/ready", ready)
    add_dashboard_routes(app.router)
    public = frozenset(app.router.resources())  # the routes above need no token
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/plugins", list_plugins)
    app.router.add_get("/api/plugins/{id}", get_plugin)
    app.router.add_get("/api/plugins/{id}/status", get_plugin)
    app.router.add_post("/api/plugins/{id}/call/{fn}", call)
    app.router.add_post("/api/plugins/{id}/{action:restart|reload|enable|disable|approve}", control)
    app.router.add_get("/api/plugins/{id}/config", get_config)
    app.router.add_get("/api/plugins/{id}/schema", schema)
    app.router.add_get("/api/plugins/{id}/logs", logs)
    app.router.add_put("/api/plugins/{id}/config", put_config)
    app.router.add_post("/api/config/import", import_config)
    app.router.add_post("/api/events/{event}", event)
    app.router.add_get("/api/balances", balances)
    app.router.add_get("/api/balances/history", balance_history)
    app.router.add_post("/execute", execute)
    return app


class _HeadDeadline(web.RequestHandler):
    """aiohttp's connection handler with a deadline on each request head: counted from the
    connection's start, and on a kept-alive connection from the first byte of the next request
    (an idle one is left to keepalive_timeout), the head must be complete within
    ``header_timeout`` seconds or the connection is closed. aiohttp itself reaps only idle
    connections, after an hour: a client that sends half a head, or one byte at a time, would
    hold its connection (and a file descriptor) that long.

    Bytes that arrive while a request is being handled are not timed: the body of that request
    cannot be told from a pipelined next head, which keepalive_timeout then bounds. (aiohttp has
    no hook for this: it reads ``_request_count`` and ``_waiter``, which its own keep-alive check
    uses; tests/security/test_http_hardening.py fails if an upgrade changes them.)"""

    __slots__ = ("_head_timer", "_header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a head is complete: its deadline is met
            self._stop_head_timer()
        elif data and self._head_timer is None and self._awaiting_head():
            self._head_timer = self._loop.call_later(self._header_timeout, self._head_overdue)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        """Waiting for the next request: no request is being handled (aiohttp's own notion of
        an idle connection, as its keep-alive check uses)."""
        return self._waiter is not None and not self._waiter.done()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._awaiting_head():
            log.debug("closing a connection that sent no complete request head within %gs", self._header_timeout)
            self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server with ``_HeadDeadline`` connections."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> web.RequestHandler:
        return _HeadDeadline(self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections must deliver each request head within
    ``header_timeout`` seconds (``server.header_timeout``)."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup and freezes it
        return _Server(plain.request_handler, request_factory=plain.request_factory,
                       handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                       header_timeout=self._header_timeout, **self._kwargs)


class PrivateUnixSite(web.UnixSite):
    """``web.UnixSite`` for a socket only its owner may connect to: created mode 0600 (under a
    umask, so there is no moment when it is open to others), a stale socket file left by a
    crash replaced, and the file removed when the site stops."""

    __slots__ = ("_inode",)

    def __init__(self, runner: web.BaseRunner, path: str, **kwargs: Any) -> None:
        super().__init__(runner, path, **kwargs)
        self._inode: int | None = None

    async def start(self) -> None:
        path = str(self._path)
        _sweep_stale_socket(path)
        old = os.umask(0o177)  # process-wide, but nothing else creates files while serve binds
        try:
            await super().start()
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.stat(path).st_ino

    async def stop(self) -> None:
        await super().stop()
        path = str(self._path)
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(path).st_ino == self._inode:
                os.unlink(path)  # ours still (another server may have replaced it since)


def _sweep_stale_socket(path: str) -> None:
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
