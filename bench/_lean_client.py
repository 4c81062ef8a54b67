"""A lean HTTP/1.1 load client for loopback benchmarks: asyncio protocols on kept-alive
connections, one request in flight per connection, the request bytes built once. aiohttp's
client spends ~80 µs of CPU per request; on a 2-core machine that is most of a core the servers
under test then lack (bench_processes.py: N host processes need the cores to show anything).
Every response is still checked: status 200 and ``{"ok": true, "result": expect}``."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

from bench_http import TOKEN, Load, Server, cpu_seconds


class _Conn(asyncio.Protocol):
    """One kept-alive connection: sends the request again as soon as the answer is in."""

    def __init__(self, request: bytes, expect: object, out: Load, start: float, end: float,
                 closed: asyncio.Future[None]) -> None:
        self.request, self.expect, self.out = request, expect, out
        self.start, self.end, self.closed = start, end, closed
        self.buf = bytearray()
        self.body_at = self.body_len = -1
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.body_len < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    return
                head = bytes(buf[:head_end]).lower()
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    self._fail(f"no Content-Length: {head[:200]!r}")
                    return
                self.status = int(head[9:12])
                line_end = head.find(b"\r\n", at + 2)
                self.body_len = int(head[at + 17:line_end if line_end >= 0 else len(head)])
                self.body_at = head_end + 4
            if len(buf) < self.body_at + self.body_len:
                return
            body = bytes(buf[self.body_at:self.body_at + self.body_len])
            del buf[:self.body_at + self.body_len]
            self.body_len = -1
            now = time.perf_counter()
            lat = now - self.sent
            if self.status != 200:
                self._fail(f"HTTP {self.status}: {body[:300]!r}")
                return
            doc = json.loads(body)
            if doc.get("ok") is not True or doc.get("result") != self.expect:
                self._fail(f"unexpected body: {body[:300]!r}")
                return
            if self.start <= now <= self.end:  # completed inside the measuring window
                self.out.latencies.append(lat)
            if now >= self.end:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def _fail(self, why: str) -> None:
        self.out.failures.append(why)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.end and not self.out.failures:
            self.out.failures.append(f"connection lost early: {exc}")
        if not self.closed.done():
            self.closed.set_result(None)


async def lean_load(server: Server, path: str, body: dict, expect: object, *, clients: int,
                    warmup: float, duration: float) -> Load:
    """POST ``body`` to ``path`` from ``clients`` kept-alive connections for ``warmup`` seconds
    (discarded), then ``duration``; the same Load as bench_http.load (latencies, CPU of this
    process and of the server's process in the window)."""
    loop = asyncio.get_running_loop()
    url = urlsplit(server.url)
    data = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data
    out = Load()
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + duration
    closed = [loop.create_future() for _ in range(clients)]
    for fut in closed:
        await loop.create_connection(lambda fut=fut: _Conn(request, expect, out, start, end, fut),
                                     url.hostname, url.port)
    await asyncio.sleep(max(start - time.perf_counter(), 0))
    c0, s0 = time.process_time(), cpu_seconds(server.pid)
    await asyncio.sleep(max(end - time.perf_counter(), 0))
    out.client_cpu = time.process_time() - c0
    out.server_cpu = cpu_seconds(server.pid) - s0
    out.elapsed = duration
    await asyncio.wait_for(asyncio.gather(*closed), timeout=30)
    if out.failures:
        raise SystemExit(f"POST {server.url}{path}: {len(out.failures)} failed requests, the first: {out.failures[0]}")
    if not out.latencies:
        raise SystemExit(f"POST {server.url}{path}: no request completed within the {duration:g}s window")
    return out


__all__ = ["lean_load"]
