"""``serve --processes N`` (issue 20): HTTP plugin calls/s with one host process and with two
on one socket, from a lean Python client over loopback (_lean_client.py: ~15 % of a core where
aiohttp's client took ~55 %, cores the servers need), in the same run.

    .venv/bin/python bench/bench_processes.py [--quick] [--no-write]

The two servers run side by side (``python -m host serve --processes 1`` and ``2``, calc plugin,
1–4 workers per process) and are measured in interleaved rounds, order reversed every other round;
the ratio is the median of the rounds' ratios. On this 2-core machine the client, both host
processes and their workers share the two cores, so the ratio is a floor: on a machine with
cores to spare, N host processes scale as separate hosts do. Every response is checked.
Writes bench/RESULTS.md (section "Processes").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _lean_client import lean_load  # noqa: E402
from _report import run_benchmark  # noqa: E402
from bench_http import CALL, Load, serve  # noqa: E402

from host.runtime import find_deno  # noqa: E402

CLIENTS = 32


async def main(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    rounds, duration = (3, 1.0) if args.quick else (6, 2.0)
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp_dir:
        tmp = Path(tmp_dir)
        async with serve(tmp, "one", pooled=True, extra=("--processes", "1")) as one, \
                serve(tmp, "two", pooled=True, extra=("--processes", "2")) as two:
            servers = {"one": one, "two": two}
            total = {name: Load() for name in servers}
            ratios = []
            for r in range(rounds):
                rps = {}
                for name in (list(servers) if r % 2 == 0 else list(reversed(servers))):
                    got = await lean_load(servers[name], "/api/plugins/calc/call/add", CALL, 3,
                                          clients=CLIENTS, warmup=1.0 if r == 0 else 0.3, duration=duration)
                    total[name].add(got)
                    rps[name] = got.rps
                ratios.append(rps["two"] / rps["one"])
    one_load, two_load = total.values()
    return [
        one_load.row(f"baseline: serve --processes 1, POST /api/plugins/calc/call/add, {CLIENTS} clients",
                     "(same run)"),
        two_load.row(f"serve --processes 2, same requests, {CLIENTS} clients", "recorded"),
        ("ratio --processes 2 / 1 req/s, median of rounds (min–max)",
         f"{statistics.median(ratios):,.2f}× ({min(ratios):,.2f}–{max(ratios):,.2f}×)",
         "> 1× here (2 cores shared with the client)"),
        ("client CPU, share of one core (lean client, _lean_client.py)",
         f"{one_load.client_cpu / one_load.elapsed:.0%} / {two_load.client_cpu / two_load.elapsed:.0%}", ""),
        ("requests measured (each checked: 200, ok, result)",
         f"{len(one_load.latencies) + len(two_load.latencies):,}: {rounds} interleaved rounds × {duration:g} s", ""),
    ]


if __name__ == "__main__":
    run_benchmark(main, "processes", "Processes (issue 20): bench/bench_processes.py", find_deno())
