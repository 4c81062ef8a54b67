"""What an HTTP client reads of ``serve --processes N``: the view of all N, not of the one that
accepted its connection. Each process keeps its own plugins' log rings; the one that answers a
read asks its siblings over their private sockets (as for ``/metrics``, multiproc.py) and merges.

The log: every process numbers its entries in microseconds of the one wall clock (logbook.py),
so one cursor serves them all. Each process says, beside its entries, its watermark: a seq none
of its later entries will be at or below. The merged answer holds the entries up to the lowest
watermark and gives that as ``last``, so reading ``after=last`` next time loses no entry a slower
process adds meanwhile and reads none twice. A sibling that does not answer within PEER_TIMEOUT
(restarting, wedged) is left out of that read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from .errors import HostError
from .info import json_default
from .logbook import JournalEntry
from .plugin_host import PluginHost

LogsView = Callable[[str, str, int, int], Awaitable[tuple[list[JournalEntry], int]]]
_encoder = msgspec.json.Encoder(enc_hook=json_default)


class _Logs(msgspec.Struct):
    entries: list[JournalEntry]
    watermark: int


def own_routes(peer_app: web.Application, host: PluginHost) -> None:
    """This process's own part, served to its siblings on its private socket."""

    async def logs(request: web.Request) -> web.Response:
        q = request.query
        try:  # one synchronous step: no entry can come between the read and the watermark
            entries = host.logs(request.match_info["id"], level=q["level"], after=int(q["after"]),
                                limit=int(q["limit"]))
        except (HostError, KeyError, ValueError):  # not here (yet), a bad query: no part of it here
            return web.Response(status=404)
        return web.Response(body=_encoder.encode(_Logs(entries, host.logbook.watermark())),
                            content_type="application/json")

    peer_app.router.add_get("/logs/{id}", logs)


def logs_view(host: PluginHost, index: int,
              siblings: Callable[[str], Awaitable[list[tuple[int, str]]]]) -> LogsView:
    """``GET /api/plugins/{id}/logs`` over every process: (entries, last)."""

    async def view(name: str, level: str, after: int, limit: int) -> tuple[list[JournalEntry], int]:
        own = host.logs(name, level=level, after=after, limit=limit)  # an unknown plugin: 404 as for one
        marks = [host.logbook.watermark()]
        entries = [msgspec.structs.replace(e, process=index) for e in own]
        query = urlencode({"level": level, "after": after, "limit": limit})
        for k, text in await siblings(f"/logs/{quote(name, safe='')}?{query}"):
            try:
                got = msgspec.json.decode(text, type=_Logs)
            except msgspec.DecodeError:  # cut short: left out, as a sibling that did not answer
                continue
            marks.append(got.watermark)
            entries += [msgspec.structs.replace(e, process=k) for e in got.entries]
        last = max(after, min(marks))
        entries = sorted((e for e in entries if e.seq <= last), key=lambda e: e.seq)
        return entries[-limit:] if limit > 0 else [], last

    return view


__all__ = ["LogsView", "logs_view", "own_routes"]
