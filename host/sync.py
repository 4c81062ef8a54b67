"""A blocking facade for programs that are not async: the host runs on an event loop in a
background thread, and each method waits for its result."""

from __future__ import annotations

from typing import Any

from anyio.from_thread import start_blocking_portal

from .config import HostConfig
from .plugin_host import ExecuteResult, PluginHost, PluginInfo


class SyncPluginHost:
    """``with SyncPluginHost(HostConfig(...)) as h: h.call("calc", "add", 1, 2)``"""

    def __init__(self, config: HostConfig | None = None, *, backend: str = "asyncio") -> None:
        self.host = PluginHost(config)
        self._backend = backend
        self._portal_cm: Any = None
        self._host_cm: Any = None

    def __enter__(self) -> SyncPluginHost:
        self._portal_cm = start_blocking_portal(self._backend)
        self._portal = self._portal_cm.__enter__()
        try:
            # One task enters and exits the host, as its task group requires.
            self._host_cm = self._portal.wrap_async_context_manager(self.host)
            self._host_cm.__enter__()
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._host_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def call(self, plugin: str, fn: str, *args: Any, timeout: float | None = None) -> Any:
        return self._portal.call(lambda: self.host.call(plugin, fn, *args, timeout=timeout))

    def execute(self, code: str, input: Any = None, **kw: Any) -> ExecuteResult:
        return self._portal.call(lambda: self.host.execute(code, input, **kw))

    def plugins(self) -> list[PluginInfo]:
        return self._portal.call(_snapshot, self.host)


async def _snapshot(host: PluginHost) -> list[PluginInfo]:
    return host.plugins()
