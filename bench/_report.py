"""Shared by the benchmarks: the table they print and their section of bench/RESULTS.md."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def render(rows: list[tuple[str, str, str]]) -> str:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"| {'measure':<{w0}} | {'result':<{w1}} | target |", f"|{'-'*(w0+2)}|{'-'*(w1+2)}|---|"]
    lines += [f"| {a:<{w0}} | {b:<{w1}} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def write_results(key: str, title: str, table: str, deno: str) -> None:
    """Replace (or append) the section between ``<!-- key:start -->`` and ``<!-- key:end -->``."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    version = subprocess.run([deno, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    section = (
        f"{start}\n## {title}\n\n"
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {version}. "
        "Medians over the samples of this run.\n\n"
        f"{table}\n{end}"
    )
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def run_benchmark(main: Callable[[argparse.Namespace], Awaitable[list[tuple[str, str, str]]]],
                  key: str, title: str, deno: str) -> None:
    """Parse ``--quick``/``--no-write``, run ``main``, print its table and record it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args()
    table = render(anyio.run(main, args))
    print(table)
    if not args.no_write:
        write_results(key, title, table, deno)
