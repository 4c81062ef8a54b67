"""The egress proxy's parts (security/egress.py): what a request is checked against
(``is_granted``), the fair per-plugin slots for upstream connections, one exchange's state, and
the resolver and refusal it answers with."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import SplitResult, urlsplit

import anyio
import h11
import msgspec
from anyio.abc import ByteStream

from .permissions import IPAddress, split_host_port

VERDICT = b"x-plugin-host-egress"  # the worker runtime's fetch turns these into typed errors
REFUSED, TOO_LARGE = b"refused", b"too-large"  # too-large: any resource cap (ResourceLimitExceeded)
MAX_HEAD_BYTES = 16 * 1024
READ_SIZE = 64 * 1024

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade", VERDICT,
})

def is_granted(grant: list[str] | bool, host: str, port: int) -> bool:
    """Deno's --allow-net matching: ``host`` (any port) or ``host:port``, names compared as
    written (``localhost`` is not ``127.0.0.1``), CIDR entries for IP literals."""
    if grant is True:
        return True
    if not grant:
        return False
    name = host.lower().strip("[]")
    try:
        ip: IPAddress | None = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    for entry in grant:
        allowed, allowed_port = split_host_port(entry)
        if allowed_port is not None and int(allowed_port) != port:
            continue
        allowed = allowed.lower().strip("[]")
        if allowed == name:
            return True
        try:  # an address (however written) or a CIDR range
            if ip is not None and ip in ipaddress.ip_network(allowed, strict=False):
                return True
        except ValueError:
            continue
    return False


class EgressCounters(msgspec.Struct):
    """What one plugin id sent through the proxy (all its versions; since the host started)."""

    requests: int = 0    # requests and CONNECT tunnels, refused ones included
    bytes_in: int = 0    # read from targets
    bytes_out: int = 0   # written to targets
    refused: int = 0     # refused: bad host, private address (credential failures have no plugin)


class Refusal(Exception):
    """A request the proxy answers itself, or, once the response has started, why the
    connection is cut. ``verdict``: the header value when the outcome alone does not say it
    (a connection limit is a refusal the runtime reports as a resource cap)."""

    def __init__(self, status: int, outcome: str, reason: str, *, verdict: bytes | None = None) -> None:
        super().__init__(reason)
        self.status, self.outcome, self.reason = status, outcome, reason
        self._verdict = verdict

    @property
    def verdict(self) -> bytes | None:
        """The header value the worker runtime turns into a typed error (credential
        failures have none: they are the proxy's business, not the plugin's)."""
        if self._verdict is not None:
            return self._verdict
        if self.outcome == "too_large":
            return TOO_LARGE
        return REFUSED if self.outcome == "refused" and self.status != 407 else None


class Abort(Exception):
    """The response had started: the only way left to say "failed" is to drop the connection."""


class Exchange:
    """One request or tunnel, as audited."""

    def __init__(self, method: bytes, plugin: str | None) -> None:
        self.plugin = plugin
        self.method = method.decode("ascii", "replace")
        self.host: str | None = None
        self.port: int | None = None
        self.status: int | None = None
        self.bytes_out = self.bytes_in = 0
        self.outcome, self.reason = "error", "interrupted"
        self.started = time.monotonic()
        self.refusal_recorded = False  # in the audit log's refusals, before the plugin heard of it

    def answered(self, ref: Refusal) -> Refusal:
        self.status, self.outcome, self.reason = ref.status, ref.outcome, ref.reason
        return ref


class Waiter:
    __slots__ = ("granted", "woken")

    def __init__(self) -> None:
        self.granted = False  # the slot was taken for this waiter by whoever set ``woken``
        self.woken = anyio.Event()


class FairSlots:
    """Upstream slots: at most ``total`` held at once, ``per_plugin`` of them by one plugin.
    A plugin's waiters queue first in, first out, at most ``max_waiting`` and ``timeout``
    seconds each; a freed slot goes to the waiting plugin holding the fewest (ties: the one
    served longest ago), so a plugin that holds many never takes a slot another is waiting for."""

    def __init__(self, total: int, per_plugin: int, max_waiting: int, timeout: float) -> None:
        self.total, self.per_plugin, self.max_waiting, self.timeout = total, per_plugin, max_waiting, timeout
        self._in_use = 0
        self._held: dict[str, int] = {}
        self._queues: dict[str, deque[Waiter]] = {}  # plugins with waiters, longest unserved first

    def held(self, plugin: str) -> int:
        return self._held.get(plugin, 0)

    def waiting(self, plugin: str) -> int:
        return len(self._queues.get(plugin, ()))

    @asynccontextmanager
    async def slot(self, plugin: str) -> AsyncIterator[None]:
        """Hold one slot for ``plugin`` (waiting for it if need be; refused when its queue is
        full or the wait times out)."""
        if plugin not in self._queues and self._in_use < self.total and self.held(plugin) < self.per_plugin:
            self._take(plugin)  # no waiter can use this slot, or _grant would have given it
        else:
            await self._wait(plugin)
        try:
            yield
        finally:
            self._give_back(plugin)

    async def _wait(self, plugin: str) -> None:
        queue = self._queues.get(plugin, deque())
        if len(queue) >= self.max_waiting:
            raise Refusal(503, "refused", f"over max_queued_per_plugin ({self.max_waiting}): this plugin "
                           f"holds {self.held(plugin)} connections (max_connections_per_plugin "
                           f"({self.per_plugin})) and {len(queue)} more wait", verdict=TOO_LARGE)
        waiter = Waiter()
        queue.append(waiter)
        self._queues[plugin] = queue
        try:
            with anyio.move_on_after(self.timeout):
                await waiter.woken.wait()
        except BaseException:  # cancelled, maybe just after the slot was granted
            if waiter.granted:
                self._give_back(plugin)
            raise
        finally:
            if not waiter.granted:
                queue.remove(waiter)
                if not queue and self._queues.get(plugin) is queue:
                    del self._queues[plugin]
        if not waiter.granted:
            raise Refusal(503, "refused", f"no upstream slot within queue_timeout ({self.timeout}s): "
                           f"this plugin holds {self.held(plugin)} (max_connections_per_plugin "
                           f"({self.per_plugin})), all plugins {self._in_use} (max_upstream ({self.total}))",
                           verdict=TOO_LARGE)

    def _take(self, plugin: str) -> None:
        self._in_use += 1
        self._held[plugin] = self.held(plugin) + 1

    def _give_back(self, plugin: str) -> None:
        self._in_use -= 1
        if left := self._held[plugin] - 1:
            self._held[plugin] = left
        else:
            del self._held[plugin]
        self._grant()

    def _grant(self) -> None:
        while self._in_use < self.total:
            ready = [p for p in self._queues if self.held(p) < self.per_plugin]
            if not ready:
                return
            plugin = min(ready, key=self.held)  # the first of equals: the longest unserved
            queue = self._queues.pop(plugin)
            waiter = queue.popleft()
            if queue:
                self._queues[plugin] = queue  # to the back of the line
            self._take(plugin)
            waiter.granted = True
            waiter.woken.set()


class Peer:
    """An h11 connection over a byte stream, counting the bytes each way. ``keep_alive``: the
    answers we send leave it open for another request (else they say ``Connection: close``)."""

    def __init__(self, stream: ByteStream, role: type[h11.CLIENT] | type[h11.SERVER], idle: float) -> None:
        self.stream, self.idle = stream, idle
        self.conn = h11.Connection(role, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.read = self.written = 0
        self.keep_alive = False

    async def next_event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            with anyio.fail_after(self.idle):
                try:
                    data = await self.stream.receive(READ_SIZE)
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    data = b""
            self.read += len(data)
            self.conn.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            with anyio.fail_after(self.idle):
                await self.stream.send(data)
            self.written += len(data)


def absolute_http(target: bytes) -> SplitResult:
    """The request target of a plain proxy request: an absolute http:// URL."""
    try:
        url = urlsplit(target.decode("ascii"))
        if url.scheme == "http" and url.hostname and url.port != 0:  # .port: ValueError if bad
            return url
    except (UnicodeDecodeError, ValueError):
        pass
    raise Refusal(400, "error", "not a proxy request (an absolute http:// URL)")


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (IP literals as they are), in resolver order."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise Refusal(502, "error", f"cannot resolve {host}") from None
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if ip not in out:
            out.append(ip)
    return out


def random_loopback() -> str:
    while True:
        a, b, c = secrets.randbelow(256), secrets.randbelow(256), 1 + secrets.randbelow(254)
        if (a, b, c) != (0, 0, 1):
            return f"127.{a}.{b}.{c}"


__all__ = ["Abort", "EgressCounters", "Exchange", "FairSlots", "Peer", "Refusal", "Waiter", "absolute_http", "is_granted", "random_loopback", "resolve"]
