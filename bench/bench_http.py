"""HTTP benchmark (issue 6): requests/s and latency of the real server under load, from a
Python client over loopback: ``POST /execute`` on warm pooled workers and with a fresh worker
per request, ``POST /api/plugins/calc/call/add``, and ``GET /healthz`` as the ceiling of the
HTTP stack itself, all in one run.

    .venv/bin/python bench/bench_http.py [--quick] [--no-write]

Two servers run side by side, ``python -m host serve`` subprocesses with their own host.toml
(``[execute] pooled = true`` / ``false``) and state directory. The modes are measured in
interleaved rounds (order reversed every other round) so that the noise of a shared 2-core
machine hits them alike; the table gives each mode over all rounds, and the pooled/fresh ratio
as the median of the rounds' ratios. Every response is checked: a single failure exits
non-zero instead of reporting numbers. Writes bench/RESULTS.md (section "HTTP server").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import pct, run_benchmark  # noqa: E402

from host.runtime import find_deno  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
PLUGINS = ROOT / "plugins"  # calc.ts: add(a, b)
RUN_PREFIX = "plugin-host-"  # host.runtime names each server's socket dir plugin-host-<pid>-*

EXECUTE = {"code": "export default (x) => x * 2", "input": 21}
CALL = {"args": [1, 2]}

# [execute] per mode; the pool sizes are the same so that only `pooled` differs.
CONFIG = """\
[execute]
pooled = {pooled}
min_workers = 2
max_workers = 4
"""

TOKEN = "bench-admin-token"  # /execute needs the admin token (issue 14): every request sends it
STARTUP_TIMEOUT = 60.0   # a fresh state dir: the server's first start fills its Deno cache
STOP_TIMEOUT = 20.0      # SIGTERM → exit (drain grace 10 s by default)
REQUEST_TIMEOUT = 30.0


@dataclass
class Load:
    """One load run: the latency of every request completed inside the measuring window."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    failures: list[str] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds of CPU in the window: this process (the client)
    server_cpu: float = 0.0  # the server process alone (its workers are other processes)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed

    def row(self, measure: str, target: str) -> tuple[str, str, str]:
        lat = self.latencies
        return (measure, f"{self.rps:,.0f} req/s; p50 / p99 {statistics.median(lat)*1e3:.1f} / "
                         f"{pct(lat, .99)*1e3:.1f} ms", target)

    def add(self, other: Load) -> None:
        self.latencies += other.latencies
        self.elapsed += other.elapsed
        self.failures += other.failures
        self.client_cpu += other.client_cpu
        self.server_cpu += other.server_cpu

    def cpu_per_request(self) -> str:
        n = len(self.latencies)
        return f"{self.client_cpu / n * 1e6:,.0f} / {self.server_cpu / n * 1e6:,.0f}"


@dataclass
class Server:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def survivors(server_pid: int) -> list[int]:
    """Processes still holding the socket directory of the server ``server_pid`` (its workers)."""
    mark = f"{RUN_PREFIX}{server_pid}-".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if mark in f.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out


@contextlib.asynccontextmanager
async def serve(tmp: Path, name: str, *, pooled: bool, extra: tuple[str, ...] = ()) -> AsyncIterator[Server]:
    """``python -m host serve`` with ``[execute] pooled``, yielded once /healthz answers 200; on exit SIGTERM, and the server must exit 0 leaving no worker behind."""
    conf = tmp / f"{name}.toml"
    conf.write_text(CONFIG.format(pooled=str(pooled).lower()))
    port = free_port()
    log_path = tmp / f"{name}.log"
    argv = [str(PY), "-m", "host", "serve", "--plugins", str(PLUGINS), "--state-dir", str(tmp / f"state-{name}"),
            "--port", str(port), "--enable-execute", "--config", str(conf), *extra]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
                                env={**os.environ, "PLUGIN_HOST_ADMIN_TOKEN": TOKEN})
    try:
        async with aiohttp.ClientSession() as s:
            with anyio.fail_after(STARTUP_TIMEOUT):
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"{name}: server exited {proc.returncode}:\n{log_path.read_text()}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with s.get(f"{url}/healthz") as r:
                            if r.status == 200:
                                break
                    await anyio.sleep(0.05)
        yield Server(url, proc.pid)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        with anyio.move_on_after(STOP_TIMEOUT):
            while proc.poll() is None:
                await anyio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise SystemExit(f"{name}: server did not stop within {STOP_TIMEOUT:g}s of SIGTERM")
    left = survivors(proc.pid)
    if proc.returncode != 0 or left:
        raise SystemExit(f"{name}: server exited {proc.returncode}, workers left {left}:\n"
                         f"{log_path.read_text()[-2000:]}")


async def load(server: Server, method: str, path: str, body: dict | None, expect: object, *,
               clients: int, warmup: float, duration: float) -> Load:
    """``clients`` requesters loop for ``warmup`` seconds (discarded), then for ``duration``;
    a response counts when it is 200 with ``{"ok": true, "result": expect}`` (``expect``
    None: /healthz, only the status)."""
    url = server.url + path
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    out = Load()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:

        async def one() -> float:
            t = time.perf_counter()
            async with s.request(method, url, data=data, headers=headers) as r:
                raw = await r.read()
            lat = time.perf_counter() - t
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}: {raw[:300]!r}")
            if expect is not None:
                doc = json.loads(raw)
                if doc.get("ok") is not True or doc.get("result") != expect:
                    raise ValueError(f"unexpected body: {raw[:300]!r}")
            return lat

        async def requester(start: float, end: float) -> None:
            while (now := time.perf_counter()) < end:
                try:
                    lat = await one()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    out.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if start <= now + lat <= end:  # completed inside the measuring window
                    out.latencies.append(lat)

        async def cpu_meter(start: float, end: float) -> None:
            await anyio.sleep(max(start - time.perf_counter(), 0))
            c0, s0 = time.process_time(), cpu_seconds(server.pid)
            await anyio.sleep(max(end - time.perf_counter(), 0))
            out.client_cpu = time.process_time() - c0
            out.server_cpu = cpu_seconds(server.pid) - s0

        t0 = time.perf_counter()
        start, end = t0 + warmup, t0 + warmup + duration
        async with anyio.create_task_group() as tg:
            tg.start_soon(cpu_meter, start, end)
            for _ in range(clients):
                tg.start_soon(requester, start, end)
        out.elapsed = duration
    if out.failures:
        raise SystemExit(f"{method} {url}: {len(out.failures)} failed requests, the first: {out.failures[0]}")
    if not out.latencies:
        raise SystemExit(f"{method} {url}: no request completed within the {duration:g}s window")
    return out


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rounds, duration = (3, 1.0) if args.quick else (6, 2.0)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_dir:
        return await measure(Path(tmp_dir), rounds, duration)


async def measure(tmp: Path, rounds: int, duration: float) -> list[tuple[str, str, str]]:
    warmup, rewarm = 1.0, 0.3  # the first round lets the pools grow; later ones only reconnect
    async with serve(tmp, "pooled", pooled=True) as pooled_srv, serve(tmp, "fresh", pooled=False) as fresh_srv:
        modes = {
            "healthz": (pooled_srv, "GET", "/healthz", None, None, 16),
            "call": (pooled_srv, "POST", "/api/plugins/calc/call/add", CALL, 3, 16),
            "pooled": (pooled_srv, "POST", "/execute", EXECUTE, 42, 16),
            "fresh": (fresh_srv, "POST", "/execute", EXECUTE, 42, 4),
        }
        total = {name: Load() for name in modes}
        ratios = []
        for r in range(rounds):
            rps = {}
            for name in (list(modes) if r % 2 == 0 else list(reversed(modes))):
                srv, method, path, body, expect, clients = modes[name]
                got = await load(srv, method, path, body, expect, clients=clients,
                                 warmup=warmup if r == 0 else rewarm, duration=duration)
                total[name].add(got)
                rps[name] = got.rps
            ratios.append(rps["pooled"] / rps["fresh"])
    hz, call, pooled, fresh = total.values()

    return [
        hz.row("baseline: GET /healthz (HTTP stack, no worker), 16 clients", "(same run)"),
        call.row("POST /api/plugins/calc/call/add (pool 1–4 workers), 16 clients", "recorded"),
        pooled.row("POST /execute, pooled (2–4 warm workers), 16 clients", "recorded"),
        fresh.row("POST /execute, fresh worker per request (≤ 4), 4 clients", "(same run)"),
        ("ratio pooled / fresh /execute req/s, median of rounds (min–max)",
         f"{statistics.median(ratios):,.1f}× ({min(ratios):,.1f}–{max(ratios):,.1f}×)", "≥ 20×"),
        ("CPU µs per request, client / server process: healthz; call; pooled; fresh",
         "; ".join(x.cpu_per_request() for x in (hz, call, pooled, fresh)), ""),
        ("requests measured (each checked: 200, ok, result)",
         f"{sum(len(x.latencies) for x in total.values()):,}: {rounds} interleaved rounds × "
         f"{duration:g} s per mode, 0 failed", ""),
    ]


if __name__ == "__main__":
    run_benchmark(main, "http", "HTTP server (issue 6): bench/bench_http.py", find_deno())
