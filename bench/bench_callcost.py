"""Host CPU per call (issue 20): this tree against another checkout of the project (``--base``),
in alternating child processes of the same run, so that the ratio holds on a shared machine.

    .venv/bin/python bench/bench_callcost.py --base /path/to/other/checkout [--rounds 5] [--no-write]

Each child imports ``host`` from the tree it is given (PYTHONPATH) and reports, per mode, the
host process's CPU time per call (``time.process_time``: less disturbed by other processes on
the cores than wall time) and calls/s. Prints a table and writes bench/RESULTS.md (section
"callcost")."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = """
export const metadata = { id: "calc", name: "Calc", version: "1.0.0", apiVersion: "1.0" };
export function add(a, b) { return a + b; }
"""
# (label, callers, workers, calls in flight per worker, calls)
MODES = [
    ("one caller, 1 worker (sequential)", 1, 1, 1, 10000),
    ("64 callers, 2 workers, 1 in flight/worker (default)", 64, 2, 1, 20000),
    ("64 callers, 2 workers, 32 in flight/worker (pipelined)", 64, 2, 32, 30000),
]


async def _mode(callers: int, workers: int, inflight: int, calls: int) -> tuple[float, float]:
    import anyio

    from host import HostConfig, PluginHost, PoolConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench-callcost-"))
    (tmp / "plugins").mkdir()
    (tmp / "plugins" / "calc.js").write_text(PLUGIN)
    cfg = HostConfig(plugins_dir=str(tmp / "plugins"), state_dir=str(tmp / "state"),
                     pool=PoolConfig(min_workers=workers, max_workers=workers, max_inflight=inflight))
    per = calls // callers
    async with PluginHost(cfg) as h:
        async def caller(n: int) -> None:
            for _ in range(n):
                assert await h.call("calc", "add", 1, 2) == 3

        async def run(n: int) -> None:
            async with anyio.create_task_group() as tg:
                for _ in range(callers):
                    tg.start_soon(caller, n)

        await run(max(per // 10, 10))  # warm up
        cpu, t = time.process_time(), time.perf_counter()
        await run(per)
        cpu, t = time.process_time() - cpu, time.perf_counter() - t
    return cpu / (per * callers), per * callers / t


def child() -> None:
    import anyio

    out = [anyio.run(_mode, *mode[1:]) for mode in MODES]
    print(json.dumps(out))


def measure(tree: Path) -> list[tuple[float, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"], env=env, capture_output=True, text=True,
                       timeout=600, cwd=tempfile.gettempdir())
    if r.returncode:
        raise SystemExit(f"child with {tree} failed:\n{r.stderr[-2000:]}")
    return [tuple(x) for x in json.loads(r.stdout.strip().splitlines()[-1])]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--base", type=Path, help="the checkout to compare with (e.g. main's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.child:
        child()
        return
    if args.base is None:
        ap.error("--base is required")
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    from _report import render, write_results

    base: list[list[tuple[float, float]]] = []
    this: list[list[tuple[float, float]]] = []
    for i in range(args.rounds):  # alternate, and swap who goes first, so drift hits both alike
        order = [(base, args.base), (this, ROOT)]
        for into, tree in order if i % 2 == 0 else order[::-1]:
            into.append(measure(tree))
    rows = []
    for m, (label, *_rest) in enumerate(MODES):
        b_cpu = statistics.median(r[m][0] for r in base)
        t_cpu = statistics.median(r[m][0] for r in this)
        b_tp = statistics.median(r[m][1] for r in base)
        t_tp = statistics.median(r[m][1] for r in this)
        ratio = statistics.median(t[m][0] / b[m][0] for t, b in zip(this, base, strict=True))
        rows.append((f"{label}: host CPU per call, base → this",
                     f"{b_cpu*1e6:.1f} → {t_cpu*1e6:.1f} µs ({ratio:.2f}×)", "≤ 30 µs"))
        rows.append((f"{label}: calls/s, base → this",
                     f"{b_tp:,.0f} → {t_tp:,.0f}",
                     "≥ 40,000" if "pipelined" in label else "≥ 15,000" if "default" in label else ""))
    rows.append(("rounds (alternating child processes)", str(args.rounds), "medians; ratio = median of per-round ratios"))
    table = render(rows)
    print(table)
    if not args.no_write:
        from host.runtime import find_deno

        write_results("callcost", "Host CPU per call (issue 20): bench/bench_callcost.py --base OTHER_CHECKOUT", table,
                      find_deno())


if __name__ == "__main__":
    main()
