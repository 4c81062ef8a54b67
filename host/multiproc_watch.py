"""The parent of ``serve --processes`` watching its children: a child whose event loop stopped
(a loop that never yields, a deadlock, SIGSTOP) accepts nothing new, since its siblings take the
connections from the shared queue, but holds the connections it has, and their requests, forever.
So the parent asks each child's private socket ``/live`` (answered by its event loop, like its
``/metrics``) and kills one that has not answered for ``[server] process_timeout`` seconds, as
gunicorn's worker timeout does; the supervisor then starts another. A child is held to that from
its first answer on, so a slow start is no miss; before it, it has ``[server] process_start_timeout``
seconds to answer at all (a start stuck on a lock or a stopped process would otherwise hold its
slot forever, serving nothing).

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

JOINING = "joining"  # /live of a process started again that does not accept yet (cli_serve.py)
PEER_TIMEOUT = 2.0  # seconds the siblings' /metrics (a status, a log) may take before the view goes without them
_PEER_NAME = re.compile(r"metrics-(\d+)\.sock")
PROBES_PER_TIMEOUT = 4  # probes within one process_timeout: a late answer or two is no verdict
UP_PROBE = 2.0
FIRST_PROBES = 0.5      # seconds between probes until a process accepts          # seconds between probes with process_timeout 0 (only whether it is up)


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
                       timeout: float = PEER_TIMEOUT, silent: list[int] | None = None) -> list[tuple[int, str]]:
    """GET (or ``method``) ``route`` of every sibling of process ``index``: (its number, its body)
    of those that answered 200. They are asked all at once under one ``timeout``, so hung ones
    cost that, not that each; a file in ``peers_dir`` not named ``metrics-<number>.sock`` is no
    sibling. ``silent`` gets the numbers of those that did not answer at all."""
    texts: list[tuple[int, str]] = []
    peers = [(int(m[1]), path) for path in sorted(Path(peers_dir).glob("metrics-*"))
             if (m := _PEER_NAME.fullmatch(path.name)) and int(m[1]) != index]

    heard: set[int] = set()

    async def ask(k: int, path: Path) -> None:
        got = await peer_get(str(path), route, method)
        if got is not None:
            heard.add(k)
        if got is not None and got[0] == 200:  # restarting, gone, not serving it: left out
            texts.append((k, got[1]))

    with anyio.move_on_after(timeout):  # the ones that have not answered are left out
        async with anyio.create_task_group() as tg:
            for k, path in peers:
                tg.start_soon(ask, k, path)
    if silent is not None:
        silent += [k for k, _ in peers if k not in heard]
    return sorted(texts)


async def answers(path: str, within: float) -> str | None:
    """What the child serving ``path`` answers ``/live`` within ``within`` seconds: "ok" (it
    accepts), JOINING (alive, not accepting yet), or None."""
    with anyio.move_on_after(within):
        got = await peer_get(path, "/live")
        return got[1] if got is not None and got[0] == 200 else None
    return None


async def watch(index: int, current: Callable[[], subprocess.Popen[bytes] | None], path: str,
                timeout: float, start_timeout: float = 0.0,
                up: Callable[[subprocess.Popen[bytes]], None] = lambda proc: None) -> None:
    """Kill child ``index`` (its process now: ``current()``) once it has answered and then not
    for ``timeout`` seconds, or has not answered at all ``start_timeout`` seconds after it was
    first seen (either 0: never); ``up(proc)`` once it answers that it accepts (it serves). Probed
    every half second until then, so that a sibling started again soon after knows it serves.
    Runs until cancelled."""
    limits = [t for t in (timeout, start_timeout) if t > 0]
    interval = min(limits) / PROBES_PER_TIMEOUT if limits else UP_PROBE
    watched: subprocess.Popen[bytes] | None = None
    last = None  # when the process watched last answered; None: not yet
    seen = 0.0  # when it was first seen
    accepts = False  # the process watched said it accepts
    while True:
        await anyio.sleep(interval if accepts else min(interval, FIRST_PROBES))
        proc = current()
        if proc is not watched:  # started again: watched from its first answer
            watched, last, seen, accepts = proc, None, time.monotonic(), False
        if proc is None or proc.poll() is not None:
            continue
        if (said := await answers(path, interval)) is not None:
            if last is None:
                log.info("serve process %d (pid %d) is up%s", index, proc.pid,
                         ": watched from now on" if timeout > 0 else "")
            if not accepts and said != JOINING:
                accepts = True
                up(proc)
            last = time.monotonic()
            continue
        now = time.monotonic()
        if last is None:
            why = f"has not answered in the {start_timeout:g} s since it started" \
                if start_timeout > 0 and now - seen >= start_timeout else None
        else:
            why = f"has not answered for {timeout:g} s" if timeout > 0 and now - last >= timeout else None
        if why is not None and proc.poll() is None:
            log.error("serve process %d (pid %d) %s: killing it", index, proc.pid, why)
            proc.kill()
            last = None


__all__ = ["PEER_TIMEOUT", "answers", "ask_siblings", "peer_get", "watch"]
