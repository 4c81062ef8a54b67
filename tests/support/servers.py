"""Servers a test talks to: local aiohttp fakes of third-party services, redis-server, the
host's own HTTP app in-process (``served``) and ``python -m host`` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from host import PluginHost
from host.server import create_app

from .plugins import fresh_state
from .processes import free_port, sigterm_and_reap


class LocalServer:
    """An aiohttp server on 127.0.0.1 in a thread of its own (so it serves asyncio and trio tests
    alike) that counts TCP connections and records HTTP requests."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self.requests: list[str] = []
        self.responses: dict[str, Any] = {}  # path -> the JSON to answer it with


def serve_children(parent: int) -> list[int]:
    """The pids of ``serve --processes``' serve processes (the parent's children started with
    ``--process-index``; not its guard, multiproc_guard.py), lowest first."""
    out = []
    for pid in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if b"--process-index" in argv:
            out.append(int(pid))
    return sorted(out)


@contextmanager
def running_redis(workdir: Path, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """A redis-server of its own on a free loopback port (``args``: more of its options, such as
    ``--requirepass PW``, which the URL then carries): its process and URL."""
    import time

    import redis

    binary = shutil.which("redis-server") or "/usr/sbin/redis-server"
    if not os.path.exists(binary):
        pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    password = args[args.index("--requirepass") + 1] if "--requirepass" in args else None
    url = f"redis://{f':{password}@' if password else ''}127.0.0.1:{port}/0"
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


class ServeProcess:
    """A ``python -m host serve`` subprocess on a free loopback port; its stderr goes to
    ``log_path`` (a pipe nobody reads could fill and block it)."""

    def __init__(self, proc: subprocess.Popen, base: str, log_path: Path, processes: int = 1) -> None:
        self.proc, self.base, self.log_path, self.processes = proc, base, log_path, processes

    def log(self) -> str:
        return self.log_path.read_text()

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                data: bytes | None = None, timeout: float = 30,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Status and decoded JSON body (text when not JSON) of one request."""
        import urllib.error
        import urllib.request

        if data is None and body is not None:
            data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **(headers or {})}
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

    def wait_running(self, plugin: str, timeout: float = 30) -> None:
        """Poll ``/healthz`` until ``plugin`` is running (serve listens before plugins load);
        with ``--processes N``, until each of the N processes has logged it running (/healthz
        answers for whichever process takes the request, and the others may be loading yet)."""
        def running() -> bool | None:
            _, body = self.request("GET", "/healthz", timeout=2)
            return True if (body.get("plugins") or {}).get(plugin) == "running" else None

        def each_running() -> bool | None:
            log = self.log()
            return True if all(re.search(rf"\[process {k}\] \[plugin:{re.escape(plugin)}(@[^\]]*)?\] \S+ -> running",
                                         log) for k in range(self.processes)) else None
        self.poll(running if self.processes == 1 else each_running, f"{plugin} running", timeout)

    def wait_logged(self, text: str, timeout: float = 20) -> None:
        """Wait until serve's output holds ``text``."""
        self.poll(lambda: True if text in self.log() else None, repr(text), timeout)


@contextmanager
def serve_process(cwd: Path, *args: str, env: dict[str, str] | None = None,
                  ready: bool = True, preexec: Callable[[], None] | None = None,
                  wrap: tuple[str, ...] = ()) -> Iterator[ServeProcess]:
    """``python -m host serve ARGS`` on a free 127.0.0.1 port; SIGTERM at the end, which must
    exit 0 and leave no worker behind. ``preexec``: run in the child before it starts (limits);
    ``wrap``: a command that execs the rest (``unshare ...``: a file system of its own)."""
    port = free_port()
    log_path = cwd / f"serve-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*wrap, sys.executable, "-m", "host", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, preexec_fn=preexec)
    srv = ServeProcess(proc, f"http://127.0.0.1:{port}", log_path, process_count(args))
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


def process_count(args: Sequence[str]) -> int:
    """How many serve processes ``args`` start (``--processes N``, ``--processes=N``, ``auto``),
    counted as serve counts them. A count set in a config file is not seen here: 1."""
    from host.multiproc import process_count as count_of

    value = "1"
    for i, arg in enumerate(args):
        if arg == "--processes" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--processes="):
            value = arg.split("=", 1)[1]
    return count_of(value)


@contextmanager
def two_serve_processes(cwd: Path, shared_state: Path, plugins: Path, *, running: str,
                        env: dict[str, str] | None = None) -> Iterator[tuple[ServeProcess, ServeProcess]]:
    """Two hosts as two machines would run them: ``serve`` on two ports, each with a state
    directory of its own (``cwd/a``, ``cwd/b``), both on ``cwd/host.toml`` and ``plugins``,
    each serving ``running``."""
    common = ("--plugins", str(plugins), "--config", "host.toml", "--insecure-no-token")
    with serve_process(cwd, *common, "--state-dir", str(fresh_state(cwd / "a", shared_state)), env=env) as one, \
            serve_process(cwd, *common, "--state-dir", str(fresh_state(cwd / "b", shared_state)), env=env) as two:
        one.wait_running(running)
        two.wait_running(running)
        yield one, two


@asynccontextmanager
async def two_hosts(make_host: Callable[..., Any], root: Path, shared_state: Path,
                    **config: Any) -> AsyncIterator[tuple[PluginHost, PluginHost]]:
    """Two PluginHosts of one process with ``config`` (``make_host``'s), each with a state
    directory of its own (``root/a``, ``root/b``): two machines sharing what ``config`` shares."""
    async with make_host(state_dir=str(fresh_state(root / "a", shared_state)), **config) as a, \
            make_host(state_dir=str(fresh_state(root / "b", shared_state)), **config) as b:
        yield a, b


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m host`` with ``args`` in a subprocess, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "host", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)
