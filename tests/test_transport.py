"""Framing over a Unix socket (host/transport.py): what reading a worker's frames may cost the
host's event loop."""

from __future__ import annotations

import socket
import struct
import threading
import time

import anyio
import pytest

from host import protocol as p
from host.transport import DECODE_BURST, DECODE_SHARE, FrameSocket

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


def expensive_frame(n: int) -> bytes:
    """{type: "result", id: 999999 (no call), value: [[], [], ... n]}: n bytes that decode into n
    Python lists, within the per-frame bound (protocol.MAX_DECODED_BYTES)."""
    body = (b"\x83\xa4type\xa6result\xa2id\xce\x00\x0f\x42\x3f\xa5value\xdd" + struct.pack(">I", n) + b"\x90" * n)
    return struct.pack(">I", len(body)) + body


async def test_a_worker_flooding_costly_frames_gets_a_bounded_share_of_the_event_loop():
    host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    frame = expensive_frame(300_000)
    stop = threading.Event()

    def flood() -> None:  # as plugin code writing its own socket would: back to back, for ever
        try:
            while not stop.is_set():
                worker_end.sendall(frame)
        except OSError:
            pass

    writer = threading.Thread(target=flood, daemon=True)
    host_end.setblocking(False)
    conn = FrameSocket(host_end)
    spent, got = 0.0, 0

    class Timed(p.FrameBuffer):
        def feed(self, data):  # what decoding took, as the loop paid for it
            nonlocal spent
            t0 = time.perf_counter()
            try:
                return super().feed(data)
            finally:
                spent += time.perf_counter() - t0

    def consume(msgs: list[p.Message], sizes: list[int]) -> None:
        nonlocal got
        got += len(msgs)

    conn.frames = Timed(conn.frames.max_frame)
    writer.start()
    window = 4.0
    t0 = time.perf_counter()
    with anyio.move_on_after(window):
        await conn.serve(consume)
    elapsed = time.perf_counter() - t0
    stop.set()
    conn.close()
    worker_end.close()
    writer.join(5)
    assert got > 0
    # its share, a burst and the frame that overspent it (one frame costs what it costs)
    one = spent / got
    assert spent <= DECODE_SHARE * elapsed + DECODE_BURST + 2 * one, (spent, elapsed, got)
