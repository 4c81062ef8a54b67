"""The recent log of each plugin, what ``--debug`` streams: its workers' console lines and
the lifecycle of the plugin and its workers, kept in memory (the newest ``per_plugin``
entries of each) for the dashboard's log view and ``GET /api/plugins/{id}/logs``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import InvalidArguments, PluginError, where_in
from .logs import LEVELS, LOGGING_LEVEL, Throttle, escape, plugin_extra

if TYPE_CHECKING:
    from . import protocol as p
    from .plugins.lifecycle import PluginEvent
    from .worker import Worker

plugin_log = logging.getLogger("host.plugin")
LogListener = Callable[[str, "Worker", "p.Log"], None]

MAX_MESSAGE = 4096  # characters of one entry kept: 1000 entries of a plugin stay a few MB at most
_RANK = {name: LEVELS.index(logging.getLevelName(level).lower()) for name, level in LOGGING_LEVEL.items()}


def listen(listeners: list, fn: Any, what: str) -> Callable[[], None]:
    """Add ``fn`` to ``listeners``; the remover it returns may be called more than once. A ``fn``
    that is not callable is refused now (InvalidArguments), not at each event to come."""
    if not callable(fn):
        raise InvalidArguments(f"{what}: expected a callable, got {type(fn).__name__}")
    listeners.append(fn)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            listeners.remove(fn)
    return remove


class JournalEntry(msgspec.Struct):
    # increasing over the host: ``after=seq`` reads what came since. Microseconds of the wall
    # clock (never less than the last one + 1), so the logs of the ``serve --processes`` siblings
    # are on one scale and one cursor reads them all (multiproc_views.py)
    seq: int
    time: float          # unix time
    level: str           # debug, info, warning or error
    plugin: str
    worker: str | None   # "ID#N", or None for the plugin itself
    kind: str            # "console" or "lifecycle"
    message: str
    process: int | None = None  # the ``serve --processes`` process whose log it is (None: one process)


def level_of(name: str) -> str:
    """A console or logging level name as one of LEVELS (``log`` is info, ``warn`` warning)."""
    return LEVELS[_RANK.get(name.lower(), 1)]


class LogBook:
    def __init__(self, per_plugin: int = 1000) -> None:
        self.per_plugin = per_plugin
        self._entries: dict[str, deque[JournalEntry]] = {}
        self._last = 0  # the newest entry's seq

    def add(self, plugin: str, level: str, message: str, *, worker: str | None = None,
            kind: str = "lifecycle") -> None:
        book = self._entries.get(plugin)
        if book is None:
            book = self._entries[plugin] = deque(maxlen=self.per_plugin)
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}… [{len(message) - MAX_MESSAGE} more characters]"
        now = time.time()
        self._last = max(self._last + 1, int(now * 1_000_000))
        book.append(JournalEntry(self._last, now, level_of(level), plugin, worker, kind, message))

    def note(self, plugin: str, level: str, text: str) -> None:
        """Something the operator should read about a plugin: its log, and the host's."""
        self.add(plugin, level, text)
        logging.getLogger("host").log(logging.WARNING if level == "warning" else logging.INFO,
                                      "plugin %s: %s", plugin, text, extra={"plugin": plugin})

    def watermark(self) -> int:
        """A seq no later entry will be at or below: the newest one's, or now's if later."""
        return max(self._last, int(time.time() * 1_000_000))

    def read(self, plugin: str, *, level: str = "debug", after: int = 0, limit: int = 200) -> list[JournalEntry]:
        """The newest ``limit`` entries of ``plugin`` at ``level`` or above, after ``after``,
        oldest first."""
        if not isinstance(level, str) or level.lower() not in _RANK:  # a typo ("eror") read as info before
            raise InvalidArguments(f"level: {level!r} is not one of {', '.join(sorted(set(_RANK)))}")
        least = _RANK[level_of(level)]
        picked = [e for e in self._entries.get(plugin, ()) if e.seq > after and _RANK[e.level] >= least]
        return picked[-limit:] if limit > 0 else []


class LogRouter:
    """Where a worker's log lines and a plugin's lifecycle go: the plugin's log book (the
    dashboard, ``--debug``), the ``host.plugin`` logger, and every listener."""

    def __init__(self, book: LogBook) -> None:
        self.book = book
        self._listeners: list[LogListener] = []
        self._warn = Throttle(plugin_log)  # failed calls, in the host's log (call_failed)

    def add_listener(self, fn: LogListener) -> Callable[[], None]:
        return listen(self._listeners, fn, "add_log_listener")

    def event(self, event: PluginEvent) -> None:
        """A plugin's state change, in its log."""
        what = {"reloaded": "reloaded", "reload_failed": "reload failed, the old version keeps serving",
                "approval_pending": f"version {event.version} waits for approval"}.get(
            event.kind, event.state if event.previous is None else f"{event.previous} -> {event.state}")
        level = "warning" if event.state == "error" or event.kind in ("reload_failed", "approval_pending") else "info"
        self.book.add(event.plugin, level, what + (f" ({event.reason})" if event.reason else ""))

    def call_failed(self, plugin: str, fn: str, exc: PluginError) -> None:
        """A call the plugin failed, with where it threw: in its log (the dashboard) at error,
        every one, and in the host's log (serve's output) at warning, once every 10 s for each
        plugin, function and kind of error with a count of the others (a full disk or a dropped
        table fails every call alike: over a thousand identical lines in 10 s)."""
        message = f"{fn} failed: {exc}" + (f" (at {exc.where})" if exc.where else "")
        self.book.add(plugin, "error", message)
        self._warn.warning(f"{plugin}\0{fn}\0{exc.error_type or exc.name}", "[plugin:%s] %s", plugin, escape(message),
                           extra=plugin_extra(plugin, plugin))

    def worker_event(self, worker: Worker, level: str, text: str) -> None:
        """A worker's lifecycle (started, exited and why), in its plugin's log."""
        self.book.add(worker.spec.plugin_id, level, text, worker=worker.describe())

    def line(self, worker: Worker, msg: p.Log) -> None:
        """A worker's log line, its secrets already redacted by the worker (WorkerSpec.redact);
        an uncaught error says where it was thrown."""
        if msg.level == "exception" and (where := where_in(msg.stack)) and where not in msg.message:
            msg = msgspec.structs.replace(msg, message=f"{msg.message} (at {where})")
        if worker.spec.role != "execute":  # ad-hoc code's output belongs to its caller alone
            self.book.add(worker.spec.plugin_id, msg.level, msg.message, worker=worker.describe(), kind="console")
        level = LOGGING_LEVEL.get(msg.level, logging.INFO)
        if plugin_log.isEnabledFor(level):
            plugin_log.log(level, "[plugin:%s] %s", worker.describe(), msg.message, extra=worker.log_extra)
        for fn in list(self._listeners):
            try:  # an embedder's bug: said, and the worker whose frames are being read goes on
                fn(worker.spec.plugin_id, worker, msg)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # a Cancelled raised by the listener too: it broke the frame reader
                logging.getLogger("host").exception("log listener %r failed", fn)
