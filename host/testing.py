"""A pytest plugin for plugin authors, installed with the package (the ``pytest11`` entry point
``plugin_host``): test a plugin the way the host runs it, in a real Deno worker, against a local
fake of the service it calls.

Fixtures:

- ``fake_http``: a :class:`FakeHttp` server on 127.0.0.1 (a thread of its own, so it serves
  asyncio and trio tests alike): ``fake_http.json("GET", "/user/balance", {...})`` or
  ``fake_http.route(method, path, handler)``; ``fake_http.url`` is its base URL and
  ``fake_http.requests`` what it was sent (method, path and query, headers).
- ``plugin_host``: ``async with plugin_host("plugins/myrelay", config={...}) as h`` starts a
  :class:`~host.PluginHost` over the plugins named (a plugin file or directory, or a directory
  of plugins), each allowed to reach loopback addresses (the fake), in a state directory of the
  test's own; ``config`` is stored as the plugin's config, as ``config set`` would store it.

Helper: :func:`call_with_config` calls a function with a config as its first argument, the way
the host calls ``queryBalance``. The tests run under anyio (``@pytest.mark.anyio``; asyncio and
trio both work). docs/plugin-authoring.md has a worked example."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from multidict import CIMultiDict

from .config import HostConfig, PluginSettings, PoolConfig
from .plugin_host import PluginHost
from .plugins.discovery import USAGE_SUFFIX, source_for
from .plugins.manifest import ConfigField
from .plugins.settings import apply_schema

Handler = Callable[[web.Request], Any]


class FakeHttp:
    """A third-party HTTP service faked on 127.0.0.1 by an aiohttp server in a thread of its
    own: ``route(method, path, handler)`` with ``handler(request) -> web.Response`` (async or
    not); unknown routes get a JSON 404. ``requests`` records (method, path_qs, headers), the
    headers looked up case-insensitively."""

    def __init__(self) -> None:
        self.port = 0
        self.routes: dict[tuple[str, str], Handler] = {}
        self.requests: list[tuple[str, str, CIMultiDict[str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method.upper(), path)] = handler

    def json(self, method: str, path: str, body: Any, status: int = 200, headers: dict | None = None) -> None:
        """A route that always answers ``body`` as JSON."""
        self.route(method, path, lambda request: web.json_response(body, status=status, headers=headers))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs, CIMultiDict(request.headers)))
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        out = handler(request)
        return await out if asyncio.iscoroutine(out) else out

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeHttp]:
        """A server for the duration of the ``with`` (or the fixture)."""
        fake = cls()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-http", daemon=True)
        thread.start()

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", fake._dispatch)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            fake.port = runner.addresses[0][1]
            return runner

        runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@pytest.fixture
def fake_http() -> Iterator[FakeHttp]:
    with FakeHttp.running() as fake:
        yield fake


@pytest.fixture
def plugin_host(tmp_path: Path) -> Callable[..., Any]:
    """``plugin_host(*plugins, config=None, **host_config)``: an async context manager giving
    a running PluginHost over copies of ``plugins`` (files or directories)."""

    @asynccontextmanager
    async def start(*plugins: str | Path, config: dict[str, Any] | None = None,
                    **host_config: Any) -> AsyncIterator[PluginHost]:
        root = tmp_path / "plugins"
        root.mkdir(exist_ok=True)
        for p in map(Path, plugins):
            if p.is_dir() and not any((p / n).is_file() for n in ("mod.ts", "mod.js", "index.ts", "index.js")):
                for child in p.iterdir():  # a directory of plugins
                    _copy(child, root)
            else:
                _copy(p, root)
        ids = [_plugin_id(p) for p in root.iterdir()]
        settings = {pid: PluginSettings(allow_private_network=True) for pid in ids}
        settings.update(host_config.pop("plugins", {}))
        cfg = HostConfig(plugins_dir=str(root), state_dir=str(tmp_path / "state"),
                         pool=host_config.pop("pool", PoolConfig(min_workers=1, max_workers=1)),
                         plugins=settings, **host_config)
        async with PluginHost(cfg) as host:
            if config is not None:
                if len(ids) != 1:
                    raise ValueError("config= needs exactly one plugin; use host.set_config(id, ...) for several")
                await host.set_config(ids[0], config)
            yield host

    return start


async def call_with_config(host: PluginHost, plugin: str, fn: str, config: dict[str, Any], *args: Any) -> Any:
    """``fn(config, *args, context)`` as the host calls ``queryBalance``: ``config`` is stored
    as the plugin's config first (checked against its configSchema and its validateConfig,
    InvalidConfig naming the field; its workers restarted with the hosts it names granted),
    then passed with its defaults filled in."""
    await host.set_config(plugin, config, replace=True)
    schema = msgspec.convert(host.config_schema(plugin), dict[str, ConfigField])
    return await host.call(plugin, fn, apply_schema(schema, config, plugin=plugin), *args)


def _plugin_id(path: Path) -> str:
    """The id the host gives the plugin at ``path``: ids may hold dots (``wk.plugin.example``)."""
    if path.name.endswith(USAGE_SUFFIX):
        return path.name.removesuffix(USAGE_SUFFIX)
    src = source_for(path)
    return src.id if src is not None else path.name.split(".")[0]


def _copy(src: Path, root: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, root / src.name, dirs_exist_ok=True)
    elif src.suffix in (".js", ".ts"):
        shutil.copy2(src, root / src.name)


__all__ = ["FakeHttp", "call_with_config", "fake_http", "plugin_host"]
