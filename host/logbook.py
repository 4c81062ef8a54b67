"""The recent log of each plugin, what ``--debug`` streams: its workers' console lines and
the lifecycle of the plugin and its workers, kept in memory (the newest ``per_plugin``
entries of each) for the dashboard's log view and ``GET /api/plugins/{id}/logs``."""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque

import msgspec

from .logs import LEVELS, LOGGING_LEVEL

MAX_MESSAGE = 4096  # characters of one entry kept: 1000 entries of a plugin stay a few MB at most
_RANK = {name: LEVELS.index(logging.getLevelName(level).lower()) for name, level in LOGGING_LEVEL.items()}


class JournalEntry(msgspec.Struct):
    seq: int             # increasing over the host: ``after=seq`` reads what came since
    time: float          # unix time
    level: str           # debug, info, warning or error
    plugin: str
    worker: str | None   # "ID#N", or None for the plugin itself
    kind: str            # "console" or "lifecycle"
    message: str


def level_of(name: str) -> str:
    """A console or logging level name as one of LEVELS (``log`` is info, ``warn`` warning)."""
    return LEVELS[_RANK.get(name.lower(), 1)]


class LogBook:
    def __init__(self, per_plugin: int = 1000) -> None:
        self.per_plugin = per_plugin
        self._entries: dict[str, deque[JournalEntry]] = {}
        self._seq = itertools.count(1)

    def add(self, plugin: str, level: str, message: str, *, worker: str | None = None,
            kind: str = "lifecycle") -> None:
        book = self._entries.get(plugin)
        if book is None:
            book = self._entries[plugin] = deque(maxlen=self.per_plugin)
        if len(message) > MAX_MESSAGE:
            message = f"{message[:MAX_MESSAGE]}… [{len(message) - MAX_MESSAGE} more characters]"
        book.append(JournalEntry(next(self._seq), time.time(), level_of(level), plugin, worker, kind, message))

    def read(self, plugin: str, *, level: str = "debug", after: int = 0, limit: int = 200) -> list[JournalEntry]:
        """The newest ``limit`` entries of ``plugin`` at ``level`` or above, after ``after``,
        oldest first."""
        least = _RANK[level_of(level)]
        picked = [e for e in self._entries.get(plugin, ()) if e.seq > after and _RANK[e.level] >= least]
        return picked[-limit:] if limit > 0 else []
