"""Framing over a non-blocking Unix socket. Sends and receives go straight to the socket
when it is ready, and only wait (anyio.wait_readable/writable) when it is not: a warm call
costs two syscalls and no extra scheduling."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from . import protocol as p
from .errors import ProtocolError
from .event_loop import mark_asyncio

_RECV_SIZE = 256 * 1024
_GATHER = 64  # frames handed to one sendmsg
_YIELD_EVERY = 16  # reads in a row without waiting before the reader lets others run
# A worker's frames are decoded in the host's event loop, and MessagePack of many small objects
# costs far more to decode than to send: a 1.5 MiB frame of empty arrays (within the per-frame
# bound, protocol.MAX_DECODED_BYTES) took ~1 s of the loop on a busy 2-core machine, and a worker
# writing such frames back to back (a result for no call: nothing fails) held the loop 90% of the
# time. Each connection's reading earns DECODE_SHARE of the loop's time, with DECODE_BURST saved up
# at most; a read that overspends stops the reading of that socket for what it overspent (at most
# PAUSE_MAX at once), so a flooding worker waits on its own writes, not the host on its frames.
DECODE_SHARE = 0.25
DECODE_BURST = 0.25  # seconds: a large answer now and then is never held back
# A read this short into an empty frame buffer decodes at most that many bytes (a few hundred
# objects at most): not timed, so a plain call's answer pays nothing for the share.
_UNCHARGED = 512
PAUSE_MAX = 4.0  # seconds; a worker's connection: at most half its heartbeat_timeout, never taken for silent


class DecodeShare:
    """The loop's time the readings of one peer's connections earn for decoding (DECODE_SHARE,
    DECODE_BURST saved up at most): one for all the workers of a plugin, whose author writes
    them all (a share each gave a plugin of 4 flooding workers the whole loop)."""

    __slots__ = ("__weakref__", "at", "credit")

    def __init__(self) -> None:
        self.credit, self.at = DECODE_BURST, time.perf_counter()


class ConnectionLost(Exception):
    """The peer closed the socket or it broke."""


class WriteBufferFull(Exception):
    """The peer left more bytes unread, for longer, than it may: it stopped reading."""


class UnixListener:
    """A listening socket for exactly one expected worker connection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(path)
            os.chmod(path, 0o600)
            self._sock.listen(1)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    async def accept(self, max_frame: int, pause_max: float = PAUSE_MAX,
                     share: DecodeShare | None = None) -> FrameSocket:
        """The worker's connection, framed with ``max_frame``; unread for at most ``pause_max``
        seconds at once when its frames cost more than ``share`` (its own, by default) earns."""
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                await anyio.wait_readable(self._sock)
                continue
            conn.setblocking(False)
            return FrameSocket(conn, max_frame, pause_max, share)

    def close(self) -> None:
        """Stop listening and unlink the path so nobody else can connect."""
        if self._sock.fileno() >= 0:
            self._sock.close()
        try:
            os.unlink(self.path)
        except OSError:  # gone already, or its directory removed: nobody can connect either way
            pass


class FrameSocket:
    """Length-prefixed msgpack frames over a connected non-blocking socket.

    What the peer has not read yet waits in a queue of frames (never copied into one growing
    buffer). ``wait_for_space`` lets a sender whose traffic the peer drives (replies to its
    requests) wait until the queue is under a bound before it even encodes its frame, so a
    peer that stops reading cannot make the host hold more than that bound plus one frame."""

    def __init__(self, sock: socket.socket, max_frame: int = p.DEFAULT_MAX_FRAME, pause_max: float = PAUSE_MAX,
                 share: DecodeShare | None = None) -> None:
        self._sock = sock
        self.pause_max = pause_max
        self.frames = p.FrameBuffer(max_frame)
        self._wqueue: deque[memoryview] = deque()
        self.queued = 0  # bytes sent but not yet written to the socket
        self._space: anyio.Event | None = None  # set when written bytes leave the queue
        self._flushing: anyio.Event | None = None
        self._reads = 0
        self.closed = False
        self._readable: asyncio.Future[None] | None = None
        # On asyncio the socket stays registered with the selector for its whole life instead
        # of being added and removed around every wait (two epoll_ctl calls per read saved).
        self.loop: asyncio.AbstractEventLoop | None  # the asyncio loop it is registered with (None on trio)
        try:
            self.loop = asyncio.get_running_loop()
        except RuntimeError:  # trio (anyio's other backend): its own wait, without anyio's lookup
            import trio

            self.loop = None
            self._trio_readable = trio.lowlevel.wait_readable
        else:
            mark_asyncio()  # the reader's callbacks start tasks (host calls): anyio must see asyncio there
            self.loop.add_reader(sock.fileno(), self._on_readable)
        self._drained = False  # the last read emptied the socket
        # ``serve`` on asyncio: the frames' consumer, called from ``_on_readable``, and the
        # future its caller waits on until the stream ends.
        self._consumer: Callable[[list[p.Message], list[int]], None] | None = None
        self._served: asyncio.Future[None] | None = None
        self._share = share if share is not None else DecodeShare()  # decoding time (DECODE_SHARE)
        self._paused: asyncio.TimerHandle | None = None  # serve mode: reading resumes then
        self._owed = 0.0  # ``receive``: seconds to leave the socket unread before the next read

    def _charge(self, t0: float) -> float:
        """Charge a read that started at ``t0`` (its decoding) to this connection's share of the
        loop: the seconds its socket must now go unread (0: none)."""
        now, share = time.perf_counter(), self._share
        credit = min(DECODE_BURST, share.credit + (max(t0, share.at) - share.at) * DECODE_SHARE) - (now - t0)
        share.credit, share.at = credit, now
        return 0.0 if credit >= 0 else min(-credit / DECODE_SHARE, self.pause_max)

    def _on_readable(self) -> None:
        if self._consumer is not None:
            self._consume()
            return
        fut = self._readable
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def serve(self, consumer: Callable[[list[p.Message], list[int]], None]) -> None:
        """Hand every batch of complete messages, with their body sizes, to ``consumer`` until
        the stream ends: ConnectionLost at EOF, ProtocolError for a bad frame (after the good
        frames before it were handed over); what ``consumer`` raises ends it too. On asyncio
        the socket is read in the event loop's readable callback and ``consumer`` runs there:
        an answer reaches its caller without a reader task being woken in between (one loop
        turn, one task step less per call). Elsewhere, a loop over ``receive``."""
        if self.loop is None:
            while True:
                msgs = await self.receive()
                consumer(msgs, self.frames.sizes)
        try:
            self.frames.check()
        except ProtocolError:
            self._stop_reading()
            raise
        if self._sock.fileno() < 0:
            raise ConnectionLost("socket closed")
        self._served = served = self.loop.create_future()
        self._consumer = consumer
        self._on_readable()  # what arrived while nobody read: the selector reports it too, later
        try:
            await served
        finally:
            self._consumer = self._served = None
            if self._paused is not None:  # left while paused: registered again, as ``receive`` expects
                self._paused.cancel()
                self._paused = None
                if not self.closed and self._sock.fileno() >= 0:
                    self.loop.add_reader(self._sock.fileno(), self._on_readable)

    def _consume(self) -> None:
        """One read in the readable callback (serve mode): at most _RECV_SIZE bytes, so that a
        worker that floods the socket shares the loop with everything else."""
        try:
            data = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end_serving(ConnectionLost(str(exc)))
            return
        if not data:
            self._end_serving(ConnectionLost("end of stream"))
            return
        frames = self.frames
        try:
            if len(data) < _UNCHARGED and not frames._buf:  # nothing costly to decode (a call's answer)
                msgs, pause = frames.feed(data), 0.0
            else:
                t0 = time.perf_counter()
                msgs = frames.feed(data)
                pause = self._charge(t0)
            if msgs:
                assert self._consumer is not None
                self._consumer(msgs, frames.sizes)
            if frames.error is not None:  # a bad frame after good ones: they went first, now the stream ends
                raise frames.error
        except Exception as exc:
            self._end_serving(exc)
            return
        if pause and self._consumer is not None and self.loop is not None:
            self.loop.remove_reader(self._sock.fileno())
            self._paused = self.loop.call_later(pause, self._resume)

    def _resume(self) -> None:
        """Serve mode: read again after a pause (DECODE_SHARE), unless the stream ended meanwhile."""
        self._paused = None
        if self._consumer is not None and self.loop is not None and not self.closed and self._sock.fileno() >= 0:
            self.loop.add_reader(self._sock.fileno(), self._on_readable)

    def _end_serving(self, exc: BaseException) -> None:
        self._stop_reading()
        self._consumer = None
        served = self._served
        if served is not None and not served.done():
            served.set_exception(exc)

    async def _wait_readable(self) -> None:
        if self.loop is None:
            await self._trio_readable(self._sock)
            return
        self._readable = self.loop.create_future()
        try:
            await self._readable
        finally:
            self._readable = None

    async def receive(self) -> list[p.Message]:
        """The next complete messages (at least one). ConnectionLost at EOF; ProtocolError
        for a bad frame (after the good frames that came before it)."""
        try:
            self.frames.check()
        except ProtocolError:
            self._stop_reading()
            raise
        if self._owed:
            await self._sleep_unread()
        while True:
            if self._drained:  # nothing can be there yet: skip a read that would fail
                self._drained = False
                self._reads = 0
                await self._wait_readable()
            try:
                data = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                self._drained = True
                continue
            except OSError as exc:
                self._stop_reading()
                raise ConnectionLost(str(exc)) from None
            if not data:
                self._stop_reading()
                raise ConnectionLost("end of stream")
            self._reads += 1
            if self._reads >= _YIELD_EVERY:
                self._reads = 0
                await anyio.lowlevel.checkpoint()
            self._drained = len(data) < _RECV_SIZE
            cheap = len(data) < _UNCHARGED and not self.frames._buf
            t0 = 0.0 if cheap else time.perf_counter()
            try:
                msgs = self.frames.feed(data)
            except ProtocolError:
                self._stop_reading()
                raise
            if not cheap:
                self._owed += self._charge(t0)
            if msgs:  # handed over first: the pause holds back what comes next, not these
                return msgs
            if self._owed:
                await self._sleep_unread()

    async def _sleep_unread(self) -> None:
        """``receive``'s pause (DECODE_SHARE): out of the selector meanwhile on asyncio, where the
        socket stays registered and a readable one would wake the loop on every turn."""
        pause, self._owed = min(self._owed, self.pause_max), 0.0
        if self.loop is not None and self._sock.fileno() >= 0:
            self.loop.remove_reader(self._sock.fileno())
            try:
                await anyio.sleep(pause)
            finally:
                if not self.closed and self._sock.fileno() >= 0:
                    self.loop.add_reader(self._sock.fileno(), self._on_readable)
        else:
            await anyio.sleep(pause)

    async def send(self, data: bytes | bytearray) -> None:
        """Write one encoded frame, in order with every other send."""
        pending = self.push(data)
        if pending is not None:
            await pending

    def push(self, data: bytes | bytearray) -> Awaitable[None] | None:
        """Queue one frame, in order with every other: None when the socket took it whole at
        once, else what to await until it has been written (the caller must await it: the
        first such frame drives the writes of everything queued behind it)."""
        if self.closed:
            raise ConnectionLost("socket closed")
        if self._flushing is not None:  # a partial write is pending: queue behind it
            self._wqueue.append(memoryview(data))
            self.queued += len(data)
            return self._written(self._flushing)
        try:
            n = self._sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            raise ConnectionLost(str(exc)) from None
        if n == len(data):
            return None
        self._wqueue.append(memoryview(data)[n:])
        self.queued += len(data) - n
        self._flushing = anyio.Event()
        return self._drive()

    async def _written(self, event: anyio.Event) -> None:
        await event.wait()
        if self.closed:
            raise ConnectionLost("socket closed")

    async def _drive(self) -> None:
        try:
            await self._flush()
        finally:
            if self._wqueue:  # cancelled mid-frame: the stream is cut, nothing more may follow
                self.closed = True
                self._wake_space()
            event, self._flushing = self._flushing, None
            assert event is not None
            event.set()

    async def wait_for_space(self, limit: int, timeout: float) -> None:
        """Return once at most ``limit`` bytes wait to be written; WriteBufferFull if the peer
        reads nothing that brings the queue under it within ``timeout`` seconds."""
        with anyio.move_on_after(timeout):
            while self.queued > limit and not self.closed:
                if self._space is None:
                    self._space = anyio.Event()
                await self._space.wait()
            return
        raise WriteBufferFull(f"{self.queued} bytes have waited {timeout:g}s for the peer to read them")

    def _wake_space(self) -> None:
        if self._space is not None:
            self._space.set()
            self._space = None

    async def _flush(self) -> None:
        queue = self._wqueue
        while queue:
            await anyio.wait_writable(self._sock)
            try:
                n = self._sock.sendmsg(list(itertools.islice(queue, _GATHER)))
            except BlockingIOError:
                continue
            except OSError as exc:
                self.closed = True
                self._wake_space()
                raise ConnectionLost(str(exc)) from None
            self.queued -= n
            while n:
                head = queue[0]
                if n < len(head):
                    queue[0] = head[n:]
                    break
                n -= len(head)
                queue.popleft()
            self._wake_space()

    def _stop_reading(self) -> None:
        """Leave the selector: a socket at EOF (or past a bad frame) stays readable, and epoll
        would call ``_on_readable`` on every turn of the loop until ``close``. A later
        ``receive`` reads again and meets the same end."""
        self._drained = False
        if self.loop is not None and self._sock.fileno() >= 0:
            self.loop.remove_reader(self._sock.fileno())

    def close(self) -> None:
        self.closed = True
        self._wake_space()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._sock.fileno() >= 0:
            if self.loop is not None:
                self._stop_reading()
                self._on_readable_closed()
            else:
                try:
                    anyio.notify_closing(self._sock)
                except Exception:
                    pass
            self._sock.close()

    def _on_readable_closed(self) -> None:
        if self._consumer is not None:
            self._end_serving(ConnectionLost("socket closed"))
        fut = self._readable
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionLost("socket closed"))


__all__ = ["ConnectionLost", "FrameSocket", "UnixListener", "WriteBufferFull"]
