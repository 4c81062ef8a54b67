"""Shared by the benchmarks: the table they print and their section of bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

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
        "Medians of repeated runs on a noisy 2-core machine.\n\n"
        f"{table}\n{end}"
    )
    if start in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
