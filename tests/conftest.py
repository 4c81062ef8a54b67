"""Shared fixtures: real hosts over real Deno workers, plugins written to tmp_path, hostile
worker runtimes that misbehave on the protocol, and a check that no test leaves a deno process
behind."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from multidict import CIMultiDict

from host import HostConfig, HostError, PluginHost, PoolConfig, WorkerLimits
from host.runtime import Runtime, find_deno
from host.server import create_app
from host.worker import Worker, WorkerSpec


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return request.param


def descendants(match: Callable[[str], bool], root: int | None = None) -> list[int]:
    """Live processes descended from ``root`` (default: this test process) whose command name
    ``match`` accepts (zombies are left out: a leak of their own, not a running process)."""
    root = root or os.getpid()
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rparen = stat.rindex(")")
        fields = stat[rparen + 2 :].split()
        parents[int(entry)] = int(fields[1])
        if fields[0] != "Z":
            names[int(entry)] = stat[stat.index("(") + 1 : rparen]
    out = []
    for pid, name in names.items():
        if not match(name):
            continue
        p = pid
        while p > 1:
            p = parents.get(p, 0)
            if p == root:
                out.append(pid)
                break
    return out


def deno_children(root: int | None = None) -> list[int]:
    """Deno processes descended from ``root`` (default: this test process)."""
    return descendants(lambda name: name == "deno", root)


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``pred`` until it holds; fail the test (TimeoutError) after ``timeout`` seconds."""
    import anyio

    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(interval)


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


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


class PluginDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, source: str, *, auto_metadata: bool = True) -> Path:
        """Write a file under the plugin directory. A plugin module without ``metadata`` gets
        a minimal valid one (id from its file or directory name), so tests about something
        else need not repeat it."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(source)
        is_entry = path.suffix in (".js", ".ts") and (
            path.parent == self.root or path.stem in ("mod", "index"))
        if auto_metadata and is_entry and "export const metadata" not in text:
            pid = (path.stem if path.parent == self.root else path.parent.name).split("@")[0]
            text = (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", '
                    f'apiVersion: "1.0" }};\n') + text
        path.write_text(text)
        return path


@pytest.fixture
def plugin_dir(tmp_path: Path) -> PluginDir:
    return PluginDir(tmp_path / "plugins")


CALC = """
export const metadata = { id: "calc", name: "Calculator", version: "1.2.3", apiVersion: "1.0" };
export function add(a, b) { return a + b; }
export async function addLater(a, b) { await new Promise((r) => setTimeout(r, 5)); return a + b; }
export function echo(x) { return x; }
export async function sleep(ms) { await new Promise((r) => setTimeout(r, ms)); return ms; }
export function spin() { while (true) {} }
export function pid() { return Deno.pid; }
export function say(msg) { console.log("said:", msg); console.warn("warned"); return msg; }
"""


def vault_plugin(exports: str, *, fields: str = "") -> str:
    """The "vault" test plugin: a required secret ``apiKey`` and a ``region`` (eu or us), plus
    ``fields`` (more configSchema entries) and ``exports`` (its functions)."""
    return (
        'export const metadata = {\n  id: "vault", name: "Vault", version: "1.0.0", apiVersion: "1.0",\n'
        '  configSchema: {\n    apiKey: { type: "string", required: true, secret: true },\n'
        '    region: { type: "string", enum: ["eu", "us"], default: "eu" },\n'
        f"{fields}  }},\n}};\n{textwrap.dedent(exports).strip()}\n"
    )


@pytest.fixture
def calc(plugin_dir: PluginDir) -> PluginDir:
    plugin_dir.add("calc.js", CALC)
    return plugin_dir


def fresh_state(root: Path, shared_state: Path) -> Path:
    """A state directory of its own under ``root`` (configs, approvals, storage, history) that
    shares the session's DENO_DIR, so that the worker runtime is not compiled again."""
    state = root / "state"
    if not state.exists():
        state.mkdir(parents=True)
        (shared_state / "deno").mkdir(exist_ok=True)
        (state / "deno").symlink_to(shared_state / "deno")
    return state


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


class LocalServer:
    """An aiohttp server on 127.0.0.1 in a thread of its own (so it serves asyncio and trio tests
    alike) that counts TCP connections and records HTTP requests."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.requests: list[str] = []
        self.responses: dict[str, Any] = {}  # path -> the JSON to answer it with


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


@pytest.fixture
def fake_http() -> Iterator[FakeHttp]:
    fake = FakeHttp()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-http", daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sigterm_and_reap(proc: subprocess.Popen, *, expect_workers: bool = True) -> None:
    """SIGTERM a ``python -m host serve`` subprocess: it exits 0 and takes its workers along."""
    workers = deno_children(proc.pid)
    assert workers or not expect_workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert all(process_gone(pid) for pid in workers)


class ServeProcess:
    """A ``python -m host serve`` subprocess on a free loopback port; its stderr goes to
    ``log_path`` (a pipe nobody reads could fill and block it)."""

    def __init__(self, proc: subprocess.Popen, base: str, log_path: Path) -> None:
        self.proc, self.base, self.log_path = proc, base, log_path

    def log(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                data: bytes | None = None, timeout: float = 30) -> tuple[int, Any]:
        """Status and decoded JSON body (text when not JSON) of one request."""
        import urllib.error
        import urllib.request

        if data is None and body is not None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode()

    def poll(self, answer: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        """``answer()`` until it returns something other than None (an OSError counts as
        None: not listening yet), every 50 ms; fails if serve exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if (found := answer()) is not None:
                    return found
            except OSError:
                pass
            assert self.proc.poll() is None, f"serve exited {self.proc.returncode}: {self.log()}"
            assert time.monotonic() < deadline, f"{what} never happened: {self.log()}"
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30) -> dict:
        """Poll ``/healthz`` until it answers 200."""
        def ready() -> dict | None:
            status, body = self.request("GET", "/healthz", timeout=2)
            return body if status == 200 else None
        return self.poll(ready, "ready", timeout)

    def wait_logged(self, text: str, timeout: float = 20) -> None:
        """Wait until serve's output holds ``text``."""
        self.poll(lambda: True if text in self.log() else None, repr(text), timeout)


@contextmanager
def serve_process(cwd: Path, *args: str, env: dict[str, str] | None = None,
                  ready: bool = True, preexec: Callable[[], None] | None = None) -> Iterator[ServeProcess]:
    """``python -m host serve ARGS`` on a free 127.0.0.1 port; SIGTERM at the end, which must
    exit 0 and leave no worker behind. ``preexec``: run in the child before it starts (limits)."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "host", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, preexec_fn=preexec)
    srv = ServeProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        if ready:
            srv.wait_ready()
        yield srv
        if proc.poll() is None:
            sigterm_and_reap(proc, expect_workers=False)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m host`` with ``args`` in a subprocess, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


@contextmanager
def running_redis(workdir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A redis-server of its own on a free loopback port: its process and URL."""
    import time

    import redis

    binary = shutil.which("redis-server") or "/usr/sbin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.02)
    client.close()
    try:
        yield proc, url
    finally:
        proc.send_signal(signal.SIGCONT)  # a test may have stopped it
        proc.terminate()
        proc.wait(10)


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


# ---------------------------------------------------------------------------- hostile workers
# A fake worker runtime (the real msgpack codec and framing, then a script of its own) that
# misbehaves on the protocol: used by test_handshake.py and tests/security/.

MSGPACK_URL = (Path(__file__).resolve().parents[1] / "worker_runtime" / "msgpack.ts").as_uri()

# Shared by every hostile script: the real msgpack codec (a static import of the main module
# needs no read permission), framing, and the argv the host starts a worker with.
PRELUDE = """
import { encode, Decoder } from "@MSGPACK_URL@";
const [path, token] = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer()).split("\\n");
const decoder = new Decoder();
let conn;
let inbuf = new Uint8Array(0);

async function connect() { conn = await Deno.connect({ transport: "unix", path }); }
function frame(msg) {
  const body = encode(msg);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}
function hex(s) { return new Uint8Array((s.match(/../g) ?? []).map((b) => parseInt(b, 16))); }
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
  let off = 0;
  for (const x of parts) { out.set(x, off); off += x.length; }
  return out;
}
async function write(bytes) { let off = 0; while (off < bytes.length) off += await conn.write(bytes.subarray(off)); }
async function fill(n) {
  while (inbuf.length < n) {
    const chunk = new Uint8Array(65536);
    const got = await conn.read(chunk);
    if (got === null) return false;
    inbuf = concat(inbuf, chunk.subarray(0, got));
  }
  return true;
}
/** The next frame from the host as an object, or null at end of file. */
async function readFrame() {
  if (!(await fill(4))) return null;
  const size = new DataView(inbuf.buffer, inbuf.byteOffset).getUint32(0);
  if (!(await fill(4 + size))) return null;
  const msg = decoder.decode(inbuf, 4, 4 + size);
  inbuf = inbuf.slice(4 + size);
  return msg;
}
function hello(fields = {}) {
  return frame({ type: "hello", cookie: "PLUGIN_HOST_7f3a9c2e", protocol: 1, token, pid: Deno.pid,
                 runtime: "hostile", ...fields });
}
/** Keep the process alive: the host, not this script, decides when it ends. */
function stayAlive() { setInterval(() => {}, 60_000); }
""".replace("@MSGPACK_URL@", MSGPACK_URL)

Hostile = Callable[[str], Runtime]


def gone(pid: int | None) -> bool:
    """The process has exited and been reaped (the worker is our child, so no zombie either)."""
    assert pid is not None
    return not os.path.exists(f"/proc/{pid}")


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.fixture
def run_root() -> Iterator[Path]:
    # Short, so that socket paths stay far below the ~108-byte sun_path limit.
    root = Path(tempfile.mkdtemp(prefix="ph-hs-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _runtime(entry: Path, run_root: Path, shared_state: Path) -> Runtime:
    run_dir = Path(tempfile.mkdtemp(dir=run_root))
    os.chmod(run_dir, 0o700)
    deno_dir = shared_state / "deno"
    deno_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(deno=find_deno(), entry=entry, deno_dir=deno_dir, run_dir=run_dir)


@pytest.fixture
def hostile(tmp_path: Path, run_root: Path, shared_state: Path) -> Hostile:
    """Runtime whose worker entry is a hostile script (PRELUDE + ``body``), own socket dir."""
    counter = itertools.count()

    def make(body: str) -> Runtime:
        script = tmp_path / f"hostile-{next(counter)}.js"
        script.write_text(PRELUDE + textwrap.dedent(body))
        return _runtime(script, run_root, shared_state)

    return make


def hostile_spec(tmp_path: Path, limits: WorkerLimits | None = None) -> WorkerSpec:
    return WorkerSpec(plugin_id="hostile", module=None, base_dir=tmp_path, read_paths=[],
                      limits=limits or WorkerLimits())


async def start_fails(runtime: Runtime, spec: WorkerSpec) -> tuple[HostError, Worker, float]:
    """Run a worker that must fail to start; returns its error, the worker and the time taken."""
    worker = Worker(spec, runtime)
    t0 = time.monotonic()
    with pytest.raises(HostError) as e, anyio.fail_after(15):
        await worker.run()
    return e.value, worker, time.monotonic() - t0


# A hostile worker that serves correctly (handshake, pings, shutdown) until a call asks it to
# misbehave, so that a host can run it as the runtime of real plugins (``runtime_entry``):
# ``pid()`` and ``f("ok")`` answer normally; ``f(hex, end)`` writes those raw bytes, then a
# valid result for the call, then with ``end`` "close" closes its end of the connection (and
# stays alive), with "exit" exits (end of stream and of process), with "" carries on.
ON_DEMAND = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    if (welcome?.type !== "welcome") Deno.exit(9);
    const id = welcome.plugin_id;
    await write(frame({ type: "ready", metadata: { id, name: id, version: "1.0.0", apiVersion: "1.0" },
                        exports: ["f", "pid"] }));
    for (;;) {
      const msg = await readFrame();
      if (msg === null || msg.type === "shutdown") Deno.exit(0);
      if (msg.type === "ping") await write(frame({ type: "pong", seq: msg.seq }));
      if (msg.type !== "call") continue;
      const [bytes, end] = msg.args ?? [];
      if (msg.fn === "pid" || bytes === "ok") {
        await write(frame({ type: "result", id: msg.id, value: msg.fn === "pid" ? Deno.pid : "ok" }));
        continue;
      }
      await write(concat(hex(bytes), frame({ type: "result", id: msg.id, value: "after" })));
      if (end === "exit") Deno.exit(0);
      if (end === "close") { conn.close(); break; }
    }
    stayAlive();
"""


def on_demand_runtime(hostile, plugin_dir: PluginDir, *plugins: str) -> str:
    """The entry of the ON_DEMAND fake runtime, with a stub module for each of ``plugins`` (the
    fake answers for them whatever their module says), for ``make_host(runtime_entry=...)``."""
    runtime = hostile(ON_DEMAND)
    for name in plugins:
        plugin_dir.add(f"{name}.js", "export function f() {}\n")
    return str(runtime.entry)



@asynccontextmanager
async def served(host: PluginHost, **kw: Any) -> AsyncIterator[tuple[web.Application, aiohttp.ClientSession]]:
    """``create_app(host, **kw)`` listening on a free 127.0.0.1 port, and a session for it."""
    app = create_app(host, **kw)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            yield app, session
    finally:
        await runner.cleanup()
