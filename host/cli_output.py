"""What the command line prints besides JSON: aligned tables, ages, a progress line on a tty,
and the Deno inspector's DevTools address."""

from __future__ import annotations

import datetime as dt
import json
import sys
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import anyio

from .balances.result import BalanceResult
from .plugins.lifecycle import STARTING, PluginEvent


def table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Rows (the first is the header) in aligned columns; columns in ``right`` align right;
    trailing spaces are dropped."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ("  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                       for c, (cell, w) in enumerate(zip(r, widths, strict=True))) for r in rows)
    return "".join(line.rstrip() + "\n" for line in lines)


def first_line(text: str, limit: int = 100) -> str:
    """A table cell's worth of a message: its first line, cut at ``limit`` characters."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def age(then: dt.datetime, now: dt.datetime | None = None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _amount(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def balances_table(results: list[BalanceResult]) -> str:
    rows = [["PROVIDER", "BALANCE", "CURRENCY", "USED/QUOTA", "STATUS", "AGE", "ERROR"]]
    for b in results:
        status = "ok" if b.status == "success" else (
            "timeout" if b.status == "timeout" else (b.error_type or "error"))
        used = "-" if b.quota is None and b.used_quota is None else f"{_amount(b.used_quota)}/{_amount(b.quota)}"
        rows.append([b.provider_name if b.provider_name == b.provider else f"{b.provider_name} ({b.provider})",
                     _amount(b.balance), b.currency or "-", used, status + (" (cached)" if b.cached else ""),
                     age(b.last_updated), first_line(b.error_message or "", 80)])
    return table(rows, right=(1, 3))


class Progress:
    """One status line on a terminal, rewritten in place and cleared at the end; nothing at
    all when ``stream`` is not a tty (a pipe, a file, a journal)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.on = enabled and self.stream.isatty()
        self.shown = False

    def update(self, text: str) -> None:
        if self.on:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def start_progress(progress: Progress, plugins: Callable[[], list[Any]]) -> Callable[[PluginEvent], None]:
    """A plugin-event subscriber showing ``starting plugins: 2/5 (calc running)``."""

    def on_event(event: PluginEvent) -> None:
        infos = plugins()
        done = sum(i.state not in STARTING for i in infos)
        progress.update(f"starting plugins: {done}/{len(infos)} ({event.plugin} {event.state})")

    return on_event


async def inspector_targets(address: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The targets the Deno inspector at ``address`` (loopback) lists: each with its
    ``devtoolsFrontendUrl`` and ``webSocketDebuggerUrl``. Waits for it to listen."""

    def fetch() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://{address}/json/list", timeout=2) as r:
            return json.loads(r.read())

    with anyio.fail_after(timeout):
        while True:
            try:
                return await anyio.to_thread.run_sync(fetch)
            except OSError:
                await anyio.sleep(0.1)
