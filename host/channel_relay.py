"""Channel delivery between hosts: with ``[state] channel_storage = "redis://..."`` a plugin's
``ctx.channel.emit`` also reaches the ``ctx.channel.on`` subscribers of the same plugin on every
other host (or ``serve --processes`` sibling) pointing at that Redis.

Each emit is published on the Redis channel ``plugin-host:channel:<plugin id>`` (so plugins stay
apart) as msgpack ``[origin, event, data]``; each host holds one pattern subscription
(``plugin-host:channel:*``), skips what it published itself (its own workers had it already) and
delivers the rest to its subscribed workers of that plugin. Execute code's channel stays on its
host (its workers' scope is theirs).

Redis is never waited for by a call: the emit hands the message to a bounded outbox that one
task publishes from (in order, in a worker thread: the redis client is synchronous, so this
works under asyncio and trio alike) and returns what the local delivery reached. Redis down or
hanging: local delivery goes on, messages for other hosts are dropped (the outbox full, or a
publish failing), a warning is logged every 10 s at most, and the subscription is made again
with a backoff up to 10 s. What arrives is queued per plugin (``INBOX`` messages, in order) and
delivered by that plugin's own task, so a plugin whose worker reads nothing holds up only its own
events; past ``INBOX`` waiting, its new ones are dropped (warned). Only plugins with a subscriber
on this host get a queue. Delivery between hosts is at most once, and only to hosts subscribed
when the message is published. Whoever can publish on that Redis can send events to plugins:
give it the trust the rate limits' Redis has."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import ObjectReceiveStream, ObjectSendStream, TaskGroup

from .errors import InvalidConfig
from .logs import Throttle
from .policy.config import redact_uri, storage_failure
from .protocol import MAX_DECODED_BYTES, decoded_cost

log = logging.getLogger("host.channel")

PREFIX = "plugin-host:channel:"
OUTBOX = 1000          # messages waiting to be published; past it an emit's remote copy is dropped
INBOX = 1000           # messages from other hosts waiting for one plugin's workers; past it dropped
# ... and their bytes: an event may be as large as a frame (16 MiB), so a count alone let a plugin
# with no permission queue 16 GB in the host while Redis was slow, or in every other host while its
# own workers there read nothing. Events waiting for other plugins' workers are kept encoded.
OUTBOX_BYTES = 64 * 1024 * 1024
INBOX_BYTES = 64 * 1024 * 1024  # per plugin
SOCKET_TIMEOUT = 2.0   # seconds one redis command may take
POLL = 1.0             # seconds the subscription waits for a message before looking again
MAX_BACKOFF = 10.0

Deliver = Callable[[str, str, Any], Awaitable[int]]  # (plugin, event, data) -> workers reached


class ChannelRelay:
    def __init__(self, uri: str, deliver: Deliver, wants: Callable[[str], bool]) -> None:
        try:
            import redis  # only needed for channels shared between hosts
        except ImportError:
            raise InvalidConfig("state.channel_storage: redis:// needs the redis client: "
                                "pip install 'plugin-host[redis]'") from None
        self.uri, self.where = uri, redact_uri(uri)
        self.origin = os.urandom(8)  # this host: what it published comes back, and is skipped
        self._client = redis.Redis.from_url(uri, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT)
        self._deliver, self._wants = deliver, wants  # wants(plugin): a worker here subscribes
        self._inboxes: dict[str, ObjectSendStream[tuple[str, bytes]]] = {}
        self._tg: TaskGroup | None = None
        self._send, self._outbox = anyio.create_memory_object_stream[tuple[str, bytes]](OUTBOX)
        self._outbox_bytes = 0
        self._inbox_bytes: dict[str, int] = {}
        self.subscribed = anyio.Event()  # set once the subscription is in place (tests wait on it)
        self.received = 0  # messages from other hosts delivered here
        self._warn = Throttle(log)  # a redis down fails every emit alike: said every 10 s

    def open(self, tg: TaskGroup) -> None:
        self._tg = tg
        tg.start_soon(self._publisher)
        tg.start_soon(self._listener)

    def publish(self, plugin: str, event: str, data: Any, max_bytes: int) -> None:
        """Queue ``event`` for the other hosts; never waits. Dropped, with a warning, when it
        does not fit in ``max_bytes`` (the emitter's frame limit) or the outbox is full."""
        try:
            blob = msgspec.msgpack.encode([self.origin, event, data])
        except (TypeError, msgspec.EncodeError) as exc:
            self._warn.warning(f"encode:{plugin}", "channel %r of %s: not sent to other hosts: %s", event, plugin, exc)
            return
        if len(blob) > max_bytes:
            self._warn.warning(f"size:{plugin}", "channel %r of %s: %d bytes, over the %d-byte frame limit: "
                          "not sent to other hosts", event, plugin, len(blob), max_bytes)
            return
        if self._outbox_bytes + len(blob) > OUTBOX_BYTES:
            self._behind(plugin)
            return
        try:
            self._send.send_nowait((PREFIX + plugin, blob))
        except anyio.WouldBlock:
            self._behind(plugin)
            return
        self._outbox_bytes += len(blob)

    def _behind(self, plugin: str) -> None:
        self._warn.warning("outbox", "channel delivery to other hosts through %s is behind (%d messages, %d bytes "
                           "waiting): dropped an event of %s", self.where, self._outbox.statistics().current_buffer_used,
                           self._outbox_bytes, plugin)

    async def _publisher(self) -> None:
        async with self._outbox:
            async for channel, blob in self._outbox:
                self._outbox_bytes -= len(blob)
                try:
                    await anyio.to_thread.run_sync(self._client.publish, channel, blob, abandon_on_cancel=True)
                except Exception as exc:
                    self._failed("publish", exc, "an event for other hosts was dropped")

    async def _listener(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await anyio.to_thread.run_sync(pubsub.psubscribe, PREFIX + "*", abandon_on_cancel=True)
                log.info("channel delivery between hosts: subscribed at %s", self.where)
                self.subscribed.set()
                delay = 0.5
                while True:
                    msg = await anyio.to_thread.run_sync(pubsub.get_message, True, POLL, abandon_on_cancel=True)
                    if msg is not None:
                        await self._receive(msg)
            except Exception as exc:
                self._failed("subscribe", exc, f"events from other hosts are missed; subscribing again in {delay:g} s")
            finally:
                _close(pubsub)
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _receive(self, msg: dict[str, Any]) -> None:
        channel = msg.get("channel")
        plugin = channel.decode(errors="replace").removeprefix(PREFIX) if isinstance(channel, bytes) else ""
        try:  # the data stays encoded until its turn to be delivered
            origin, event, raw = _envelope.decode(msg.get("data") or b"")
            if not plugin:
                raise ValueError("no plugin")
        except (ValueError, TypeError, RecursionError, msgspec.DecodeError) as exc:
            self._warn.warning("malformed", "channel message on %s at %s ignored: %s", channel, self.where, exc)
            return
        if origin == self.origin:
            return
        data = bytes(raw)
        inbox = self._inboxes.get(plugin)
        if inbox is None:
            if self._tg is None or not self._wants(plugin):
                return
            inbox, outlet = anyio.create_memory_object_stream[tuple[str, bytes]](INBOX)
            self._inboxes[plugin] = inbox
            self._tg.start_soon(self._deliverer, plugin, outlet)
        held = self._inbox_bytes.get(plugin, 0)
        try:
            if held + len(data) > INBOX_BYTES:
                raise anyio.WouldBlock
            inbox.send_nowait((event, data))
        except anyio.WouldBlock:
            self._warn.warning(f"inbox:{plugin}", "channel events of %s from other hosts are behind (%d bytes "
                               "waiting: its workers read nothing): dropped one", plugin, held)
            return
        self._inbox_bytes[plugin] = held + len(data)

    async def _deliverer(self, plugin: str, outlet: ObjectReceiveStream[tuple[str, bytes]]) -> None:
        """One plugin's events from other hosts, in order, to its workers here (each decoded
        only then: one at a time, and no more objects than a worker's frame may make)."""
        async with outlet:
            async for event, blob in outlet:
                self._inbox_bytes[plugin] -= len(blob)
                if decoded_cost(blob, MAX_DECODED_BYTES) is None:
                    self._warn.warning("malformed", "channel event %r of %s at %s ignored: it would take more than "
                                       "%d MiB to decode", event, plugin, self.where, MAX_DECODED_BYTES >> 20)
                    continue
                try:
                    data = msgspec.msgpack.decode(blob)
                except (RecursionError, msgspec.DecodeError) as exc:
                    self._warn.warning("malformed", "channel event %r of %s at %s ignored: %s", event, plugin,
                                       self.where, exc)
                    continue
                await self._deliver(plugin, event, data)
                self.received += 1

    def _failed(self, what: str, exc: Exception, then: str) -> None:
        failure = storage_failure(self.uri, exc)
        if failure is None:  # a bug of ours: said with its traceback, the loop goes on
            log.error("channel delivery between hosts (%s) failed", what, exc_info=exc)
        else:
            self._warn.warning(what, "channel delivery between hosts: %s; %s", failure, then)

    def close(self) -> None:
        self._send.close()
        for inbox in self._inboxes.values():
            inbox.close()
        _close(self._client)


# [origin, event, data] as published; the data left encoded (msgspec.Raw)
_envelope = msgspec.msgpack.Decoder(tuple[bytes, str, msgspec.Raw])


def _close(thing: Any) -> None:
    try:
        thing.close()
    except Exception:  # closing a connection that failed: nothing left to do
        pass


__all__ = ["PREFIX", "ChannelRelay"]
