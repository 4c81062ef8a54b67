"""Processes of a test: descendants of this one (deno workers, serve), waiting on events, free ports."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable

import anyio


def descendants(match: Callable[[str], bool], root: int | None = None) -> list[int]:
    """Live processes descended from ``root`` (default: this test process) whose command name
    ``match`` accepts (zombies are left out: a leak of their own, not a running process)."""
    root = root or os.getpid()
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rparen = stat.rindex(")")
        fields = stat[rparen + 2 :].split()
        parents[int(entry)] = int(fields[1])
        if fields[0] != "Z":
            names[int(entry)] = stat[stat.index("(") + 1 : rparen]
    out = []
    for pid, name in names.items():
        if not match(name):
            continue
        p = pid
        while p > 1:
            p = parents.get(p, 0)
            if p == root:
                out.append(pid)
                break
    return out


def deno_children(root: int | None = None) -> list[int]:
    """Deno processes descended from ``root`` (default: this test process)."""
    return descendants(lambda name: name == "deno", root)


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``pred`` until it holds; fail the test (TimeoutError) after ``timeout`` seconds."""

    with anyio.fail_after(timeout):
        while not pred():
            await anyio.sleep(interval)


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def live_processes(match: Callable[[list[bytes]], bool]) -> list[int]:
    """Live processes anywhere on the machine (a zombie is gone) whose argv ``match`` accepts."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:-1]
        except OSError:
            continue
        if match(argv) and not process_gone(int(entry)):
            found.append(int(entry))
    return found


def gone(pid: int | None) -> bool:
    """The process has exited and been reaped (the worker is our child, so no zombie either)."""
    assert pid is not None
    return not os.path.exists(f"/proc/{pid}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sigterm_and_reap(proc: subprocess.Popen, *, expect_workers: bool = True) -> None:
    """SIGTERM a ``python -m host serve`` subprocess: it exits 0 and takes its workers along."""
    workers = deno_children(proc.pid)
    assert workers or not expect_workers
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert all(process_gone(pid) for pid in workers)


def rss() -> int:
    """This process's resident set size, in bytes (a host under test runs in the test process)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


class RssPeak:
    """What ``peak_rss`` saw: RSS at its start and at its highest since, in bytes."""

    def __init__(self, base: int) -> None:
        self.base = self.peak = base

    @property
    def growth(self) -> int:
        return self.peak - self.base

    def mib(self) -> str:
        return f"host RSS grew {self.growth / (1 << 20):.0f} MiB"


@contextlib.asynccontextmanager
async def peak_rss(every: float = 0.005) -> AsyncIterator[RssPeak]:
    """Sample this process's RSS every ``every`` seconds while the block runs (after a collection)."""
    gc.collect()
    seen = RssPeak(rss())

    async def sample() -> None:
        while True:
            seen.peak = max(seen.peak, rss())
            await anyio.sleep(every)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sample)
        try:
            yield seen
        finally:
            tg.cancel_scope.cancel()
