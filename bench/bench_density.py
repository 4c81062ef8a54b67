"""Density (issue 20): 1,000 installed plugins with ``min_workers = 0``: host start and host RSS
with an empty manifest cache (``load = "background"``: the start does not wait for the plugins
the cache does not know; when all of them loaded is reported too) and with a warm one, the first call of a cold plugin against
spawn → ready measured in the same run, and idle workers given back after ``idle_timeout``.

    .venv/bin/python bench/bench_density.py [--quick] [--no-write]

Each start runs in a fresh Python process (so its RSS is that host's alone) over the same
plugins and state directory. Writes bench/RESULTS.md (section "Density").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import run_benchmark  # noqa: E402
from bench_core import PLUGIN, spawn_times  # noqa: E402

from host import HostConfig  # noqa: E402
from host.runtime import Runtime, find_deno  # noqa: E402

ONE_START = """
import json, os, sys, time, anyio
from host import HostConfig, PluginHost, PoolConfig
from host.plugins.lifecycle import STARTING

def rss():
    return int(open(f"/proc/{os.getpid()}/status").read().split("VmRSS:")[1].split()[0]) / 1024

async def main():
    cfg = HostConfig(plugins_dir=sys.argv[1], state_dir=sys.argv[2], load="background",
                     pool=PoolConfig(min_workers=0, max_workers=1, idle_timeout=1.0))
    t0 = time.perf_counter()
    async with PluginHost(cfg) as h:
        start, start_rss = time.perf_counter() - t0, rss()
        loading = sum(s == "loading" for s in h.states().values())
        t = time.perf_counter(); await h.call(sys.argv[3], "add", 1, 2); first = time.perf_counter() - t
        t = time.perf_counter(); await h.call(sys.argv[3], "add", 1, 2); warm = time.perf_counter() - t
        while any(s in STARTING for s in h.states().values()):
            await anyio.sleep(0.02)
        settled = time.perf_counter() - t0
        running = sum(s == "running" for s in h.states().values())
        odd = {i.id: [i.state, i.error] for i in h.plugins() if i.state != "running"}  # said if the run fails
        t = time.perf_counter()
        while h.plugin(sys.argv[3]).workers and time.perf_counter() - t < 30:
            await anyio.sleep(0.05)
        given_back = time.perf_counter() - t if not h.plugin(sys.argv[3]).workers else None
        settled_rss = rss()
    print(json.dumps({"start": start, "rss": start_rss, "loading": loading, "first": first, "warm": warm,
                      "settled": settled, "settled_rss": settled_rss, "running": running, "given_back": given_back,
                      "not_running": dict(list(odd.items())[:5])}))

anyio.run(main)
"""


def one_start(plugins: Path, state: Path, target: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ONE_START, str(plugins), str(state), target],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"a host start failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    n = 300 if args.quick else 1000
    with tempfile.TemporaryDirectory(prefix="bench-density-") as tmp_dir:
        tmp = Path(tmp_dir)
        plugins, state = tmp / "plugins", tmp / "state"
        plugins.mkdir()
        for i in range(n):
            (plugins / f"p{i:04d}.js").write_text(PLUGIN.replace('"calc"', f'"p{i:04d}"'))
        cold = one_start(plugins, state, f"p{n // 2:04d}")
        warm = [one_start(plugins, state, f"p{(n // 3 + k):04d}") for k in range(3 if args.quick else 5)]
        runtime = Runtime.create(HostConfig(plugins_dir=str(plugins), state_dir=str(state)))
        try:
            sp = await spawn_times(runtime, plugins / "p0000.js", 10 if args.quick else 30)
        finally:
            runtime.close()
    for run in (cold, *warm):
        if run["running"] != n or run["given_back"] is None:
            raise SystemExit(f"not every plugin ran, or a worker was never given back: {run}")
    if any(r["loading"] for r in warm):
        raise SystemExit(f"a warm start left plugins loading: {warm}")
    med = {k: statistics.median(r[k] for r in warm) for k in ("start", "rss", "first", "warm", "given_back")}
    spawn = statistics.median(sp)
    return [
        (f"host start, {n:,} plugins, min_workers = 0, empty manifest cache (load = \"background\")",
         f"{cold['start']:.2f} s; host RSS {cold['rss']:.0f} MB; {cold['loading']:,} loading", "≤ 2 s; ≤ 150 MB"),
        ("  every plugin loaded in the background (from the start)",
         f"{cold['settled']:.1f} s; host RSS {cold['settled_rss']:.0f} MB", "(once)"),
        ("  first call of a plugin still loading (its load moved to the front)",
         f"{cold['first'] * 1e3:.0f} ms", "(once)"),
        (f"host start, same plugins, manifest cache warm (median of {len(warm)})",
         f"{med['start']:.2f} s; host RSS {med['rss']:.0f} MB", "≤ 2 s; ≤ 150 MB"),
        ("first call of a cold plugin (spawn, load, call), median", f"{med['first'] * 1e3:.1f} ms", "≤ 2× spawn → ready"),
        ("baseline: spawn → ready of one worker, p50 (same run)", f"{spawn * 1e3:.1f} ms", "(same run)"),
        ("ratio first call / spawn → ready", f"{med['first'] / spawn:.2f}×", "≤ 2×"),
        ("the next call (warm), median", f"{med['warm'] * 1e3:.2f} ms", ""),
        ("worker given back after idle_timeout = 1 s (from the last call), median",
         f"{med['given_back']:.2f} s", "1 s + the reaper's interval"),
    ]


if __name__ == "__main__":
    run_benchmark(main, "density", "Density (issue 20): bench/bench_density.py", find_deno())
