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


def _serve(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The file whole, every time (a few KB: read again only when it changed). aiohttp's
    FileResponse answered Range and conditional headers itself, after the API's error handling:
    `Range: bytes=0-1,2-3` got a 416 and `If-Match` a 412 with an empty body that is no JSON
    (helper-99); a range or a condition here is ignored, as HTTP lets a server do."""
    path, headers = HERE / name, {**HEADERS, "Content-Type": FILES[name]}
    cached: list = [None, b""]  # (mtime_ns, size), bytes

    async def handler(request: web.Request) -> web.Response:
        st = path.stat()
        if cached[0] != (st.st_mtime_ns, st.st_size):
            cached[:] = [(st.st_mtime_ns, st.st_size), path.read_bytes()]
        return web.Response(body=cached[1], headers=headers)

    return handler


__all__ = ["add_routes"]
