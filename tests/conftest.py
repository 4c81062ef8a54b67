"""Shared fixtures: real hosts over real Deno workers, plugins written to tmp_path, hostile
worker runtimes that misbehave on the protocol, and a check that no test leaves a deno process
behind."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from support.hostile import PRELUDE, Hostile, runtime_for
from support.plugins import CALC, PluginDir, fresh_state
from support.postgres import Postgres, fresh_database, running_postgres
from support.processes import deno_children
from support.servers import LocalServer, running_redis

from host import HostConfig, PluginHost, PoolConfig, WorkerLimits
from host.runtime import Runtime
from host.testing import fake_http  # noqa: F401  (the fixture plugin authors get)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


# The modules whose trio twins ``make test`` runs: the call path and the pool's supervision,
# where the event loop's own behaviour (cancellation, task groups, timeouts, threads) decides
# what happens, and the modules whose code takes another path under trio. Elsewhere (state, reloads, policies, balances, the sandbox) the host's code is
# the same on both loops and the twins found nothing the asyncio run did not, at five minutes
# of CI (two and a half of wall time); PLUGIN_HOST_TEST_ALL_BACKENDS=1 runs every twin.
TRIO_TWINS = frozenset({
    "test_boundary", "test_call_path_faults", "test_caller_deadlines", "test_calls", "test_cancelled_host",
    "test_events", "test_execute_pools", "test_fastpath", "test_handshake", "test_host_lifecycle",
    "test_network", "test_pool", "test_scheduler", "test_service_threads", "test_transport",
    # code that differs by loop: trio's clock, thread tokens, synchronous limit stores under trio,
    # the thread and HostClosed checks of the facade
    "test_clock_jumps", "test_db_tool", "test_embedding_misuse", "test_pg_outage", "test_policy",
    "test_redis", "test_shared_channel", "test_sync",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The trio twin of a test runs only in TRIO_TWINS' modules, and never for a test marked
    ``one_backend`` (what plugin code can do inside Deno: grants, escapes, schema rules, the
    execute tools; the event loop plays no part). PLUGIN_HOST_TEST_ALL_BACKENDS=1 runs them all."""
    if os.environ.get("PLUGIN_HOST_TEST_ALL_BACKENDS") == "1":
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        twin = params.get("anyio_backend") == "trio" and (
            item.get_closest_marker("one_backend") or item.path.stem not in TRIO_TWINS)
        (drop if twin else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A report's text as UTF-8 can carry it: tests feed the host names and output with lone
    surrogates (undecodable bytes of a file name), which pytest-xdist cannot send between its
    processes (execnet refuses them, and the whole run ends in an INTERNALERROR)."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _sendable(text)) for title, text in report.sections]
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        text = str(report.longrepr)
        if _sendable(text) != text:
            report.longrepr = _sendable(text)


def _sendable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.fixture(autouse=True)
def no_leftover_workers():
    yield
    left = deno_children()
    assert not left, f"deno processes left behind by this test: {left}"


@pytest.fixture(scope="session")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DENO_DIR for the session, so the worker runtime is compiled once."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def state_dir(tmp_path: Path, shared_state: Path) -> Path:
    """A state dir of the test's own (configs, balance history, config store) sharing the
    session's DENO_DIR, so that the worker runtime is not compiled again."""
    return fresh_state(tmp_path, shared_state)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> PluginDir:
    return PluginDir(tmp_path / "plugins")


@pytest.fixture
def calc(plugin_dir: PluginDir) -> PluginDir:
    plugin_dir.add("calc.js", CALC)
    return plugin_dir


@pytest.fixture
def make_host(plugin_dir: PluginDir, shared_state: Path, tmp_path: Path) -> Callable[..., AsyncIterator[PluginHost]]:
    """A host over ``plugin_dir``; by default in a state directory of the test's own."""
    @asynccontextmanager
    async def factory(
        *, pool: PoolConfig | None = None, limits: WorkerLimits | None = None,
        state_dir: str | None = None, **kw,
    ) -> AsyncIterator[PluginHost]:
        cfg = HostConfig(
            plugins_dir=str(plugin_dir.root), state_dir=state_dir or str(fresh_state(tmp_path / "auto", shared_state)),
            pool=pool or PoolConfig(), limits=limits or WorkerLimits(), **kw,
        )
        async with PluginHost(cfg) as h:
            yield h

    return factory


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    srv = LocalServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="local-aiohttp", daemon=True)
    thread.start()

    async def handler(request: web.Request) -> web.Response:
        srv.requests.append(request.path_qs)
        if request.path in srv.responses:
            return web.json_response(srv.responses[request.path])
        return web.json_response({"served": "local", "path": request.path})

    async def start() -> tuple[web.AppRunner, asyncio.Server]:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        handler_factory = runner.server
        assert handler_factory is not None

        def protocol() -> asyncio.Protocol:
            srv.connections += 1
            return handler_factory()

        server = await loop.create_server(protocol, "127.0.0.1", 0)
        return runner, server

    async def stop() -> None:
        server.close()
        await runner.cleanup()

    runner, server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for the session (tests empty it: ``redis_url``)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as (_, url):
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The session's redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    try:
        yield redis_server
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One real postgres for the session (tests get a database of their own: ``postgres_url``)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> Iterator[str]:
    """A fresh, empty database in the session's postgres, dropped after the test."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[Postgres]:
    """A postgres of the module's own, for tests that restart it or change it as a whole
    (that would end or disturb the other tests' sessions on the session's)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def own_postgres_url(own_postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database in the module's own postgres."""
    with fresh_database(own_postgres) as url:
        yield url


@pytest.fixture
def run_root() -> Iterator[Path]:
    # Short, so that socket paths stay far below the ~108-byte sun_path limit.
    root = Path(tempfile.mkdtemp(prefix="ph-hs-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hostile(tmp_path: Path, run_root: Path, shared_state: Path) -> Hostile:
    """Runtime whose worker entry is a hostile script (PRELUDE + ``body``), own socket dir."""
    counter = itertools.count()

    def make(body: str) -> Runtime:
        script = tmp_path / f"hostile-{next(counter)}.js"
        script.write_text(PRELUDE + textwrap.dedent(body))
        return runtime_for(script, run_root, shared_state)

    return make
