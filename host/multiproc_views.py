"""What an HTTP client reads of ``serve --processes N``: the view of all N, not of the one that
accepted its connection. Each process keeps its own plugins' log rings; the one that answers a
read asks its siblings over their private sockets (as for ``/metrics``, multiproc.py) and merges.

A plugin's status (``/api/plugins``, ``/api/plugins/{id}``): its workers from every process,
each with its ``process``; the counters summed; latency p50 and error rate over the recent calls
of all; the circuit ``open`` when it is open in any; ``processes`` lists each process's part
(state, circuit, calls, workers, latency, error rate). State, version and error are those of the
process that answered (``processes`` says where another differs, as during a reload's rescan).

The log: every process numbers its entries in microseconds of the one wall clock (logbook.py),
so one cursor serves them all. Each process says, beside its entries, its watermark: a seq none
of its later entries will be at or below. The merged answer holds the entries up to the lowest
watermark and gives that as ``last``, so reading ``after=last`` next time loses no entry a slower
process adds meanwhile and reads none twice. A sibling that does not answer within PEER_TIMEOUT
(restarting, wedged) is left out of that read."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import msgspec
from aiohttp import web

from .errors import HostError
from .info import PluginInfo, ProcessPart, json_default
from .logbook import JournalEntry
from .metrics import window_stats
from .multiproc_watch import PEER_TIMEOUT, ask_siblings

if TYPE_CHECKING:
    from .plugin_host import PluginHost

log = logging.getLogger("host.serve")
FOLLOW_TIMEOUT = 10.0  # seconds a change's answer waits at most for the siblings to have followed it
# POSTs that change no shared state (calls, events, code, a station's test): nothing to follow
_NO_CHANGE = frozenset({"/api/plugins/{id}/call/{fn}", "/api/events/{event}", "/execute", "/api/stations/{name}/test"})
# packages change the plugin directories: followed by a rescan of the files, hot reload on or off
_FILES = frozenset({"/api/plugins/install", "/api/plugins/{id}/update", "/api/plugins/{id}"})
_SUMMED = ("calls", "crashes", "restarts", "timeouts", "circuit_opens", "circuit_rejected", "rate_limited",
           "rate_delayed", "retries", "queued", "running", "cache_hits", "cache_stale", "cache_misses",
           "cache_refreshes", "egress_requests", "egress_bytes_in", "egress_bytes_out", "egress_refused")
_CIRCUIT = ("closed", "half_open", "open")  # the worst of the processes' shows
Recent = list[tuple[float, bool]]
PluginsView = Callable[[str | None], Awaitable[list[PluginInfo]]]
LogsView = Callable[[str, str, int, int], Awaitable[tuple[list[JournalEntry], int]]]
_encoder = msgspec.json.Encoder(enc_hook=json_default)


class _Plugins(msgspec.Struct):
    plugins: list[PluginInfo]
    recent: dict[str, Recent]


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

    async def plugins(request: web.Request) -> web.Response:
        name = request.query.get("id")
        try:
            infos = host.plugins() if name is None else [host.plugin(name)]
        except HostError:  # not here (yet): no part of it here
            return web.Response(status=404)
        recent = {i.id: host.metrics.recent(i.id) for i in infos}
        return web.Response(body=_encoder.encode(_Plugins(infos, recent)), content_type="application/json")

    async def follow(request: web.Request) -> web.Response:
        """A sibling's change: do the same here (restart, reload) or read the shared state now."""
        what, plugin = request.query.get("do", "rescan"), request.query.get("plugin", "")
        try:
            if what == "restart":
                await host.restart(plugin)
            elif what == "reload":
                await host.reload(plugin)
            else:
                await host.rescan(files=what == "rescan-files")
        except HostError as exc:  # not here, or it failed here: said, as this process's own state
            log.warning("following a sibling's %s of %r: %s", what, plugin, exc)
            return web.Response(status=409)
        return web.Response(text="ok")

    peer_app.router.add_get("/logs/{id}", logs)
    peer_app.router.add_post("/follow", follow)
    peer_app.router.add_get("/plugins", plugins)


def follow_hook(index: int, peers_dir: str) -> Callable[[web.Request], Awaitable[None]]:
    """What a successful change through this process has the siblings do before its answer goes
    out, so the client's next request, whichever process takes it, finds the change served: a
    restart or reload of a plugin is done by each too; any other change (a config, a switch, an
    approval, a station, a package) makes each read the shared state now, not at its next rescan
    (there is none with hot reload off). A sibling that has not followed within FOLLOW_TIMEOUT
    (wedged, restarting: it reads the state when it starts) does not hold the answer longer."""

    async def follow(request: web.Request) -> None:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else ""
        if route in _NO_CHANGE:
            return
        action = request.match_info.get("action")
        what = action if action in ("restart", "reload") else "rescan-files" if route in _FILES else "rescan"
        query = urlencode({"do": what, "plugin": request.match_info.get("id", "")})
        await ask_siblings(index, peers_dir, f"/follow?{query}", method="POST", timeout=FOLLOW_TIMEOUT)

    return follow


def plugins_view(host: PluginHost, index: int, peers_dir: str) -> PluginsView:
    """``GET /api/plugins`` (name None) and ``/api/plugins/{name}`` over every process."""

    async def view(name: str | None) -> list[PluginInfo]:
        own = host.plugins() if name is None else [host.plugin(name)]  # unknown here: 404 as for one
        parts: dict[tuple[str, str | None], list[tuple[int, PluginInfo, Recent]]] = {}
        for info in own:
            parts[(info.id, info.version)] = [(index, info, host.metrics.recent(info.id))]
        silent: list[int] = []
        for k, text in await ask_siblings(index, peers_dir, "/plugins" + ("" if name is None else f"?{urlencode({'id': name})}"),
                                          silent=silent):
            try:
                got = msgspec.json.decode(text, type=_Plugins)
            except (msgspec.DecodeError, msgspec.ValidationError):  # cut short: left out
                continue
            for info in got.plugins:
                key = (info.id, info.version)
                if name is None or key in parts:  # one plugin: the version this process serves
                    parts.setdefault(key, []).append((k, info, got.recent.get(info.id, [])))
        merged = [merge(p) for p in parts.values()]
        for info in merged:  # said, not left out (helper-100: a stopped process simply vanished)
            info.processes += [ProcessPart(k, "unanswered", f"process {k} did not answer within {PEER_TIMEOUT:g} s "
                                           "(starting again, or its event loop held)", "unknown", 0, 0, None, None)
                               for k in silent]
            info.processes.sort(key=lambda p: p.process)
        return merged

    return view


def merge(parts: list[tuple[int, PluginInfo, Recent]]) -> PluginInfo:
    """One plugin version's status over the processes that have it, the first one's as the base."""
    base = parts[0][1]
    out = msgspec.structs.replace(base, workers=[], spares=[], worker_exits={}, processes=[])
    for field in _SUMMED:
        setattr(out, field, sum(getattr(info, field) for _, info, _ in parts))
    entries = [info.cache_entries for _, info, _ in parts]
    out.cache_entries = None if None in entries else sum(e or 0 for e in entries)
    pooled: Recent = []
    for k, info, recent in parts:
        out.workers += [msgspec.structs.replace(w, process=k) for w in info.workers]
        out.spares += info.spares
        for reason, n in info.worker_exits.items():
            out.worker_exits[reason] = out.worker_exits.get(reason, 0) + n
        if _CIRCUIT.index(info.circuit if info.circuit in _CIRCUIT else "open") > _CIRCUIT.index(out.circuit):
            out.circuit = info.circuit
        pooled += recent
        out.processes.append(ProcessPart(k, info.state, info.error, info.circuit, info.calls, len(info.workers),
                                         info.latency_p50_ms, info.error_rate))
    out.latency_p50_ms, out.error_rate = window_stats(pooled)
    out.processes.sort(key=lambda p: p.process)
    return out


def logs_view(host: PluginHost, index: int, peers_dir: str) -> LogsView:
    """``GET /api/plugins/{id}/logs`` over every process: (entries, last)."""

    async def view(name: str, level: str, after: int, limit: int) -> tuple[list[JournalEntry], int]:
        own = host.logs(name, level=level, after=after, limit=limit)  # an unknown plugin: 404 as for one
        marks = [host.logbook.watermark()]
        entries = [msgspec.structs.replace(e, process=index) for e in own]
        query = urlencode({"level": level, "after": after, "limit": limit})
        for k, text in await ask_siblings(index, peers_dir, f"/logs/{quote(name, safe='')}?{query}"):
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


__all__ = ["FOLLOW_TIMEOUT", "LogsView", "PluginsView", "follow_hook", "logs_view", "merge", "own_routes", "plugins_view"]
