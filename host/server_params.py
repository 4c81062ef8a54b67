"""Query parameters of the HTTP API that bound how much one request reads (host/server.py): a
read token may ask for the logs, the balance history and the alerts, never for all of them at
once."""

from __future__ import annotations

import json

from aiohttp import web

# The most entries one read answers (a larger ``limit`` is cut to it): a plugin's log, the balance
# history (also its default), the balance alerts.
MAX_LOG_ENTRIES, MAX_HISTORY_POINTS, MAX_ALERTS = 1000, 10_000, 1000


def limit_param(request: web.Request, default: int, cap: int) -> int:
    """The ``limit`` query parameter: ``default`` when not given, at most ``cap``; a 400 naming
    it when it is not a whole number of 0 or more (the databases read a negative LIMIT as none)."""
    text = request.query.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.strip().isdigit()):
        message = f"limit must be a whole number from 0 to {cap}, got {text[:40]!r}"
        raise web.HTTPBadRequest(text=json.dumps({"error": {"type": "BadRequest", "message": message}}),
                                 content_type="application/json")
    return min(int(text), cap)


__all__ = ["MAX_ALERTS", "MAX_HISTORY_POINTS", "MAX_LOG_ENTRIES", "limit_param"]
