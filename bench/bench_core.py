"""Core benchmark (issue 2): warm call latency, throughput, spawn-to-ready, restart after a
crash, idle RSS, against a fresh `deno run` per call measured in the same run.

    .venv/bin/python bench/bench_core.py [--quick] [--no-write]

Prints a table and writes bench/RESULTS.md (section "Core").
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import pct, run_benchmark  # noqa: E402

from host import HostConfig, PluginHost, PoolConfig  # noqa: E402
from host import protocol as p  # noqa: E402
from host.runtime import Runtime, find_deno  # noqa: E402
from host.worker import Worker, WorkerSpec  # noqa: E402

PLUGIN = """
export const metadata = { id: "calc", name: "Calc", version: "1.0.0", apiVersion: "1.0" };
export function add(a, b) { return a + b; }
"""

FRESH = """
const mod = await import(Deno.args[0]);
console.log(JSON.stringify(mod.add(1, 2)));
"""

# Deno alone: start, connect to a Unix socket, send 5 bytes, then wait (the floor for spawn).
BARE = """
const c = await Deno.connect({ transport: "unix", path: Deno.args[0] });
await c.write(new Uint8Array([0, 0, 0, 1, 0xc0]));
await c.read(new Uint8Array(1));
"""

# The floor for a warm call: Deno echoing each length-prefixed frame back on a Unix socket.
ECHO = """
const c = await Deno.connect({ transport: "unix", path: Deno.args[0] });
const buf = new Uint8Array(64 * 1024);
const view = new DataView(buf.buffer);
let end = 0;
for (;;) {
  const n = await c.read(buf.subarray(end));
  if (n === null) break;
  end += n;
  let start = 0;
  while (end - start >= 4) {
    const size = view.getUint32(start);
    if (end - start - 4 < size) break;
    const frame = buf.slice(start, start + 4 + size);
    for (let off = 0; off < frame.length;) off += await c.write(frame.subarray(off));
    start += 4 + size;
  }
  buf.copyWithin(0, start, end);
  end -= start;
}
"""


CPU_ROUNDS = 10  # host CPU per call: the median of this many rounds (a burst of noise spoils one)


async def warm_latency(h: PluginHost, n: int) -> tuple[list[float], float]:
    """Latencies of ``n`` calls one after another, and the host's CPU seconds per call (the
    median over CPU_ROUNDS rounds of n / CPU_ROUNDS calls)."""
    for _ in range(300):
        await h.call("calc", "add", 1, 2)
    out: list[float] = []
    cpus = []
    per = n // CPU_ROUNDS
    for _ in range(CPU_ROUNDS):
        cpu = time.process_time()
        for _ in range(per):
            t = time.perf_counter()
            await h.call("calc", "add", 1, 2)
            out.append(time.perf_counter() - t)
        cpus.append((time.process_time() - cpu) / per)
    return out, statistics.median(cpus)


# The event loops measured: the standard library's, uvloop's (what serve runs on: [server]
# event_loop = "auto"), and trio.
LOOPS: dict[str, dict] = {"asyncio": {"backend": "asyncio"},
                          "uvloop": {"backend": "asyncio", "backend_options": {"use_uvloop": True}},
                          "trio": {"backend": "trio"}}


async def _throughput_run(cfg: HostConfig, total: int) -> list[tuple[float, float]]:
    """Three rounds of ``throughput`` with 64 callers, after a warm-up round."""
    async with PluginHost(cfg) as h:
        await throughput(h, 64, 2000)
        return [await throughput(h, 64, total) for _ in range(3)]


async def _latency_run(cfg: HostConfig, n: int) -> tuple[list[float], list[dict[str, float]], float]:
    async with PluginHost(cfg) as h:
        lat, cpu = await warm_latency(h, n)
        await anyio.sleep(0.3)
        mems = [mem_mb(w.pid) for w in h.plugin("calc").workers if w.calls == 0]
        return lat, mems, cpu


async def throughput(h: PluginHost, callers: int, total: int) -> tuple[float, float]:
    """(calls/s, host CPU seconds per call): process CPU time, the cost the host itself pays."""
    per = total // callers

    async def caller():
        for _ in range(per):
            await h.call("calc", "add", 1, 2)

    cpu = time.process_time()
    t = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)
    return per * callers / (time.perf_counter() - t), (time.process_time() - cpu) / (per * callers)


def raw_round_trips(deno: str, script: Path, run_dir: Path, env: dict, n: int) -> tuple[list[float], float]:
    """The floor of a warm call, same run: a blocking Python client and a Deno echo of the same
    length-prefixed msgpack frames on a Unix socket (a call frame out, the frame back, decoded).
    Returns the round-trip times and the client's CPU seconds per round trip (median of rounds)."""
    path = str(run_dir / "echo.sock")
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen(1)
    proc = subprocess.Popen([deno, "run", "--no-prompt", f"--allow-read={path}", f"--allow-write={path}",
                             f"--allow-net=unix:{path}", str(script), path], env=env)
    conn, _ = lst.accept()
    try:
        def once() -> None:
            conn.sendall(p.encode(p.Call(id=1, fn="add", args=[1, 2], timeout_ms=30000)))
            (size,) = p.HEADER.unpack(conn.recv(4, socket.MSG_WAITALL))
            p.decode_body(conn.recv(size, socket.MSG_WAITALL))

        for _ in range(1000):
            once()
        out: list[float] = []
        cpus = []
        per = n // CPU_ROUNDS
        for _ in range(CPU_ROUNDS):  # as for the host's calls: the median of the rounds
            cpu = time.process_time()
            for _ in range(per):
                t = time.perf_counter()
                once()
                out.append(time.perf_counter() - t)
            cpus.append((time.process_time() - cpu) / per)
        return out, statistics.median(cpus)
    finally:
        conn.close()
        lst.close()
        proc.wait()
        os.unlink(path)


async def spawn_times(runtime: Runtime, module: Path, n: int) -> list[float]:
    spec = WorkerSpec(plugin_id="calc", module=module, base_dir=module.parent, read_paths=[str(module)])
    out = []
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            w = Worker(spec, runtime)
            t = time.perf_counter()
            await tg.start(w.run)
            out.append(time.perf_counter() - t)
            await w.shutdown()
    return out


async def restart_times(h: PluginHost, n: int, spare: bool = False,
                        takeovers: list[float] | None = None) -> list[float]:
    """SIGKILL → a ready replacement, each time. With ``takeovers``, also the host's own part:
    from the moment the host has seen the worker's end (its ``exited`` event) to a ready worker
    serving in its place, which is what a hot spare saves (the rest is the kernel's teardown)."""
    out = []
    for _ in range(n):
        pool = h.pool("calc")
        if spare:  # a ready spare, as it is between two crashes
            with anyio.fail_after(10):
                while not (pool.spares and pool.spares[0].state == "ready"):
                    await anyio.sleep(0.005)
        victim = pool.workers[0]
        pid = victim.pid
        t = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(10):
            if takeovers is not None:
                await victim.exited.wait()
                seen = time.perf_counter()
                while not any(w.state == "ready" and w.pid != pid for w in pool.workers):
                    await anyio.sleep(0)
                takeovers.append(time.perf_counter() - seen)
            while not any(w.state == "ready" and w.pid != pid for w in pool.workers):
                await anyio.sleep(0.0005)
        out.append(time.perf_counter() - t)
        await h.call("calc", "add", 1, 2)  # a success resets the restart backoff
    return out


def mem_mb(pid: int) -> dict[str, float]:
    """Rss, Pss (shared pages split between sharers) and private pages, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                out[key] = int(rest.split()[0]) / 1024
    out["Private"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    return out


async def bare_deno(deno: str, script: Path, run_dir: Path, env: dict, n: int
                    ) -> tuple[list[float], list[dict[str, float]]]:
    """Deno alone: spawn → first bytes on our socket, and its idle memory (the same run's floor),
    measured as the workers' is: the last 3 alive at once, so that they share pages as 3 workers do."""
    times, alive = [], []
    for i in range(n):
        path = str(run_dir / f"bare{i}.sock")
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(path)
        lst.listen(1)
        argv = [deno, "run", "--no-prompt", f"--allow-read={path}", f"--allow-write={path}",
                f"--allow-net=unix:{path}", str(script), path]
        t = time.perf_counter()
        proc = subprocess.Popen(argv, env=env)
        conn, _ = lst.accept()
        conn.recv(16)
        times.append(time.perf_counter() - t)
        alive.append((proc, conn, lst, path))
        if i < n - 3:
            _close_bare(*alive.pop())
    await anyio.sleep(0.3)
    mems = [mem_mb(proc.pid) for proc, *_ in alive]
    for one in alive:
        _close_bare(*one)
    return times, mems


def _close_bare(proc: subprocess.Popen, conn: socket.socket, lst: socket.socket, path: str) -> None:
    conn.close()
    lst.close()
    proc.wait()
    os.unlink(path)


def fresh_deno_per_call(deno: str, module: Path, script: Path, n: int, env: dict) -> list[float]:
    argv = [deno, "run", "--no-prompt", f"--allow-read={module}", str(script), str(module)]
    subprocess.run(argv, check=True, capture_output=True, env=env)  # warm the cache
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, env=env)
        out.append(time.perf_counter() - t)
        assert r.stdout.strip() == b"3", r
    return out


def evict_page_cache(path: str) -> None:
    """Drops the binary's pages from the page cache (those no running process maps), so that the
    idle memory rows of every run start from the state exec leaves them in. Just after
    `make venv` wrote the binary, its pages are the write's (large folios on this kernel): every
    Deno process then maps ~4 MB more of it (RSS 38.9 against 35.0 for a worker, Deno alone the
    same), which says how the file was installed, not what a worker costs."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # a page still dirty from the write is not dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    quick = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="bench-core-"))
    plugins = tmp / "plugins"
    plugins.mkdir()
    (plugins / "calc.js").write_text(PLUGIN)
    fresh = tmp / "fresh.js"
    fresh.write_text(FRESH)
    bare = tmp / "bare.js"
    bare.write_text(BARE)
    echo = tmp / "echo.js"
    echo.write_text(ECHO)
    state = tmp / "state"
    rows: list[tuple[str, str, str]] = []

    deno = find_deno()
    evict_page_cache(deno)
    env = {"PATH": "/usr/bin:/bin", "DENO_DIR": str(state / "deno"), "NO_COLOR": "1",
           "DENO_NO_UPDATE_CHECK": "1"}
    raw, raw_cpu = await anyio.to_thread.run_sync(
        raw_round_trips, deno, echo, tmp, env, 5000 if quick else 20000)
    raw50 = statistics.median(raw)
    rows.append(("baseline: raw Python↔Deno round trip on a Unix socket, p50 / client CPU",
                 f"{raw50*1e6:.0f} µs / {raw_cpu*1e6:.1f} µs", "(same run: blocking client, Deno echo)"))
    p50 = 0.0
    for backend in LOOPS:
        cfg = HostConfig(plugins_dir=str(plugins), state_dir=str(state),
                         pool=PoolConfig(min_workers=3, max_workers=3))
        lat = await anyio.to_thread.run_sync(
            lambda cfg=cfg, backend=backend: anyio.run(_latency_run, cfg, 2000 if quick else 10000,
                                                       **LOOPS[backend]))
        if backend == "asyncio":
            p50 = statistics.median(lat[0])
            mems = lat[1]
        rows.append((f"warm call latency p50 / p99 ({backend})",
                     f"{statistics.median(lat[0])*1e6:.0f} µs / {pct(lat[0], .99)*1e6:.0f} µs", "p50 ≤ 150 µs"))
        rows.append((f"warm call p50 / raw round trip; host CPU per call, one caller, median of {CPU_ROUNDS} rounds ({backend})",
                     f"{statistics.median(lat[0]) / raw50:.1f}× / {lat[2]*1e6:.1f} µs", "≤ 2× / ≤ 30 µs"))
    bare_t, bare_mems = await bare_deno(deno, bare, tmp, env, 8 if quick else 20)
    rss = statistics.median(m["Rss"] for m in mems)
    pss = statistics.median(m["Pss"] for m in mems)
    priv = statistics.median(m["Private"] for m in mems)
    rows.append(("idle worker RSS (fresh, 3 workers) / PSS / private",
                 f"{rss:.1f} / {pss:.1f} / {priv:.1f} MB", "RSS ≤ 35 MB; PSS ≤ 20 MB"))
    rows.append(("baseline: idle RSS / PSS / private of Deno alone on a socket (3 at once)",
                 " / ".join(f"{statistics.median(m[k] for m in bare_mems):.1f}" for k in ("Rss", "Pss", "Private"))
                 + " MB", "(same run)"))

    cfg = HostConfig(plugins_dir=str(plugins), state_dir=str(state),
                     pool=PoolConfig(min_workers=1, max_workers=1, crash_loop_threshold=10**6))
    async with PluginHost(cfg) as h:
        rt = await restart_times(h, 10 if quick else 30)
        rows.append(("restart after SIGKILL → ready, p50 / max", f"{statistics.median(rt)*1e3:.1f} ms / {max(rt)*1e3:.1f} ms",
                     "≤ 50 ms"))
    cfg = HostConfig(plugins_dir=str(plugins), state_dir=str(state),
                     pool=PoolConfig(min_workers=1, max_workers=1, spares=1, crash_loop_threshold=10**6))
    async with PluginHost(cfg) as h:
        takeovers: list[float] = []
        rs = await restart_times(h, 10 if quick else 30, spare=True, takeovers=takeovers)
        rows.append(("same, with a hot spare (spares=1), p50 / max",
                     f"{statistics.median(rs)*1e3:.2f} ms / {max(rs)*1e3:.2f} ms",
                     f"{statistics.median(rt) / statistics.median(rs):.0f}× faster (the rest: the kernel tearing down the killed process)"))
        rows.append(("crash seen by the host → spare serving, p50 / max",
                     f"{statistics.median(takeovers)*1e3:.3f} ms / {max(takeovers)*1e3:.3f} ms", "≤ 1 ms"))

    for inflight in (1, 32):
        cfg = HostConfig(plugins_dir=str(plugins), state_dir=str(state),
                         pool=PoolConfig(min_workers=2, max_workers=2, max_inflight=inflight))
        for backend in ("asyncio", "uvloop"):
            tp = await anyio.to_thread.run_sync(
                lambda cfg=cfg, backend=backend: anyio.run(_throughput_run, cfg, 10000 if quick else 30000,
                                                           **LOOPS[backend]))
            rows.append((f"throughput, 64 callers, 2 workers, {inflight} in flight/worker ({backend})",
                         f"{statistics.median(t for t, _ in tp):,.0f} calls/s",
                         "≥ 15,000 calls/s" if inflight == 1 else "≥ 40,000 calls/s"))
            rows.append((f"host CPU per call, same run ({inflight} in flight/worker, {backend})",
                         f"{statistics.median(c for _, c in tp)*1e6:.1f} µs", "≤ 30 µs"))

    runtime = Runtime.create(HostConfig(plugins_dir=str(plugins), state_dir=str(state)))
    try:
        sp = await spawn_times(runtime, plugins / "calc.js", 15 if quick else 40)
    finally:
        runtime.close()
    rows.append(("spawn → ready (handshake done, plugin loaded), p50 / p99",
                 f"{statistics.median(sp)*1e3:.1f} ms / {pct(sp, .99)*1e3:.1f} ms", "p50 ≤ 25 ms"))
    rows.append(("baseline: Deno alone, spawn → first bytes on a socket, p50",
                 f"{statistics.median(bare_t)*1e3:.1f} ms", "(same run; 11.5 ms measured alone)"))
    rows.append(("spawn overhead over Deno alone (p50)",
                 f"{(statistics.median(sp) - statistics.median(bare_t))*1e3:.1f} ms", "≤ 13.5 ms"))
    fr = fresh_deno_per_call(deno, plugins / "calc.js", fresh, 10 if quick else 30, env)
    fr50 = statistics.median(fr)
    rows.append(("baseline: fresh `deno run` per call, p50", f"{fr50*1e3:.1f} ms", "(same run)"))
    rows.append(("ratio fresh-per-call / warm call (p50)", f"{fr50 / p50:,.0f}×", "≥ 100×"))
    return rows


if __name__ == "__main__":
    run_benchmark(main, "core", "Core (issue 2): `make bench` → bench/bench_core.py", find_deno())
