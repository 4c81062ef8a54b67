"""Policy benchmark (issue 4): the per-call cost of the policy stack (rate limit, circuit
breaker, retry bookkeeping, result-cache miss) over a bare call, in one run.

    .venv/bin/python bench/bench_policy.py [--quick] [--no-write]

One plugin on one worker is called in interleaved rounds, its policies switched between
rounds with ``set_policy`` (so that machine noise, and where the scheduler puts the host and
the worker on the 2 cores, hit every variant alike); the table gives each variant's median
latency and its ratio to the bare call's. Writes bench/RESULTS.md (section "Policies").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _report import pct, run_benchmark  # noqa: E402

from host import (  # noqa: E402
    BreakerConfig,
    CacheConfig,
    HostConfig,
    PluginHost,
    PluginSettings,
    PoolConfig,
    RateLimitConfig,
    RetryConfig,
)
from host.runtime import find_deno  # noqa: E402

PLUGIN = """
export const metadata = {{ id: "{id}", name: "{id}", version: "1.0.0", apiVersion: "1.0" }};
export function add(a, b) {{ return a + b; }}
"""

NO_BREAKER = BreakerConfig(enabled=False)
RATE = RateLimitConfig(limit="1000000/second; 1000000/hour")  # never reached: the bookkeeping only
RETRY = RetryConfig(max_attempts=3)
CACHE = CacheConfig(enabled=True, functions=["add"], max_entries=1000)  # unique args: always a miss

OFF = {"rate_limit": RateLimitConfig(), "retry": RetryConfig(), "breaker": NO_BREAKER, "cache": CacheConfig()}
VARIANTS: dict[str, tuple[str, dict]] = {
    "bare": ("bare call (no policies)", OFF),
    "rate": ("+ rate limit (memory://, 2 quotas)", {**OFF, "rate_limit": RATE}),
    "breaker": ("+ circuit breaker", {**OFF, "breaker": BreakerConfig()}),
    "retry": ("+ retry bookkeeping (3 attempts)", {**OFF, "retry": RETRY}),
    "cache": ("+ result-cache miss (key, store)", {**OFF, "cache": CACHE}),
    "full": ("whole stack: all four", {"rate_limit": RATE, "retry": RETRY, "breaker": BreakerConfig(),
                                       "cache": CACHE}),
}


async def round_of(h: PluginHost, variant: str, n: int, base: int) -> tuple[list[float], float]:
    """Latencies of ``n`` calls, and the host's CPU time per call (this thread runs the host)."""
    h.set_policy("calc", **VARIANTS[variant][1])
    out = []
    cpu = time.thread_time()
    for i in range(n):
        t = time.perf_counter()
        await h.call("calc", "add", base + i, 1)
        out.append(time.perf_counter() - t)
    return out, (time.thread_time() - cpu) / n


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rounds, per_round = (6, 300) if args.quick else (40, 400)
    with tempfile.TemporaryDirectory() as tmp:
        plugins_dir = Path(tmp) / "plugins"
        plugins_dir.mkdir()
        (plugins_dir / "calc.js").write_text(PLUGIN.format(id="calc"))
        cfg = HostConfig(
            plugins_dir=str(plugins_dir), state_dir=str(Path(tmp) / "state"),
            pool=PoolConfig(min_workers=1, max_workers=1), health={"interval": 0}, reload={"enabled": False},
            plugins={"calc": PluginSettings()},
        )
        samples: dict[str, list[float]] = {pid: [] for pid in VARIANTS}
        medians: dict[str, list[float]] = {pid: [] for pid in VARIANTS}
        cpu: dict[str, list[float]] = {pid: [] for pid in VARIANTS}
        async with PluginHost(cfg) as h:
            for n, variant in enumerate(VARIANTS):  # warm up every code path
                await round_of(h, variant, 300, -10_000_000 * (n + 1))
            base = 0
            for r in range(rounds):
                order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
                for pid in order:
                    lat, cpu_per_call = await round_of(h, pid, per_round, base)
                    cpu[pid].append(cpu_per_call)
                    base += per_round
                    samples[pid] += lat
                    medians[pid].append(statistics.median(lat))
            info = h.plugin("calc")
            assert info.cache_misses >= 2 * rounds * per_round and info.cache_hits == 0
            assert info.retries == 0 and info.rate_limited == 0 and info.circuit == "closed"
            # a cache hit, for contrast: the same arguments again
            h.set_policy("calc", **VARIANTS["full"][1])
            await h.call("calc", "add", 0, 1)
            hits = [await _timed(h) for _ in range(2000)]
    bare = statistics.median(samples["bare"])
    rows = []
    for pid, (label, _) in VARIANTS.items():
        xs = samples[pid]
        p50 = statistics.median(xs)
        ratio = "" if pid == "bare" else f" ({(p50 / bare - 1) * 100:+.1f} %)"
        target = "≤ +20 % over bare" if pid == "full" else ("baseline" if pid == "bare" else "")
        rows.append((f"{label}: p50 / p99", f"{p50 * 1e6:.0f} µs / {pct(xs, 0.99) * 1e6:.0f} µs{ratio}", target))
    # the same ratio computed per round, where both ran within a second of each other
    per_round_ratio = statistics.median(f / b for f, b in zip(medians["full"], medians["bare"], strict=True))
    rows.append(("whole stack / bare, median of per-round ratios", f"{per_round_ratio:.3f}×", "≤ 1.20×"))
    cpu_bare, cpu_full = statistics.median(cpu["bare"]), statistics.median(cpu["full"])
    rows.append(("host CPU per call, bare / whole stack",
                 f"{cpu_bare * 1e6:.0f} µs / {cpu_full * 1e6:.0f} µs ({(cpu_full / cpu_bare - 1) * 100:+.1f} %)",
                 "≤ +20 %"))
    rows.append(("for contrast: a result-cache hit, p50", f"{statistics.median(hits) * 1e6:.0f} µs", ""))
    rows.append(("calls measured per variant", f"{rounds} rounds × {per_round}", ""))
    return rows


async def _timed(h: PluginHost) -> float:
    t = time.perf_counter()
    await h.call("calc", "add", 0, 1)
    return time.perf_counter() - t


if __name__ == "__main__":
    run_benchmark(main, "policy", "Policies (issue 4): bench/bench_policy.py", find_deno())
