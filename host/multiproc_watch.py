"""The parent of ``serve --processes`` watching its children: a child whose event loop stopped
(a loop that never yields, a deadlock, SIGSTOP) accepts nothing new, since its siblings take the
connections from the shared queue, but holds the connections it has, and their requests, forever.
So the parent asks each child's private socket ``/live`` (answered by its event loop, like its
``/metrics``) and kills one that has not answered for ``[server] process_timeout`` seconds, as
gunicorn's worker timeout does; the supervisor then starts another. A child is watched from its
first answer on, so a slow start is no miss."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable

import aiohttp
import anyio

log = logging.getLogger("host.serve")

PROBES_PER_TIMEOUT = 4  # probes within one process_timeout: a late answer or two is no verdict
UP_PROBE = 2.0          # seconds between probes with process_timeout 0 (only whether it is up)


async def peer_get(path: str, route: str) -> tuple[int, str] | None:
    """GET ``route`` from the serve process on the private Unix socket ``path``: (status, body),
    or None when nothing answers there (restarting, gone)."""
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s,
                    s.get(f"http://peer{route}") as r):
            return r.status, await r.text()
    except (aiohttp.ClientError, OSError):
        return None


async def answers(path: str, within: float) -> bool:
    """Whether the child serving ``path`` answers ``/live`` within ``within`` seconds."""
    with anyio.move_on_after(within):
        got = await peer_get(path, "/live")
        return got is not None and got[0] == 200
    return False


async def watch(index: int, current: Callable[[], subprocess.Popen[bytes] | None], path: str,
                timeout: float, up: Callable[[subprocess.Popen[bytes]], None] = lambda proc: None) -> None:
    """Kill child ``index`` (its process now: ``current()``) once it has answered and then not
    for ``timeout`` seconds (0: never); ``up(proc)`` at its first answer, once it serves. Runs
    until cancelled."""
    interval = timeout / PROBES_PER_TIMEOUT if timeout > 0 else UP_PROBE
    watched: subprocess.Popen[bytes] | None = None
    last = None  # when the process watched last answered; None: not yet
    while True:
        await anyio.sleep(interval)
        proc = current()
        if proc is not watched:  # started again: watched from its first answer
            watched, last = proc, None
        if proc is None or proc.poll() is not None:
            continue
        if await answers(path, interval):
            if last is None:
                log.info("serve process %d (pid %d) is up%s", index, proc.pid,
                         ": watched from now on" if timeout > 0 else "")
                up(proc)
            last = time.monotonic()
        elif timeout > 0 and last is not None and time.monotonic() - last >= timeout and proc.poll() is None:
            log.error("serve process %d (pid %d) has not answered for %g s: killing it", index, proc.pid, timeout)
            proc.kill()
            last = None


__all__ = ["answers", "peer_get", "watch"]
