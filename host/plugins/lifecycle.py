"""Plugin lifecycle: the states one installed plugin version goes through, and the events a
Python app can subscribe to.

    discovered → loaded → running ⇄ degraded
                       ↘ error      running → disabled / stopped (unloaded)

With ``HostConfig.load = "background"``, a plugin the manifest cache does not know is `loading`
(between discovered and loaded) while a worker reads it after the host started (loading.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectSendStream

from ..errors import HostClosed, StateError
from ..logbook import listen
from ..logs import plugin_extra
from ..pool import Pool
from .discovery import PluginSource
from .manifest import Manifest
from .state_retry import note_failure

log = logging.getLogger("host.lifecycle")



class State(StrEnum):
    """A plugin version's state (a str: it compares, hashes and serialises as its value)."""

    DISCOVERED = "discovered"
    LOADED = "loaded"
    RUNNING = "running"
    DEGRADED = "degraded"    # serving, but its healthCheck failed
    DISABLED = "disabled"
    STOPPED = "stopped"
    ERROR = "error"
    PENDING = "pending"      # a version asking for grants beyond the approved ones waits for the operator
    LOADING = "loading"      # read in the background after the host started (HostConfig.load)


STATES = tuple(State)
SERVING = frozenset({State.RUNNING, State.DEGRADED})  # takes calls
STARTING = frozenset({State.DISCOVERED, State.LOADING, State.LOADED})  # not settled yet: the host is not ready while any plugin is


class PluginEvent(msgspec.Struct, frozen=True):
    """A plugin changed state (``kind`` "state"), or was reloaded ("reloaded"), or a reload
    failed while the old version kept serving ("reload_failed"). ``reason`` says why."""

    plugin: str
    version: str | None
    state: str
    previous: str | None
    reason: str | None
    time: float  # unix time
    kind: str = "state"


class Plugin:
    """One installed plugin version: where it lives, what it declares, its state and pool."""

    def __init__(self, source: PluginSource, emit: Callable[[PluginEvent], None]) -> None:
        self.source = source
        self.manifest: Manifest | None = None
        self.exports: list[str] = []
        self.state = "discovered"
        self.error: str | None = None
        self.pool: Pool | None = None
        self.fingerprint: tuple = ()
        self.read_digest: str | None = None  # digest of its files as last read (reload.content)
        self.code_digest: str | None = None  # ... of the code among them (reload.code_content): its pool's
        self.digest: str | None = None  # ... as read by the version serving now (watch.py compares it)
        self.reload_error: str | None = None
        self.unmet = False  # its last reload was refused for its dependencies (watch.py tries it again)
        self.awaits_dependencies = False  # in error until its dependencies are met (dependents.py)
        self.pending_manifest: Manifest | None = None  # a version waiting for approval
        self.pending_exports: list[str] = []
        self._exported: tuple[list[str], list[str], frozenset[str]] = ([], [], frozenset())  # exported()
        self.pending: list[str] = []  # the grants it asks for beyond the approved ones
        self.state_retry: tuple[float, float] | None = None  # failed for the state dir: (when, backoff)
        self.starting = anyio.Lock()  # held by the reload starting its new pool (swap.py)
        self._emit = emit
        self._emit(PluginEvent(source.id, source.version_hint, "discovered", None, None, time.time()))

    @property
    def log_extra(self) -> dict[str, str]:
        return plugin_extra(self.id, self.key)

    @property
    def id(self) -> str:
        return self.source.id

    @property
    def version(self) -> str | None:
        return self.manifest.version if self.manifest else self.source.version_hint

    @property
    def order(self) -> tuple:
        """Sort key among versions of one plugin."""
        m = self.manifest
        return (0, self.source.version_hint or "") if m is None else (1, m.semver)

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}" if self.version else self.id

    def exported(self, fn: str) -> bool:
        """Whether this version, or the one waiting for approval, exports ``fn`` (a set made
        once per exports list: a plugin may export many names)."""
        if self._exported[0] is not self.exports or self._exported[1] is not self.pending_exports:
            self._exported = (self.exports, self.pending_exports, frozenset(self.exports + self.pending_exports))
        return fn in self._exported[2]

    def hold(self, manifest: Manifest, exports: list[str], added: list[str], how: str = "") -> None:
        """A version asking for ``added`` beyond its approved grants waits for the operator
        (``how``: the command that approves it)."""
        first = self.pending != added
        self.pending_manifest, self.pending_exports, self.pending = manifest, exports, added
        if first:
            log.warning("[plugin:%s] version %s waits for approval: it asks for %s%s; the version serving "
                        "meanwhile is %s", self.key, manifest.version, ", ".join(added),
                        f"; approve with `{how}`" if how else "", self.version or "none",
                        extra=self.log_extra)
            self._emit(PluginEvent(self.id, manifest.version, self.state, self.state,
                                   "asks for " + ", ".join(added) + (f"; approve with `{how}`" if how else ""),
                                   time.time(), "approval_pending"))

    def release(self) -> None:
        """Nothing waits for approval any more."""
        self.pending_manifest, self.pending_exports, self.pending = None, [], []

    @property
    def station_configs(self) -> dict[str, dict[str, Any]]:
        """The relay stations its serving pool serves, by name: each one's validated config."""
        return self.pool.station_configs if self.pool is not None else {}

    @property
    def station_errors(self) -> dict[str, str]:
        """Its stations that pool could not serve, and why."""
        return self.pool.station_errors if self.pool is not None else {}

    def set_state(self, state: str, reason: str | None = None) -> None:
        assert state in STATES, state
        self.awaits_dependencies = False
        if state in ("error", "degraded", "pending", "disabled"):  # disabled: why, and how to undo it
            self.error = reason
        elif state in ("running", "loaded"):
            self.error = None
        if state == self.state and state != "error":
            return
        previous, self.state = self.state, state
        (log.warning if state == "error" else log.info)(
            "[plugin:%s] %s -> %s%s", self.key, previous, state, f" ({reason})" if reason else "",
            extra=self.log_extra)
        self._emit(PluginEvent(self.id, self.version, state, previous, reason, time.time()))

    def reloaded(self) -> None:
        """New code now serves (the old pool is draining)."""
        self.reload_error, self.awaits_dependencies = None, False
        self.digest = self.read_digest
        previous = self.state
        self.state, self.error = "running", None
        log.info("[plugin:%s] reloaded", self.key, extra=self.log_extra)
        self._emit(PluginEvent(self.id, self.version, "running", previous, None, time.time(), "reloaded"))

    def reload_failed(self, reason: str) -> None:
        """New code failed to load; the old version keeps serving."""
        self.reload_error = reason
        log.warning("[plugin:%s] reload failed, the old version keeps serving: %s", self.key, reason,
                    extra=self.log_extra)
        self._emit(PluginEvent(self.id, self.version, self.state, self.state, reason, time.time(),
                               "reload_failed"))

    def sync_with_pool(self, pool: Pool) -> None:
        """Pool callback: a crash loop puts the plugin in `error`; a reset brings it back."""
        if pool is not self.pool:
            return
        if pool.state == "error":
            self.set_state("error", pool.error)
            note_failure(self, StateError(pool.error or "") if pool.state_failure else None)  # retried if state
        elif pool.state == "running" and self.state in ("error", "loaded"):
            self.set_state("running")


class EventHub:
    """Fans plugin events out to callbacks and to async-iterator subscribers."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[PluginEvent], None]] = []
        self._streams: list[MemoryObjectSendStream[PluginEvent]] = []
        self.dropped = 0
        self.closed = True  # until the host starts (PluginHost.__aenter__)

    def emit(self, event: PluginEvent) -> None:
        for fn in list(self._callbacks):
            try:
                fn(event)
            except Exception:  # a subscriber's bug must not break the host
                log.exception("plugin event callback failed")
        for stream in list(self._streams):
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1  # a subscriber that does not keep up loses events, not the host
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._streams.remove(stream)

    def subscribe(self, fn: Callable[[PluginEvent], None]) -> Callable[[], None]:
        return listen(self._callbacks, fn, "subscribe")

    def close(self) -> None:
        """The host stopped: every stream's ``async for`` ends (after the events sent before)."""
        self.closed = True
        for stream in self._streams:
            stream.close()
        self._streams.clear()

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until ``done()`` (asked again at each event)."""
        changed = anyio.Event()
        unsubscribe = self.subscribe(lambda _: changed.set())
        try:
            with anyio.move_on_after(timeout):
                while not done():
                    await changed.wait()
                    changed = anyio.Event()
        finally:
            unsubscribe()
        return done()

    @asynccontextmanager
    async def stream(self, buffer: int = 1000, check: Callable[[], None] | None = None,
                     ) -> AsyncIterator[AsyncIterator[PluginEvent]]:
        """``check``: called as the stream is entered (the host's thread: a stream read on another
        thread's loop was sent to from the host's, which trio refused and asyncio never woke)."""
        if self.closed:  # entered after the host stopped: no event would ever come
            raise HostClosed("the host is not running: no plugin event will come; use async with PluginHost(...)")
        if check is not None:
            check()
        send, receive = anyio.create_memory_object_stream[PluginEvent](buffer)
        self._streams.append(send)
        try:
            async with receive:
                yield receive
        finally:
            if send in self._streams:
                self._streams.remove(send)
            send.close()
