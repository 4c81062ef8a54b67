"""Events and health: ``emit`` delivers an event to the plugins whose capabilities list it, by
priority; ``check_health`` asks every plugin exporting ``healthCheck`` and marks it `degraded`
or `running` again."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ..config import HostConfig
from ..errors import CallTimeout, HostClosed, HostError
from ..info import EventReply
from .lifecycle import SERVING, Plugin
from .registry import Registry

Call = Callable[..., Awaitable[Any]]  # PluginHost.call


class Events:
    def __init__(self, config: HostConfig, registry: Registry, call: Call) -> None:
        self.config = config
        self._reg = registry
        self._call = call

    async def emit(self, event: str, payload: Any = None, *, timeout: float | None = None,
                   stop_at_first: bool = False) -> list[EventReply]:
        """Deliver ``event`` to every running plugin whose capabilities list it (or a pattern of
        it, ``message.*``: ``Manifest.handles``), highest
        ``priority`` first (ties by id), each call ``onEvent(event, payload, context)`` with
        its own timeout. With ``stop_at_first``, stop after the first plugin that returns a
        value other than null/undefined (0, "" and false are answers). A plugin reloaded
        during the emit gets the event in its new version, if that version still takes it."""
        if not self._reg.running:  # not an empty list: nobody would hear of the event
            raise HostClosed("the host is not running; use `async with PluginHost(...)`")
        budget = self.config.events.timeout if timeout is None else timeout
        await self._reg.loader.wait_all(budget)  # who handles it is known once loaded (load = "background")
        targets = [r for r in self._reg.records
                   if r.state in SERVING and r.manifest is not None
                   and r.manifest.handles(event)]
        ordered = sorted(self._reg.newest(targets).values(), key=lambda r: (-r.manifest.priority, r.id))  # type: ignore[union-attr]
        replies: list[EventReply] = []
        for r in ordered:
            if r.state not in SERVING or r.manifest is None or not r.manifest.handles(event):
                continue  # reloaded meanwhile into a version that does not take it, stopped, removed
            t0 = time.perf_counter()
            try:
                value = await self._call(r.key, "onEvent", event, payload, timeout=budget)
            except HostError as exc:
                error = exc.to_dict()
                if isinstance(exc, CallTimeout) and timeout is None:  # the setting that bounds it (helper-113)
                    error["message"] += " ([events] timeout; emit's timeout= for one emit)"
                replies.append(EventReply(plugin=r.id, version=r.version, ok=False, error=error,
                                          duration=round((time.perf_counter() - t0) * 1000, 3)))
                continue
            replies.append(EventReply(plugin=r.id, version=r.version, ok=True, value=value,
                                      duration=round((time.perf_counter() - t0) * 1000, 3)))
            if stop_at_first and value is not None:
                break
        return replies

    async def check_health(self) -> dict[str, bool]:
        """Call ``healthCheck(config)`` on every running plugin that exports it; a false
        answer, ``{healthy: false}``, an error or a timeout marks it `degraded`, a healthy
        answer brings it back to `running`. Returns plugin key → healthy."""
        out: dict[str, bool] = {}

        async def one(r: Plugin) -> None:
            reason, pool = None, r.pool  # the version asked
            try:
                config = pool.spec.config if pool is not None else None
                value = await self._call(r.key, "healthCheck", config, timeout=self.config.health.timeout)
                if value is False or (isinstance(value, dict) and value.get("healthy") is False):
                    reason = "healthCheck: " + str(value.get("message", "unhealthy") if isinstance(value, dict)
                                                   else "returned false")
            except HostError as exc:
                reason = f"healthCheck failed: {exc}"
            if r.state not in SERVING or r.pool is not pool:
                return  # changed meanwhile (disabled, crashed, reloaded: the answer is another version's)
            out[r.key] = reason is None
            r.set_state("running" if reason is None else "degraded", reason)

        async with anyio.create_task_group() as tg:
            for r in self._reg.records:
                if r.state in SERVING and "healthCheck" in r.exports:
                    tg.start_soon(one, r)
        return out

    async def health_loop(self) -> None:
        while True:
            await anyio.sleep(self.config.health.interval)
            await self.check_health()


__all__ = ["Events"]
