"""The host-side egress proxy (``security.egress_proxy``): workers with a net grant get
HTTP_PROXY/HTTPS_PROXY pointing here, so their ``fetch`` traffic is identified (proxy
credentials, one random token per plugin), checked, capped, counted and audited.

Deno still checks the target name against --allow-net, and applies --deny-net to the target's
address when it can resolve the name itself; what reaches the proxy unjudged is a name Deno
could not resolve, an IPv6 range its deny list cannot express (fc00::/7, fe80::/10, IPv4
embedded in IPv6) and an answer that changed since Deno's lookup (DNS rebinding). So the proxy
resolves the target once, refuses it if any address is internal (unless allowPrivateNetwork),
re-checks the net grant, and connects to the address it checked. Raw ``Deno.connect`` and
``node:http`` go direct (Deno 2.9 sends only fetch through HTTP_PROXY): --allow-net stays the real control.

Connections are limited so that no plugin can take the proxy from the others (one plugin's 300
slow fetches once filled a single pool of 256 and another plugin's fetch timed out). Whose a
connection is, is known only once its request head is read, so the limits come in two stages:

- before: at most ``max_connections`` (256) connections whose head is not read yet, each with
  ``head_timeout`` (10 s) for its whole head; more wait in the kernel's backlog. These protect
  file descriptors and are held for a head's read only, never while a target answers.
- after, per plugin id: at most ``max_connections_per_plugin`` (32) upstream connections or
  tunnels open, ``max_upstream`` (256) over all plugins. The plugin's others wait in its own
  first-in-first-out queue, at most ``max_queued_per_plugin`` (256) of them and each at most
  ``queue_timeout`` (30 s, the default call timeout); past either, the answer is a 503 with the
  too-large verdict (ResourceLimitExceeded in the worker; to a CONNECT, Deno reports only a
  failed tunnel) and an audit line, outcome ``refused``, whose reason names the limit. A freed slot goes to the waiting plugin holding the
  fewest (ties: the one served longest ago), so a plugin never takes a slot another waits for.
  A connection stays open between requests only in one of its plugin's
  ``max_connections_per_plugin`` keep-alive seats; the others are answered ``Connection:
  close``, so no idle connection goes uncounted.

With the defaults the proxy holds at most 256 + 2 × 256 descriptors, plus 256 waiting and 32
idle per plugin.
Measured (2 busy cores, one plugin fetching over plain HTTP from a local server, 3 runs against
the code before): sequential fetches 2.3–3.1 ms each, as before (keep-alive kept); 32 at once
390–460/s, as before; 64 at once 7–19 % fewer (e.g. 540 → 460/s), since 32 of them now wait.
With one plugin holding 280 slow fetches, another plugin's fetch took 90–170 ms (the heads
queued ahead of its own are read first) where it used to time out.

Audit lines (event ``egress``, at most EGRESS_BURST at once then EGRESS_RATE a second per plugin:
security/refusals.py) keep plugin, method, host, port, status, byte counts, time,
outcome and a reason: never the path (paths often carry keys), query, headers, credentials
or bodies."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus
from urllib.parse import SplitResult, quote

import anyio
import h11
import msgspec
from anyio.abc import ByteStream, SocketAttribute, SocketListener, TaskStatus

from ..errors import InvalidConfig
from .audit import AuditLog
from .egress_parts import (
    HOP_BY_HOP,
    READ_SIZE,
    VERDICT,
    Abort,
    EgressCounters,
    Exchange,
    FairSlots,
    Peer,
    Refusal,
    absolute_http,
    is_granted,
    random_loopback,
    resolve,
)
from .permissions import Permissions, is_internal, split_host_port
from .refusals import record_egress, record_refusal

log = logging.getLogger("host.egress")


CONNECT_TIMEOUT = 10.0   # seconds to resolve and connect to a target
IDLE_TIMEOUT = 60.0      # seconds without a byte either way before a connection is closed
HEAD_TIMEOUT = 10.0      # seconds a new connection has to send its whole request head
MAX_CONNECTIONS = 256    # connections whose head is not read yet; more wait in the backlog
MAX_UPSTREAM = 256       # upstream connections and tunnels open at once, all plugins together
MAX_CONNECTIONS_PER_PLUGIN = 32  # of those, one plugin's; its others wait in its own queue
MAX_QUEUED_PER_PLUGIN = 256      # one plugin's connections waiting for a slot; more are refused
QUEUE_TIMEOUT = 30.0     # seconds a connection may wait for a slot (the default call timeout)
ACCEPT_BACKOFF = 0.1     # after accept() fails (e.g. out of file descriptors)


class EgressProxy:
    """An HTTP/1.1 forward proxy on a loopback address (plain requests and CONNECT tunnels).
    ``permissions_for(plugin_id)``: the grants to enforce, or None when unknown (then only
    the private-network deny applies; Deno has checked the target name). The limits (see the
    module docstring) are keyword arguments defaulting to the constants of the same names."""

    def __init__(self, *, audit: AuditLog, permissions_for: Callable[[str], Permissions | None],
                 max_response_bytes: int, https_only: bool = False, idle_timeout: float = IDLE_TIMEOUT,
                 head_timeout: float = HEAD_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
                 max_upstream: int = MAX_UPSTREAM,
                 max_connections_per_plugin: int = MAX_CONNECTIONS_PER_PLUGIN,
                 max_queued_per_plugin: int = MAX_QUEUED_PER_PLUGIN,
                 queue_timeout: float = QUEUE_TIMEOUT,
                 reserved: Callable[[], Collection[str]] = tuple) -> None:
        self.address, self.port = "", 0
        self.max_response_bytes = max_response_bytes
        self.idle_timeout, self.head_timeout = idle_timeout, head_timeout
        self.max_connections_per_plugin = max_connections_per_plugin
        self._audit, self._permissions_for, self._https_only = audit, permissions_for, https_only
        self._reserved = reserved  # host:port of the host's own listeners: refused to every plugin
        self._slots = anyio.Semaphore(max_connections)  # connections not identified yet
        self._kept: dict[str, int] = {}  # plugin -> its connections kept open between requests
        self._fair = FairSlots(max_upstream, max_connections_per_plugin, max_queued_per_plugin,
                                queue_timeout)
        self._tokens: dict[str, str] = {}
        self._counters: dict[str, EgressCounters] = {}
        self._decoy = secrets.token_urlsafe(24)  # compared against when the user is unknown

    # ------------------------------------------------------------------ the host's side

    def url_for(self, plugin_id: str) -> str:
        """The proxy URL a worker of ``plugin_id`` gets: its credentials are the identity."""
        if not self.port:
            raise RuntimeError("the egress proxy is not serving yet")
        token = self._tokens.get(plugin_id)
        if token is None:  # one per plugin id, for the life of the proxy
            token = self._tokens[plugin_id] = secrets.token_urlsafe(24)
        return f"http://{quote(plugin_id, safe='')}:{token}@{self.address}:{self.port}"

    def counters(self, plugin_id: str) -> EgressCounters:
        return msgspec.structs.replace(self._counters.get(plugin_id) or EgressCounters())

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen, then serve until cancelled (``await task_group.start(proxy.serve)``)."""
        listener = await self._listen()
        async with listener, anyio.create_task_group() as tg:
            task_status.started()
            while True:
                await self._slots.acquire()
                try:
                    client = await listener.accept()
                except OSError as exc:
                    self._slots.release()
                    log.warning("egress proxy: accept failed: %s", exc)
                    await anyio.sleep(ACCEPT_BACKOFF)
                    continue
                except BaseException:
                    self._slots.release()
                    raise
                tg.start_soon(self._connection, client)

    async def _listen(self) -> SocketListener:
        # A random 127.a.b.c: the deny list gets a hole for this one address only, and nothing
        # else listens there. 127.0.0.1 when the system has no route for the rest of 127/8.
        candidates = [random_loopback(), "127.0.0.1"]
        for i, address in enumerate(candidates):
            try:
                listener = await anyio.create_tcp_listener(local_host=address, local_port=0,
                                                           family=socket.AF_INET)
            except OSError:
                if i == len(candidates) - 1:
                    raise
                continue
            self.address, self.port = address, listener.extra(SocketAttribute.local_port)
            return listener.listeners[0]  # one address, one socket
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ one client connection

    async def _connection(self, stream: ByteStream) -> None:
        """Requests (or a tunnel) from one worker connection. It holds one of ``max_connections``
        until its first head names its plugin; then that plugin's limits apply. It stays open
        between requests only in one of its plugin's ``max_connections_per_plugin`` keep-alive
        seats (else its answer says ``Connection: close``): no idle connection goes uncounted."""
        client = Peer(stream, h11.SERVER, self.idle_timeout)
        seated, kept = True, None  # kept: the plugin whose keep-alive seat this connection holds
        try:
            async with stream:
                with anyio.fail_after(self.head_timeout):
                    req = await client.next_event()
                while isinstance(req, h11.Request):
                    plugin = self._identify(req.headers)
                    if plugin is not None and seated:
                        seated = False
                        self._slots.release()
                    if req.method == b"CONNECT":
                        await self._tunnel(client, req, plugin)
                        return
                    seats = self._kept.get(plugin, 0) if plugin is not None else 0
                    if kept is None and plugin is not None and seats < self.max_connections_per_plugin:
                        kept = plugin
                        self._kept[plugin] = seats + 1
                    client.keep_alive = plugin is not None and plugin == kept
                    await self._forward(client, req, plugin)
                    if client.conn.our_state is not h11.DONE or client.conn.their_state is not h11.DONE:
                        return
                    client.conn.start_next_cycle()
                    req = await client.next_event()
        except (Abort, h11.ProtocolError, OSError, TimeoutError, anyio.BrokenResourceError,
                anyio.ClosedResourceError, anyio.EndOfStream):
            pass
        finally:
            if seated:
                self._slots.release()
            if kept is not None:
                if left := self._kept[kept] - 1:
                    self._kept[kept] = left
                else:
                    del self._kept[kept]

    def _identify(self, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        """The plugin whose credentials ``Proxy-Authorization: Basic`` carries, else None."""
        value = next((v for k, v in headers if k == b"proxy-authorization"), b"")
        scheme, _, param = value.partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            user, sep, token = base64.b64decode(param.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self._tokens.get(user)
        ok = hmac.compare_digest(token.encode(), (expected or self._decoy).encode())
        return user if ok and sep and expected is not None else None

    @asynccontextmanager
    async def _upstream(self, ex: Exchange) -> AsyncIterator[ByteStream]:
        """Check the credentials and the grant, wait for a slot, connect: the connection to
        the target, holding its plugin's slot until it is closed."""
        assert ex.host is not None and ex.port is not None
        if ex.plugin is None:
            raise Refusal(407, "refused", "missing or invalid proxy credentials")
        perms = self._permissions_for(ex.plugin)
        try:
            grant = perms.net_grant(https_only=self._https_only) if perms is not None else True
        except InvalidConfig:
            grant = False
        if not is_granted(grant, ex.host, ex.port):
            raise Refusal(403, "refused", f"{ex.host}:{ex.port} is not in the plugin's net grant")
        async with self._fair.slot(ex.plugin):
            stream = await self._open(ex, perms)
            async with stream:
                yield stream

    async def _open(self, ex: Exchange, perms: Permissions | None) -> ByteStream:
        """Resolve once, refuse internal addresses, connect to an address that was checked."""
        assert ex.host is not None and ex.port is not None
        try:
            with anyio.fail_after(CONNECT_TIMEOUT):
                addresses = await resolve(ex.host, ex.port)
                if not (perms is not None and perms.allow_private_network):
                    internal = [str(a) for a in addresses if is_internal(a)]
                    if internal:
                        raise Refusal(403, "refused", f"{ex.host} resolves to a private or loopback "
                                       f"address ({internal[0]}); allowPrivateNetwork is not set")
                reserved = self._reserved()
                if own := [a for a in addresses if (f"[{a}]:{ex.port}" if a.version == 6 else f"{a}:{ex.port}")
                           in reserved]:
                    raise Refusal(403, "refused", f"{ex.host}:{ex.port} ({own[0]}) is the host's own "
                                   "listening address; no plugin may reach it")
                for address in addresses:
                    try:
                        return await anyio.connect_tcp(str(address), ex.port)
                    except OSError:
                        continue
        except TimeoutError:
            raise Refusal(504, "error", f"no connection to {ex.host}:{ex.port} within "
                           f"{CONNECT_TIMEOUT}s") from None
        raise Refusal(502, "error", f"cannot connect to {ex.host}:{ex.port}")

    async def _refuse(self, client: Peer, ex: Exchange, ref: Refusal) -> None:
        """Answer ``ref``, recorded first: the audit log's refusals come in the order they were
        decided, before whatever the plugin makes of the answer (its own NotCapable, say)."""
        ex.answered(ref)
        self._record_refusal(ex)
        body = (ref.reason + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        if ref.verdict is not None:
            headers.append((VERDICT, ref.verdict))
        if ref.status == 407:
            headers.append((b"proxy-authenticate", b'Basic realm="plugin-host egress"'))
        if not client.keep_alive or client.conn.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))  # (the request body may not have been read)
        await client.send(h11.Response(status_code=ref.status, headers=headers,
                                       reason=HTTPStatus(ref.status).phrase.encode()))
        await client.send(h11.Data(data=body))
        await client.send(h11.EndOfMessage())

    def _finish(self, ex: Exchange) -> None:
        ms = round((time.monotonic() - ex.started) * 1000, 1)
        record_egress(self._audit, ex.plugin, method=ex.method, host=ex.host, port=ex.port,  # budgeted per plugin
                      status=ex.status, bytes_out=ex.bytes_out, bytes_in=ex.bytes_in, ms=ms,
                      outcome=ex.outcome, reason=ex.reason)
        self._record_refusal(ex)  # a response cut mid-way (too_large) is one when it ends
        if ex.plugin is not None:
            c = self._counters.setdefault(ex.plugin, EgressCounters())
            c.requests += 1
            c.bytes_in += ex.bytes_in
            c.bytes_out += ex.bytes_out
            c.refused += ex.outcome == "refused"

    def _record_refusal(self, ex: Exchange) -> None:
        """Beside every other refusal (security/refusals.py), once per exchange."""
        if ex.plugin is not None and ex.outcome in ("refused", "too_large") and not ex.refusal_recorded:
            ex.refusal_recorded = True
            record_refusal(self._audit, ex.plugin, "egress" if ex.outcome == "refused" else "limit",
                           f"egress {ex.method or 'request'} {ex.host}:{ex.port}: {ex.reason}")

    # ------------------------------------------------------------------ plain HTTP

    @asynccontextmanager
    async def _exchange(self, client: Peer, req: h11.Request,
                        plugin: str | None) -> AsyncIterator[Exchange]:
        """One request or tunnel: a refusal raised in it is answered, and it is audited and
        counted when it ends, however it ends."""
        ex = Exchange(req.method, plugin)
        try:
            yield ex
        except Refusal as ref:
            await self._refuse(client, ex, ref)
        finally:
            self._finish(ex)

    async def _forward(self, client: Peer, req: h11.Request, plugin: str | None) -> None:
        async with self._exchange(client, req, plugin) as ex:
            url = absolute_http(req.target)
            ex.host, ex.port = url.hostname, url.port or 80
            async with self._upstream(ex) as upstream:
                up = Peer(upstream, h11.CLIENT, self.idle_timeout)
                try:
                    await self._relay(client, up, req, url, ex)  # answers its own refusals
                finally:
                    ex.bytes_out, ex.bytes_in = up.written, up.read

    async def _relay(self, client: Peer, up: Peer, req: h11.Request, url: SplitResult, ex: Exchange) -> None:
        """Request to the target, response back, the body streamed and capped."""
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [(k, v) for k, v in req.headers if k not in HOP_BY_HOP and k != b"host"]
        if any(k == b"transfer-encoding" for k, _ in req.headers):
            headers.append((b"transfer-encoding", b"chunked"))
        headers += [(b"host", url.netloc.rpartition("@")[2].encode()), (b"connection", b"close")]
        try:
            await up.send(h11.Request(method=req.method, target=target.encode(), headers=headers))
            while not isinstance(event := await client.next_event(), h11.EndOfMessage):
                if not isinstance(event, h11.Data):
                    raise Abort()  # the client went away mid-body
                await up.send(event)
            await up.send(h11.EndOfMessage())
            while not isinstance(resp := await up.next_event(), h11.Response):
                if not isinstance(resp, h11.InformationalResponse):
                    raise Refusal(502, "error", "the target closed without a response")
            length = next((v for k, v in resp.headers if k == b"content-length"), None)
            if length is not None and int(length) > self.max_response_bytes:
                raise Refusal(502, "too_large", f"response of {int(length)} bytes exceeds "
                               f"security.max_response_bytes ({self.max_response_bytes})")
            out = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
            if not client.keep_alive:
                out.append((b"connection", b"close"))
            ex.status = resp.status_code  # from here on, the response has started
            await client.send(h11.Response(status_code=resp.status_code, headers=out, reason=resp.reason))
            received = 0
            while not isinstance(event := await up.next_event(), h11.EndOfMessage):
                if not isinstance(event, h11.Data):
                    raise Refusal(502, "error", "the target closed mid-response")
                received += len(event.data)
                if received > self.max_response_bytes:
                    raise Refusal(502, "too_large", "response body passed security.max_response_bytes "
                                   f"({self.max_response_bytes}); connection cut")
                await client.send(h11.Data(data=event.data))
            await client.send(h11.EndOfMessage())
            ex.outcome, ex.reason = "ok", None
        except (Refusal, TimeoutError, h11.ProtocolError, OSError, anyio.BrokenResourceError,
                anyio.ClosedResourceError) as exc:
            ref = exc if isinstance(exc, Refusal) else Refusal(
                504 if isinstance(exc, TimeoutError) else 502, "error",
                "the target went idle" if isinstance(exc, TimeoutError) else "bad response from the target")
            if ex.status is not None:  # the response has started: cut the connection
                ex.outcome, ex.reason = ref.outcome, ref.reason
                raise Abort() from None
            await self._refuse(client, ex, ref)

    # ------------------------------------------------------------------ CONNECT tunnels

    async def _tunnel(self, client: Peer, req: h11.Request, plugin: str | None) -> None:
        async with self._exchange(client, req, plugin) as ex:
            try:
                host, port = split_host_port(req.target.decode("ascii"))
                ex.host, ex.port = host.strip("[]"), int(port or "")
            except (UnicodeDecodeError, ValueError):
                raise Refusal(400, "error", "CONNECT needs host:port") from None
            if not isinstance(await client.next_event(), h11.EndOfMessage):
                raise Abort()
            async with self._upstream(ex) as upstream:
                await client.send(h11.Response(status_code=200, headers=[], reason=b"Connection established"))
                ex.status, ex.outcome, ex.reason = 200, "ok", None
                await self._pipe(client.stream, upstream, client.conn.trailing_data[0], ex)

    async def _pipe(self, client: ByteStream, upstream: ByteStream, early: bytes, ex: Exchange) -> None:
        """Bytes both ways until the target closes, the cap is passed or both sides idle."""
        last = anyio.current_time()
        cap = self.max_response_bytes

        async def outbound() -> None:
            nonlocal last
            if early:
                await upstream.send(early)
                ex.bytes_out += len(early)
            while True:
                try:
                    chunk = await client.receive(READ_SIZE)
                except anyio.EndOfStream:
                    await upstream.send_eof()  # the target may still answer
                    return
                last = anyio.current_time()
                await upstream.send(chunk)
                ex.bytes_out += len(chunk)

        async def inbound() -> None:
            nonlocal last
            while True:
                try:
                    chunk = await upstream.receive(READ_SIZE)
                except anyio.EndOfStream:
                    return
                last = anyio.current_time()
                room = cap - ex.bytes_in
                ex.bytes_in += len(chunk)
                if len(chunk) > room:
                    if room > 0:
                        await client.send(chunk[:room])
                    ex.outcome = "too_large"
                    ex.reason = f"tunnel passed security.max_response_bytes ({cap}) from the target; closed"
                    return
                await client.send(chunk)

        async def watchdog() -> None:
            while (left := last + self.idle_timeout - anyio.current_time()) > 0:
                await anyio.sleep(left)
            ex.reason = "closed after the idle timeout"

        async def until_done(direction: Callable[[], Awaitable[None]], *, ends_tunnel: bool) -> None:
            try:
                await direction()
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                ends_tunnel = True  # a side dropped its connection
            if ends_tunnel:
                tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(until_done, outbound, ends_tunnel=False))
            tg.start_soon(partial(until_done, inbound, ends_tunnel=True))
            tg.start_soon(partial(until_done, watchdog, ends_tunnel=True))


__all__ = ["EgressCounters", "EgressProxy", "is_granted", "is_internal"]
