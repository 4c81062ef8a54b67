"""The dashboard: one page of plain JavaScript over the HTTP API (no build step, nothing from
another origin), served at ``/`` with its script and stylesheet under ``/dashboard/``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "packages.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page runs only its own script and talks only to its own server; with no inline script
# allowed, a plugin's text that slipped into the markup still could not run.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_routes(router: web.UrlDispatcher) -> None:
    """``GET /`` and ``GET /dashboard/<file>`` for the dashboard's files: a fixed route per
    file, so that nothing else on disk can be asked for."""
    router.add_get("/", _serve("index.html"))
    for name in FILES:
        router.add_get(f"/dashboard/{name}", _serve(name))


def _serve(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    path, headers = HERE / name, {**HEADERS, "Content-Type": FILES[name]}

    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path, headers=headers)

    return handler


__all__ = ["add_routes"]
