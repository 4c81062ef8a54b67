"""Loading plugins when the host starts: each one's metadata read in a worker with no
permissions, validated, then its pool started, level by level in dependency order.

``HostConfig.load = "wait"`` does it all before ``async with PluginHost(...)`` returns, so that
every plugin has settled (running, pending, disabled or error) once the host runs: the contract
embedding code and the tests rely on, and what ``"auto"`` (the default) means there; ``serve``
takes ``"auto"`` as ``"background"``, since it listens before its plugins load and its
``/healthz/ready`` answers 503 while any plugin is still starting. ``"background"`` settles before returning only the plugins the manifest cache knows (a
stat and a digest each); the others are `loading` while they are read after the host started,
INSPECT_SLOTS at a time, each in its own zero-permission worker as before, so isolation is
unchanged. Loading takes ~25 ms of Deno CPU per plugin: a cold start of 1,000 plugins took
~20 s waiting, well under 2 s in the background. A call to a plugin still loading waits for its
load within the call's own deadline, and moves it to the front: its load starts at once in an
urgent slot (manifest_cache.LoadSlots). A plugin whose dependencies are still loading starts as
soon as they all serve; what they never meet is judged once the whole batch is read, in
dependency order as at start."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import anyio

from ..errors import CallTimeout, HostError
from .config_store import seal_stored_secrets
from .dependencies import resolve
from .dependents import dependency_error, unavailable, wait_for_dependencies
from .discovery import cached
from .lifecycle import Plugin
from .manifest_cache import INSPECT_SLOTS, URGENT
from .state_retry import note_failure

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("host")


class Loader:
    """The plugins of one registry being loaded; in its task group when in the background."""

    def __init__(self, registry: Registry) -> None:
        self._reg = registry
        self._queue: list[Plugin] = []  # waiting for a slot, front first
        self._deferred: list[Plugin] = []  # read; they wait for their dependencies to serve
        self._done: dict[Plugin, anyio.Event] = {}  # loading in the background -> set once settled
        self._active = 0  # tasks started to load (slot runners and urgent loads), not yet ended

    def busy(self) -> bool:
        """Whether any plugin is still being loaded in the background."""
        return bool(self._done)

    def loading(self, record: Plugin) -> bool:
        """Whether ``record`` is still being loaded in the background."""
        return record in self._done

    async def load(self, records: list[Plugin], background: bool = False) -> None:
        """Load ``records`` (just discovered): all now or, ``background``, the cached ones now."""
        reg = self._reg
        assert reg.runtime is not None
        later = [r for r in records  # each plugin's files read off the event loop (100,000 of them: 1.4 s)
                 if background and not await anyio.to_thread.run_sync(cached, r.source, reg.runtime)]
        now = [r for r in records if r not in later]
        await self._read_all(now)
        waiting = {r.id for r in later}
        while more := {r.id for r in now if r.state == "loaded" and r.manifest is not None
                       and waiting & set(r.manifest.dependencies)} - waiting:
            waiting |= more  # it waits for what it depends on, and so on
        deferred = [r for r in now if r.state == "loaded" and r.id in waiting]
        await self._start_all([r for r in now if r not in deferred])
        if not (later or deferred):
            return
        for r in later:
            r.set_state("loading")
        self._done.update((r, anyio.Event()) for r in [*later, *deferred])
        self._queue += later
        self._deferred += deferred
        for _ in range(min(INSPECT_SLOTS, len(later))):  # (none deferred without one later)
            self._spawn(self._run)

    async def _read_all(self, records: list[Plugin]) -> None:
        async with anyio.create_task_group() as tg:
            for r in records:
                tg.start_soon(self._reg._inspect, r)

    async def _start_all(self, records: list[Plugin]) -> None:
        """Duplicates out, dependencies resolved, then each level started in order."""
        seen: dict[str, Plugin] = {}
        batch = set(records)
        for r in records:
            if r.state == "loaded":
                # the first read wins, in this batch or already loaded (a rescan's new file beside a
                # running one of the same id and version: before, both ran, the copy with its config)
                if (first := seen.get(r.key) or self._duplicate(r, beside=batch)) is not None:
                    r.set_state("error", f"duplicate of {first.source.module}")
                else:
                    seen[r.key] = r
        reg = self._reg
        latest = reg.newest(r for r in reg.records if r.manifest is not None and r.state != "error")
        levels, errors = resolve({pid: r.manifest for pid, r in latest.items()}, unavailable(reg, set(latest)))
        for r in records:
            if r.state == "loaded" and r.id in errors:
                wait_for_dependencies(r, errors[r.id])  # started once they are met (dependents.py)
        for level in levels:
            async with anyio.create_task_group() as tg:
                for r in records:
                    if r.id in level and r.state == "loaded":
                        tg.start_soon(reg._start, r)

    # ------------------------------------------------------------------ in the background

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: object) -> None:
        """Start a loading task, counted from now: the batch cannot end before it ran."""
        assert self._reg._tg is not None
        self._active += 1
        self._reg._tg.start_soon(fn, *args)

    async def _run(self) -> None:
        """One slot: load the front of the queue until it is empty."""
        try:
            while self._queue:
                await self._load_one(self._queue.pop(0))
        finally:
            await self._ended()

    async def _urgent(self, record: Plugin) -> None:
        URGENT.set(True)  # in this task's own context: its load takes an urgent slot
        try:
            await self._load_one(record)
        finally:
            await self._ended()

    async def _ended(self) -> None:
        self._active -= 1
        if not self._active and not self._queue:
            await self._finish()

    async def _load_one(self, record: Plugin) -> None:
        """Read one plugin; one without dependencies starts at once. Whatever its load raises
        ends in `error` as at start; one disabled or removed meanwhile stays as it was left."""
        reg = self._reg
        try:
            if record.state != "loading":
                return
            try:
                manifest, exports = await reg._read_manifest(record)
            except Exception as exc:  # whatever one plugin's load raises stays with that plugin
                if record.state == "loading":
                    record.set_state("error", failure(record, "load", exc))
                return
            if record.state != "loading" or not reg.running:
                return
            record.manifest, record.exports = manifest, exports
            record.set_state("loaded")
            if manifest.dependencies and dependency_error(reg, record, manifest) is not None:
                self._deferred.append(record)  # met only once others load: at the batch's end
            elif (dup := self._duplicate(record)) is not None:
                record.set_state("error", f"duplicate of {dup.source.module}")
            else:
                await reg._start(record)
                await self._start_met()
        finally:
            if record not in self._deferred:
                self._settled(record)

    async def _start_met(self) -> None:
        """Start the deferred plugins whose dependencies all serve now (one just started): they
        need not wait for the batch's end, nor for an unrelated load that hangs."""
        reg = self._reg
        while met := [r for r in self._deferred if r.state == "loaded" and r.manifest is not None
                      and dependency_error(reg, r, r.manifest) is None]:
            record = met[0]
            self._deferred.remove(record)
            try:
                if (dup := self._duplicate(record)) is not None:
                    record.set_state("error", f"duplicate of {dup.source.module}")
                elif reg.running:
                    await reg._start(record)
            finally:
                self._settled(record)

    def _duplicate(self, record: Plugin, beside: Collection[Plugin] = ()) -> Plugin | None:
        """A settled version with ``record``'s id and version (the first read wins), not one of
        ``beside`` (the batch being started, which the caller orders)."""
        for other in self._reg.records:
            if (other is not record and other not in beside and other.key == record.key and other.manifest is not None
                    and other.state != "error" and not self.loading(other)):
                return other
        return None

    def _settled(self, record: Plugin) -> None:
        if (event := self._done.pop(record, None)) is not None:
            event.set()

    async def _finish(self) -> None:
        """Every background load ended: the deferred plugins start in dependency order, and the
        secrets of those just read are sealed at rest."""
        deferred, self._deferred = self._deferred, []
        try:
            for r in deferred:
                if r.state == "loaded" and (dup := self._duplicate(r)) is not None:
                    r.set_state("error", f"duplicate of {dup.source.module}")
            await self._start_all([r for r in deferred if r.state == "loaded"])
            if self._reg.running:
                await seal_stored_secrets(self._reg.store, self._reg.records)
        finally:
            for r in deferred:
                self._settled(r)

    def hurry(self, record: Plugin) -> None:
        """A call waits for ``record``: its load starts now if it has not yet."""
        if record in self._queue:
            self._queue.remove(record)
            self._spawn(self._urgent, record)

    async def wait(self, name: str, timeout: float) -> None:
        """Wait until every version of plugin ``name`` (``id`` or ``id@version``) being loaded
        in the background settled, hurrying each; CallTimeout past ``timeout`` seconds."""
        pid = name.partition("@")[0]
        waiting = [r for r in self._reg.records if r.id == pid and r in self._done]
        for r in waiting:
            self.hurry(r)
        with anyio.move_on_after(timeout):
            for r in waiting:
                if (event := self._done.get(r)) is not None:
                    await event.wait()
            return
        raise CallTimeout(f"plugin still loading after {timeout:g}s", timeout=timeout, plugin=pid)


    async def wait_all(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds, then go on) until no plugin loads in the background:
        for what asks every plugin of a capability, known only once loaded (events, balances)."""
        with anyio.move_on_after(timeout):
            while self._done and self._reg.running:
                await next(iter(self._done.values())).wait()


def failure(record: Plugin, what: str, exc: Exception) -> str:
    """What failed, for the plugin's error: a HostError says it itself; anything else is a bug
    or an OS failure, logged with its traceback and contained to this plugin."""
    note_failure(record, exc)  # the state directory failing: tried again once it may work
    if isinstance(exc, HostError):
        return str(exc)
    log.error("plugin %s: %s failed", record.id, what, exc_info=exc)
    return f"{what} failed: {type(exc).__name__}: {exc}"


__all__ = ["Loader", "failure"]
