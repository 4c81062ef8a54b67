"""The HTTP face of a PluginHost (aiohttp, asyncio only): plugin listing, calls, health, and
the Isolate-compatible ``POST /execute`` when enabled."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import math
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
from aiohttp import web

from .dashboard import add_routes as add_dashboard_routes
from .errors import (
    CallTimeout,
    FunctionNotFound,
    HostClosed,
    HostError,
    InvalidConfig,
    PayloadTooLarge,
    PluginNotFound,
    PluginUnavailable,
)
from .info import json_default
from .lifecycle import STARTING
from .logbook import LEVELS
from .metrics import CONTENT_TYPE
from .plugin_host import PluginHost

_STATUS = {
    PluginNotFound: 404, FunctionNotFound: 404, InvalidConfig: 400, PayloadTooLarge: 413,
    CallTimeout: 504, PluginUnavailable: 503, HostClosed: 503,
}
_encoder = msgspec.json.Encoder(enc_hook=json_default)
DRAINING = web.AppKey("draining", anyio.Event)  # set when shutdown begins: readiness turns 503


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _error(status: int, type_: str, message: str) -> web.Response:
    return _json({"error": {"type": type_, "message": message}}, status)


def _host_error(exc: HostError) -> web.Response:
    status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 502)
    return _json({"error": exc.to_dict()}, status)


async def _body(request: web.Request) -> Any:
    try:
        raw = await request.read()
        return json.loads(raw) if raw else {}
    except ValueError as exc:  # (HTTPRequestEntityTooLarge is no ValueError: it passes on)
        raise web.HTTPBadRequest(
            text=json.dumps({"error": {"type": "BadRequest", "message": f"invalid JSON: {exc}"}}),
            content_type="application/json",
        ) from None


def _same_origin(request: web.Request) -> bool:
    """No Origin header (curl, scripts, the CLI), or the page came from this server. Browsers
    send Origin with every cross-site POST/PUT, so another site cannot drive the API from an
    operator's browser, token or no token."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == request.host


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


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def create_app(host: PluginHost, *, admin_token: str | None = None, enable_execute: bool = False,
               max_body: int = 2 * 1024 * 1024) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        mutating = request.method not in ("GET", "HEAD", "OPTIONS")
        if mutating and not _same_origin(request):  # a web page elsewhere posting to this API
            return _error(403, "Forbidden", "cross-origin requests may not change anything")
        if admin_token and mutating:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), admin_token.encode()):
                return _error(401, "Unauthorized", "admin token required")
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
        if timeout is not None and not _finite(timeout):  # float() would raise, 1e400 overflow later
            return _error(400, "BadRequest", "timeout must be a number of seconds")
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
        try:
            out = await host.execute(
                body["code"], body.get("input"), entry=body.get("entry") or "default",
                timeout=timeout_ms / 1000 if _finite(timeout_ms) else None,
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
                return _error(409, "ReloadFailed", f"{info.reload_error or info.error}; the old version keeps serving")
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
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/plugins", list_plugins)
    app.router.add_get("/api/plugins/{id}", get_plugin)
    app.router.add_get("/api/plugins/{id}/status", get_plugin)
    app.router.add_post("/api/plugins/{id}/call/{fn}", call)
    app.router.add_post("/api/plugins/{id}/{action:restart|reload|enable|disable}", control)
    app.router.add_get("/api/plugins/{id}/config", get_config)
    app.router.add_get("/api/plugins/{id}/schema", schema)
    app.router.add_get("/api/plugins/{id}/logs", logs)
    app.router.add_put("/api/plugins/{id}/config", put_config)
    app.router.add_post("/api/events/{event}", event)
    app.router.add_get("/api/balances", balances)
    app.router.add_get("/api/balances/history", balance_history)
    app.router.add_post("/execute", execute)
    add_dashboard_routes(app.router)
    return app
