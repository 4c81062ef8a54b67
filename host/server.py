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
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
from aiohttp import web

from .dashboard import add_routes as add_dashboard_routes
from .errors import (
    ApprovalChanged,
    CallTimeout,
    CircuitOpen,
    ExecuteRefused,
    FunctionNotFound,
    GrantRefused,
    HostClosed,
    HostError,
    InvalidArguments,
    InvalidConfig,
    PayloadTooLarge,
    PluginNotFound,
    PluginUnavailable,
    PolicyStorageError,
    RateLimited,
    SecretsError,
    SpawnFailed,
    StateError,
    StateFileDamaged,
    StationNotFound,
)
from .http_guard import (
    HostNames,
    PrivateUnixSite,
    Runner,
    bearer_ok,
    body_deadline,
    body_refusal,
    expect_with,
    token_digest,
    until_gone,
)
from .logbook import LEVELS
from .metrics import CONTENT_TYPE
from .plugin_host import PluginHost
from .server_packages import add_package_routes, code_refused
from .server_params import (
    JSON,
    MAX_ALERTS,
    MAX_HISTORY_POINTS,
    MAX_LOG_ENTRIES,
    ApproveBody,
    CallBody,
    ExecuteBody,
    ImportBody,
    PrivateNetworkBody,
    StationBody,
    after_param,
    body_of,
    error_doc,
    flag_param,
    host_error_doc,
    instant,
    limit_param,
    shown,
)

__all__ = ["DRAINING", "FOLLOW", "HANDLING", "LOGS_VIEW", "METRICS_VIEW", "PLUGINS_VIEW", "PrivateUnixSite", "Runner", "create_app", "drain", "serving_ready"]

_STATUS = {
    StateFileDamaged: 503,  # before InvalidConfig, which it is too (at start)
    PluginNotFound: 404, FunctionNotFound: 404, StationNotFound: 404, InvalidConfig: 400, PayloadTooLarge: 413,
    CallTimeout: 504, PluginUnavailable: 503, HostClosed: 503, GrantRefused: 403, InvalidArguments: 400,
    ApprovalChanged: 409, StateError: 503, RateLimited: 429, CircuitOpen: 503, ExecuteRefused: 400,
    # the host's own storage or keys failing is no error of the plugin's (502): unavailable, try later
    SecretsError: 503, PolicyStorageError: 503, SpawnFailed: 503,
}
log = logging.getLogger("host.server")
DRAINING = web.AppKey("draining", anyio.Event)  # set when shutdown begins: readiness turns 503
# the tasks handling a request now (``drain`` cancels those past the grace: each answers 503)
HANDLING = web.AppKey("handling", set)
# /metrics of several serve processes (serve --processes): this one's and its siblings'
METRICS_VIEW = web.AppKey("metrics_view", Callable[[], Awaitable[bytes]])
# a plugin's log over every serve process (multiproc_views.py): (id, level, after, limit) -> (entries, last)
LOGS_VIEW = web.AppKey("logs_view", Callable[[str, str, int, int], Awaitable[tuple[list[Any], int]]])
# /api/plugins (None) and /api/plugins/{id} over every serve process (multiproc_views.py)
PLUGINS_VIEW = web.AppKey("plugins_view", Callable[[str | None], Awaitable[list[Any]]])
# a change made through this serve process, followed by its siblings (multiproc_views.py)
FOLLOW = web.AppKey("follow", Callable[[web.Request], Awaitable[None]])


def serving_ready(app: web.Application, host: PluginHost) -> bool:
    """Ready, as /healthz/ready says it (and systemd's READY=1, serve_notify.py): serving, and no
    plugin still starting (one that failed or was disabled is settled; it shows in the plugin
    states, not as a host that is not ready)."""
    return not app[DRAINING].is_set() and host.ready


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=JSON.encode(data), status=status, content_type="application/json")


def _error(status: int, type_: str, message: str) -> web.Response:
    return _json(error_doc(type_, message), status)


def _gone() -> web.Response:
    """The answer to a client that hung up before it (nginx's 499): written to nobody, logged."""
    return _error(499, "ClientClosedRequest", "the client closed the connection; the work was cancelled")


def _host_error(exc: HostError) -> web.Response:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 502)
    return _json(host_error_doc(exc), status)


_READS = ("GET", "HEAD", "OPTIONS")


async def drain(runner: web.AppRunner, grace: float) -> None:
    """Stop accepting, give the requests being handled ``grace`` seconds to finish, then
    cancel those still running: each answers 503 (the guard) before its connection closes.
    (aiohttp's own shutdown would close their connections with no answer at all.)"""
    runner.app[DRAINING].set()
    for site in list(runner.sites):
        await site.stop()
    handling: set[asyncio.Task[Any]] = runner.app[HANDLING]
    with anyio.move_on_after(grace):
        while handling:
            await anyio.sleep(0.05)
    for task in list(handling):
        task.cancel()
    with anyio.move_on_after(1.0):  # their answers written
        while handling:
            await anyio.sleep(0.01)


def create_app(host: PluginHost, *, admin_token: str | None = None, read_token: str | None = None,
               enable_execute: bool = False, max_body: int = 2 * 1024 * 1024,
               allowed_hosts: Iterable[str] = (), via: str = "http", body_timeout: float = 30.0) -> web.Application:
    """The API over ``host``. With ``admin_token`` or ``read_token`` set, every route but
    ``/healthz*`` and the dashboard's files needs a token: the admin one to change anything,
    either to read. ``allowed_hosts``: Host names accepted besides the server's own addresses.
    ``via``: who approvals are recorded as made by ("cli" on the control socket).
    ``body_timeout``: seconds a request's body may take to arrive (then the connection closes)."""
    names = HostNames(allowed_hosts)
    caps: dict[Any, int] = {}  # routes taking bodies larger than max_body (packages): their cap
    admin = (token_digest(admin_token),) if admin_token else ()
    readers = admin + ((token_digest(read_token),) if read_token else ())

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if (refusal := body_refusal(request, caps.get(request.match_info.route.resource, max_body))) is not None:
            response = _error(*refusal)
            response.force_close()  # the body is not read: nothing more on this connection
            return response
        overdue = body_deadline(request, body_timeout)
        task = asyncio.current_task()
        handling = request.app[HANDLING]
        handling.add(task)
        try:
            return await checked(request, handler)
        except web.HTTPException:  # aiohttp's own answers that are not errors (checked passed them on)
            raise
        except ConnectionResetError as exc:  # the client went, or its body was overdue (body_deadline closed it)
            # The request's body stream keeps this very exception, and raising it through the
            # handler gave it a traceback holding the handler's frames: a cycle through the
            # request's partly read body (2 MiB each) that only a full collection frees, so 150
            # clients that never finished their bodies held 250 MB more each round (helper-99).
            exc.__traceback__ = None
            log.debug("%s %s: the connection closed before the request was read", request.method, request.path[:200])
            return _error(408, "RequestTimeout", "the request's body did not arrive")  # to nobody: it is closed
        except asyncio.CancelledError:  # drain: a request past shutdown_grace still gets an answer
            if not request.app[DRAINING].is_set() or task is None:
                raise
            task.uncancel()
            return _error(503, "HostClosed", "the server stopped before this request finished "
                          "(within [server] shutdown_grace); send it again")
        except Exception:  # a bug of ours: one JSON answer, the traceback in the log (never to the client)
            log.exception("%s %s failed", request.method, request.path[:200])
            return _error(500, "InternalError", "the server failed on this request; its log says why")
        finally:
            handling.discard(task)
            if overdue is not None:
                overdue.cancel()

    async def checked(request: web.Request, handler: Any) -> web.StreamResponse:
        if (refusal := refused(request)) is not None:
            return refusal
        try:
            response = await handler(request)
            if request.method not in _READS and response.status < 400 and (follow := request.app.get(FOLLOW)):
                await follow(request)  # serve --processes: the siblings have it before the client hears
            return response
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "PayloadTooLarge", f"request body over {max_body} bytes")
        except HostError as exc:
            return _host_error(exc)
        except web.HTTPException as exc:  # aiohttp's own 404/405/400: JSON like every other error
            if exc.content_type == "application/json" or exc.status < 400:
                raise
            return _error(exc.status, exc.reason.replace(" ", ""), f"{request.method} {request.path}: {exc.reason}")

    async def expect(request: web.Request) -> web.StreamResponse | None:
        """A request with ``Expect``, which aiohttp answers before any middleware runs: judged
        as ``guard`` judges it before ``100 Continue`` is sent (before: to anyone, then a 401 the
        client waited on), and any other expectation a JSON 417 (before: text/plain, no Host check)."""
        refusal = refused(request)
        if refusal is None and (size := body_refusal(request, caps.get(request.match_info.route.resource, max_body))):
            refusal = _error(*size)
        if refusal is None and request.headers.get("Expect", "").lower() != "100-continue":
            refusal = _error(417, "ExpectationFailed", f"Expect: {request.headers['Expect'][:100]!r} is not "
                             "supported (only 100-continue)")
        if refusal is not None:
            refusal.force_close()  # the body is not read: nothing more on this connection
            return refusal
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own handler: the answer's size starts after it
        return None

    def refused(request: web.Request) -> web.Response | None:
        """The answer to a request this server does not serve (another Host or Origin, another
        site's page, no token where one is needed), else None."""
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
            if admin and not bearer_ok(request, admin):
                return _error(401, "Unauthorized", "admin token required")
        elif readers and request.match_info.route.resource not in public and not bearer_ok(request, readers):
            return _error(401, "Unauthorized", "a read token or the admin token is required")
        return None

    app = web.Application(middlewares=[guard], client_max_size=max_body)

    def readiness() -> tuple[bool, dict[str, str]]:
        return serving_ready(app, host), host.states()

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
        view = request.app.get(PLUGINS_VIEW)  # serve --processes: all of them
        return _json(host.plugins() if view is None else await view(None))

    async def get_plugin(request: web.Request) -> web.Response:
        if (view := request.app.get(PLUGINS_VIEW)) is not None:
            return _json((await view(request.match_info["id"]))[0])
        return _json(host.plugin(request.match_info["id"]))

    async def call(request: web.Request) -> web.Response:
        body: CallBody = await body_of(request, CallBody, for_js="args")
        with until_gone(request) as gone:  # the client hung up: the call is cancelled
            result = await host.call(request.match_info["id"], request.match_info["fn"], *body.args,
                                     timeout=body.timeout)
        if gone.cancel_called:
            return _gone()
        return shown({"ok": True, "result": result}, host.masked, ("result",))  # it may echo ctx.config

    async def execute(request: web.Request) -> web.Response:
        if not enable_execute:
            return _error(403, "Forbidden", "/execute is disabled; start the server with --enable-execute")
        body: ExecuteBody = await body_of(request, ExecuteBody, for_js="input")
        try:
            with until_gone(request) as gone:  # the client hung up: the execution is cancelled
                out = await host.execute(
                    body.code, body.input, entry=body.entry or "default",
                    timeout=body.timeout / 1000 if body.timeout is not None else None,
                    permissions=body.permissions, tools=body.tools, language=body.language, by=via,
                )
        except PayloadTooLarge as exc:
            return _error(413, "PayloadTooLarge", exc.message)
        if gone.cancel_called:
            return _gone()
        resp: dict[str, Any] = {"ok": out.ok}
        if out.ok:
            resp["result"] = out.result
        elif (exc := next((e for e in reversed(out.logs) if e.level == "exception"), None)) is not None:
            # seed 001's clients read result.error.name / .message / .stack of a failed execution
            resp["error"] = {"name": exc.name, "message": exc.message, **({"stack": exc.stack} if exc.stack else {})}
        if out.logs:
            resp["logs"] = out.logs
        resp["duration"] = out.duration
        return _json(await host.format_execute(resp, out))

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
                serving = info.state in ("running", "degraded")  # else disabled or stopped meanwhile: nothing serves
                return _error(409, "ReloadFailed", f"{info.reload_error or info.error or f'the plugin is {info.state}'}"
                              + ("; the old version keeps serving" if serving else ""))
        elif action == "approve":
            approval: ApproveBody = await body_of(request, ApproveBody)
            await host.approve(pid, by=via, grants=approval.grants)
        elif action == "enable":
            await host.enable(pid, by=via)
        else:
            await host.disable(pid, by=via)
        return _json(host.plugin(pid))

    async def logs(request: web.Request) -> web.Response:
        q = request.query
        level = q.get("level", "debug")
        if level not in LEVELS:
            return _error(400, "BadRequest", f"level must be one of {', '.join(LEVELS)}")
        after, limit = after_param(request), limit_param(request, 200, MAX_LOG_ENTRIES)
        if (view := request.app.get(LOGS_VIEW)) is not None:  # serve --processes: all of them
            entries, last = await view(request.match_info["id"], level, after, limit)
        else:
            entries = host.logs(request.match_info["id"], level=level, after=after, limit=limit)
            last = entries[-1].seq if entries else after
        return _json({"entries": entries, "last": last})

    async def schema(request: web.Request) -> web.Response:
        return _json(host.config_schema(request.match_info["id"]))

    async def get_config(request: web.Request) -> web.Response:
        return _json(host.get_config(request.match_info["id"]))  # secrets masked

    async def private_network(request: web.Request) -> web.Response:
        body: PrivateNetworkBody = await body_of(request, PrivateNetworkBody)
        await host.allow_private_network(request.match_info["id"], body.allow, by=via)
        return _json(host.plugin(request.match_info["id"]))

    async def grant_override(request: web.Request) -> web.Response:
        """The operator's narrowing of the plugin's grants (plugins/overrides.py)."""
        pid, overrides = request.match_info["id"], host.grant_overrides
        if request.method == "GET":
            return _json(overrides.get(pid))
        body = None if request.method == "DELETE" else await body_of(request, dict[str, Any])
        return _json(await overrides.set(pid, body, by=via))

    async def reset_config(request: web.Request) -> web.Response:
        return _json(await host.reset_config(request.match_info["id"], by=via))

    async def put_config(request: web.Request) -> web.Response:
        values: dict[str, Any] = await body_of(request, dict[str, Any])
        return _json(await host.set_config(request.match_info["id"], values, replace=flag_param(request, "replace")))

    async def import_config(request: web.Request) -> web.Response:
        body: ImportBody = await body_of(request, ImportBody)
        return _json(await host.import_config(body.document, passphrase=body.passphrase, replace=body.replace))

    async def event(request: web.Request) -> web.Response:
        payload = await body_of(request, for_js=True) if request.can_read_body else None  # as JSON.parse reads it
        # ?first=1, or the name the Python method gives it (helper-106: ?stop_at_first=1 was ignored)
        first = any(flag_param(request, name) for name in ("first", "stop_at_first", "stopAtFirst"))
        replies = await host.emit(request.match_info["event"], payload, stop_at_first=first)
        return shown({"event": request.match_info["event"], "replies": replies}, host.masked,  # as a call's answer
                      ("replies", "*", "value"), ("replies", "*", "error", "message"))

    async def balances(request: web.Request) -> web.Response:
        return _json(await host.query_balances(refresh=flag_param(request, "refresh")))

    async def balance_alerts(request: web.Request) -> web.Response:
        limit = limit_param(request, MAX_ALERTS, MAX_ALERTS)
        return _json(await host.balance_alerts(request.query.get("provider"), limit=limit))

    async def balance_history(request: web.Request) -> web.Response:
        q = request.query
        try:
            since, until = (instant(q[k]) if k in q else None for k in ("since", "until"))
            limit = limit_param(request, MAX_HISTORY_POINTS, MAX_HISTORY_POINTS)
        except ValueError as exc:
            return _error(400, "BadRequest", f"since/until must be ISO 8601 or unix seconds, limit an integer: {exc}")
        points = await host.balance_history(q.get("provider"), since=since, until=until, limit=limit)
        return _json(points)

    async def list_stations(request: web.Request) -> web.Response:
        await host.stations.settled()
        return _json(host.stations.list())

    async def add_station(request: web.Request) -> web.Response:
        b: StationBody = await body_of(request, StationBody)
        if b.script is not None and (refusal := code_refused(host.config, via, bool(admin),
                                                             "a station's usage script (code the host runs)")):
            return refusal
        return _json(await host.stations.add(b.name, plugin=b.plugin, script=b.script, title=b.title,
                                             low_balance=b.lowBalance, config=b.config), 201)

    async def station_config(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if request.method == "GET":
            await host.stations.settled()
            return _json(host.stations.get_config(name))  # secrets masked
        values: dict[str, Any] = await body_of(request, dict[str, Any])
        return _json(await host.stations.set_config(name, values, replace=flag_param(request, "replace")))

    async def remove_station(request: web.Request) -> web.Response:
        return _json(await host.stations.remove(request.match_info["name"]))

    async def test_station(request: web.Request) -> web.Response:
        return _json(await host.stations.test(request.match_info["name"]))

    async def metrics(request: web.Request) -> web.Response:
        view = request.app.get(METRICS_VIEW)
        body = await view() if view is not None else host.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app[DRAINING] = anyio.Event()
    app[HANDLING] = set()
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
    app.router.add_delete("/api/plugins/{id}/config", reset_config)
    app.router.add_post("/api/plugins/{id}/private-network", private_network)
    for method in ("GET", "PUT", "DELETE"):
        app.router.add_route(method, "/api/plugins/{id}/permissions", grant_override)
    app.router.add_post("/api/config/import", import_config)
    app.router.add_post("/api/events/{event}", event)
    app.router.add_get("/api/balances", balances)
    app.router.add_get("/api/balances/history", balance_history)
    app.router.add_get("/api/balances/alerts", balance_alerts)
    app.router.add_get("/api/stations", list_stations)
    app.router.add_post("/api/stations", add_station)
    app.router.add_route("GET", "/api/stations/{name}/config", station_config)
    app.router.add_route("PUT", "/api/stations/{name}/config", station_config)
    app.router.add_delete("/api/stations/{name}", remove_station)
    app.router.add_post("/api/stations/{name}/test", test_station)
    app.router.add_post("/execute", execute)
    caps.update(add_package_routes(app.router, host.packages, via, guarded=bool(admin)))  # install, update, uninstall
    expect_with(app, expect)
    return app


