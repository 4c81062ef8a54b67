"""The parent of ``serve --processes`` watching its children: a child whose event loop stopped
(a loop that never yields, a deadlock, SIGSTOP) accepts nothing new, since its siblings take the
connections from the shared queue, but holds the connections it has, and their requests, forever.
So the parent asks each child's private socket ``/live`` (answered by its event loop, like its
``/metrics``) and kills one that has not answered for ``[server] process_timeout`` seconds, as
gunicorn's worker timeout does; the supervisor then starts another. A child is watched from its
first answer on, so a slow start is no miss.

The same private sockets serve what the siblings ask of each other (``ask_siblings``): their
metrics, plugin statuses and logs, and a change to follow (multiproc_views.py)."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import anyio

log = logging.getLogger("host.serve")

PEER_TIMEOUT = 2.0  # seconds the siblings' /metrics (a status, a log) may take before the view goes without them
_PEER_NAME = re.compile(r"metrics-(\d+)\.sock")
PROBES_PER_TIMEOUT = 4  # probes within one process_timeout: a late answer or two is no verdict


async def peer_get(path: str, route: str, method: str = "GET") -> tuple[int, str] | None:
    """GET (or ``method``) ``route`` from the serve process on the private Unix socket ``path``:
    (status, body), or None when nothing answers there (restarting, gone)."""
    try:
        async with (aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s,
                    s.request(method, f"http://peer{route}") as r):
            return r.status, await r.text()
    except (aiohttp.ClientError, OSError):
        return None


async def ask_siblings(index: int, peers_dir: str, route: str, method: str = "GET",
                       timeout: float = PEER_TIMEOUT) -> list[tuple[int, str]]:
    """GET (or ``method``) ``route`` of every sibling of process ``index``: (its number, its body)
    of those that answered 200. They are asked all at once under one ``timeout``, so hung ones
    cost that, not that each; a file in ``peers_dir`` not named ``metrics-<number>.sock`` is no
    sibling."""
    texts: list[tuple[int, str]] = []
    peers = [(int(m[1]), path) for path in sorted(Path(peers_dir).glob("metrics-*"))
             if (m := _PEER_NAME.fullmatch(path.name)) and int(m[1]) != index]

    async def ask(k: int, path: Path) -> None:
        got = await peer_get(str(path), route, method)
        if got is not None and got[0] == 200:  # restarting, gone, not serving it: left out
            texts.append((k, got[1]))

    with anyio.move_on_after(timeout):  # the ones that have not answered are left out
        async with anyio.create_task_group() as tg:
            for k, path in peers:
                tg.start_soon(ask, k, path)
    return sorted(texts)


async def answers(path: str, within: float) -> bool:
    """Whether the child serving ``path`` answers ``/live`` within ``within`` seconds."""
    with anyio.move_on_after(within):
        got = await peer_get(path, "/live")
        return got is not None and got[0] == 200
    return False


async def watch(index: int, current: Callable[[], subprocess.Popen[bytes] | None], path: str,
                timeout: float) -> None:
    """Kill child ``index`` (its process now: ``current()``) once it has answered and then not
    for ``timeout`` seconds; runs until cancelled. ``timeout`` 0: never."""
    if timeout <= 0:
        return
    interval = timeout / PROBES_PER_TIMEOUT
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
                log.info("serve process %d (pid %d) is up: watched from now on", index, proc.pid)
            last = time.monotonic()
        elif last is not None and time.monotonic() - last >= timeout and proc.poll() is None:
            log.error("serve process %d (pid %d) has not answered for %g s: killing it", index, proc.pid, timeout)
            proc.kill()
            last = None


__all__ = ["PEER_TIMEOUT", "answers", "ask_siblings", "peer_get", "watch"]
