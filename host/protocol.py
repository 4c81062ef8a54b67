"""Wire protocol between the host and its Deno workers.

Every frame is a 4-byte big-endian unsigned length followed by one MessagePack map.
The map's ``type`` field names the message; the rest are its fields. See docs/protocol.md.
"""

from __future__ import annotations

import struct
from typing import Annotated, Any, Union

import msgspec

from .errors import PayloadTooLarge, ProtocolError

MAGIC_COOKIE = "PLUGIN_HOST_7f3a9c2e"
PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
# Functions a plugin may export (the ``ready`` message's exports and signatures): each costs the
# host memory and load time (100,000 of them: 48 MB and 7 s), and no plugin needs so many.
MAX_EXPORTS = 1000
MAX_EXPORT_NAME = 256  # characters: a name is in every listing (/api/plugins, each 2 s) and metric label
ExportName = Annotated[str, msgspec.Meta(max_length=MAX_EXPORT_NAME)]
# Lifecycle hooks: the ``Hook`` message's name -> the export it runs.
HOOKS = {"start": "onStart", "stop": "onStop", "config_change": "onConfigChange"}


class _Msg(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    """A thrown JavaScript value, normalised by the worker."""

    name: str = "Error"
    message: str = ""
    stack: str | None = None
    error_type: str | None = None
    details: Any = None


class Limits(msgspec.Struct, omit_defaults=True):
    """Settings the host hands a worker at handshake."""

    heartbeat_interval_ms: int = 1000
    heartbeat_timeout_ms: int = 10000
    max_frame: int = DEFAULT_MAX_FRAME
    max_log_entries: int = 1000
    max_log_bytes: int = 1024 * 1024
    max_inflight: int = 1  # calls the host may run at once on this worker
    max_result_bytes: int = DEFAULT_MAX_FRAME  # a bigger result is refused (PayloadTooLarge)
    max_web_workers: int = 4  # Workers a plugin may keep alive; Workers may start none
    egress_proxy: int = 0  # 1: fetch goes through the host's egress proxy (verdict headers)
    max_host_calls: int = 64  # host calls a worker may have in flight; more are refused
    harden: int = 0  # 1: calls of several callers share this worker: freeze its main realm
    max_exports: int = MAX_EXPORTS  # functions the module may export: more fail its load, saying so


# worker -> host ------------------------------------------------------------------


class Hello(_Msg, tag="hello"):
    cookie: str
    protocol: int
    token: str
    pid: int = 0
    runtime: str = ""


class Signature(msgspec.Struct, omit_defaults=True):
    """What an exported function declares it takes: JavaScript's ``length`` (parameters before
    the first default or rest one), its parameter names as read from its source (None when
    unread), and whether the last is a rest parameter. The host judges calls by it (arity.py)."""

    length: int = 0
    params: list[str] | None = None
    rest: bool = False


class Ready(_Msg, tag="ready"):
    metadata: Any = None
    # bounded as they are decoded: a longer list is a bad frame before it costs the host anything
    exports: Annotated[list[ExportName], msgspec.Meta(max_length=MAX_EXPORTS)] = []
    signatures: Annotated[dict[ExportName, Signature], msgspec.Meta(max_length=MAX_EXPORTS)] = {}
    error: ErrorInfo | None = None


class Result(_Msg, tag="result"):
    id: int
    value: Any = None


class Error(_Msg, tag="error"):
    id: int
    error: ErrorInfo


class Log(_Msg, tag="log"):
    level: str
    message: str
    id: int | None = None
    ts: float = 0.0
    name: str | None = None
    stack: str | None = None


class HostCall(_Msg, tag="host_call"):
    id: int
    op: str
    args: list[Any] = []
    call: int | None = None


# host -> worker ------------------------------------------------------------------


class Welcome(_Msg, tag="welcome"):
    plugin_id: str
    module: str | None = None
    config: Any = None
    limits: Limits = msgspec.field(default_factory=Limits)
    tools: dict[str, Any] | None = None  # execute workers: the tools' settings ({"crypto": {...}})


class Reject(_Msg, tag="reject"):
    reason: str


class Call(_Msg, tag="call"):
    id: int
    fn: str
    args: list[Any] = []
    timeout_ms: int | None = None
    context_at: int | None = None  # the context's index: args padded with undefined up to it; -1: none


class Execute(_Msg, tag="execute"):
    id: int
    code: str
    entry: str = "default"
    input: Any = msgspec.UNSET  # absent → `undefined` in JS; None → `null`
    timeout_ms: int | None = None
    tools: list[str] = []
    language: str = "javascript"  # or "typescript": its types are stripped in the worker first
    tool_settings: dict[str, Any] = {}  # per tool, what the request narrowed (crypto: subtle, methods, max_bytes)


class Cancel(_Msg, tag="cancel"):
    id: int
    reason: str = "cancelled"


class HostReply(_Msg, tag="host_reply"):
    id: int
    value: Any = None
    error: ErrorInfo | None = None


class Deliver(_Msg, tag="deliver"):
    """A channel event another worker emitted, for this worker's ``channel.on`` handlers."""

    event: str
    data: Any = None


class Hook(_Msg, tag="hook"):
    """Run one of the plugin's lifecycle hooks, answered by ``result`` (value true: it ran;
    false: the plugin does not export it) or ``error``, like a call. ``name`` is ``stop``
    (``onStop(context)``) or ``config_change`` (the worker's config becomes ``config``, then
    ``onConfigChange(config, context)``)."""

    id: int
    name: str
    config: Any = None
    timeout_ms: int | None = None


class Shutdown(_Msg, tag="shutdown"):
    reason: str = "shutdown"


# both ways -----------------------------------------------------------------------


class Ping(_Msg, tag="ping"):
    seq: int


class Pong(_Msg, tag="pong"):
    seq: int


Message = Union[
    Hello, Ready, Result, Error, Log, HostCall,
    Welcome, Reject, Call, Execute, Cancel, HostReply, Deliver, Hook, Shutdown,
    Ping, Pong,
]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(msg: Message, max_frame: int = DEFAULT_MAX_FRAME) -> bytearray:
    """One complete frame (header + body); PayloadTooLarge if the body exceeds max_frame."""
    buf = bytearray(4)
    _encoder.encode_into(msg, buf, 4)
    size = len(buf) - 4
    if size > max_frame:
        raise PayloadTooLarge(f"frame of {size} bytes exceeds the {max_frame}-byte maximum")
    HEADER.pack_into(buf, 0, size)
    return buf  # a bytearray: copying it into bytes would double a large frame's cost


# Decoding multiplies memory: a one-byte empty array becomes a Python list of ~64 bytes, so a
# 16 MiB frame of them took 1.2 GB of host memory and 6 s of its event loop. Bodies larger than
# WALK_ABOVE are walked first (headers only; strings and binaries skipped by their length) to
# estimate what their Python objects would take, and refused past MAX_DECODED_BYTES: a 16 MiB
# string passes, 16 MiB of empty arrays is refused after ~2 million of them (~0.5 s of walking).
WALK_ABOVE = 256 * 1024
MAX_DECODED_BYTES = 128 * 1024 * 1024
# And past MAX_DECODED_ITEMS elements of arrays and maps, counted from their headers before any
# is walked: 8 million one-byte `true`s (7.6 MiB, 64 MiB once decoded) took 2.9 s of walking
# and 2.9 s of decoding in the host's event loop, from a plugin with no permission (helper-97).
MAX_DECODED_ITEMS = 2_000_000

# Header byte -> (bytes after the header, estimated Python bytes) for fixed-size kinds.
_FIXED = {0xC0: (0, 8), 0xC2: (0, 8), 0xC3: (0, 8), 0xCA: (4, 32), 0xCB: (8, 32), 0xCC: (1, 8), 0xCD: (2, 40),
          0xCE: (4, 40), 0xCF: (8, 44), 0xD0: (1, 40), 0xD1: (2, 40), 0xD2: (4, 40), 0xD3: (8, 44),
          0xD4: (2, 72), 0xD5: (3, 72), 0xD6: (5, 72), 0xD7: (9, 72), 0xD8: (17, 72)}
# Header byte -> (size of its length field, extra bytes after it) for strings, binaries, extensions.
_SIZED = {0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0), 0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),
          0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)}
# Header byte -> (size of its count field, objects per counted element) for arrays and maps.
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}
_STR, _LIST, _DICT, _SLOT = 57, 64, 72, 8  # a str's fixed cost, an empty list's, dict's, a pointer


def decoded_cost(body: bytes | memoryview, budget: int) -> int | None:
    """Roughly the bytes of Python objects ``body`` (MessagePack) decodes into, or None as soon
    as that passes ``budget``. Reads headers only; a truncated body ends the walk (the decoder
    then says what is wrong with it)."""
    data = body  # a memoryview indexes and slices without copying the frame
    end = len(data)
    pos = cost = visited = 0
    todo = 1
    from_bytes = int.from_bytes
    while todo and pos < end:
        if cost > budget or visited + todo > MAX_DECODED_ITEMS:  # every object announced so far
            return None
        todo -= 1
        visited += 1
        b = data[pos]
        if b < 0x80 or b >= 0xE0:  # fixint
            pos += 1
            cost += _SLOT
        elif b < 0xA0:  # fixmap, fixarray
            n = b & 0x0F
            if b < 0x90:
                todo += 2 * n
                cost += _DICT + 5 * _SLOT * n
            else:
                todo += n
                cost += _LIST + _SLOT * n
            pos += 1
        elif b < 0xC0:  # fixstr
            n = b & 0x1F
            pos += 1 + n
            cost += _STR + n
        elif (fixed := _FIXED.get(b)) is not None:
            pos += 1 + fixed[0]
            cost += fixed[1]
        elif (sized := _SIZED.get(b)) is not None:
            width, extra = sized
            n = from_bytes(data[pos + 1:pos + 1 + width], "big")
            pos += 1 + width + extra + n
            cost += _STR + n
        elif (counted := _COUNTED.get(b)) is not None:
            width, per = counted
            n = from_bytes(data[pos + 1:pos + 1 + width], "big")
            todo += per * n
            cost += (_DICT + 5 * _SLOT * n) if per == 2 else (_LIST + _SLOT * n)
            pos += 1 + width
        else:  # 0xC1, never used: the decoder refuses it
            break
    return cost if cost <= budget else None


def decode_body(body: bytes | memoryview) -> Message:
    """Decode one frame body; any malformed or unknown message is a ProtocolError, and so is a
    body larger than WALK_ABOVE that would take more than MAX_DECODED_BYTES once decoded."""
    if len(body) > WALK_ABOVE and decoded_cost(body, MAX_DECODED_BYTES) is None:
        raise ProtocolError(f"frame of {len(body)} bytes would take more than {MAX_DECODED_BYTES >> 20} MiB "
                            f"of host memory or hold more than {MAX_DECODED_ITEMS:,} objects to decode "
                            "(too many small objects)")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise ProtocolError(f"bad frame: {exc}") from None
    except RecursionError:
        raise ProtocolError("bad frame: nested too deeply") from None


class FrameBuffer:
    """Incremental frame splitter: feed bytes, take complete messages.

    A bad frame poisons the stream: the frames decoded before it are still returned, and the
    ProtocolError is raised by the next ``feed`` or ``check`` (the connection is dead).

    ``sizes`` holds the body size of each message the last ``feed`` returned, in order: the
    host caps what a worker may send by kind (a result, say) below the frame maximum."""

    __slots__ = ("_buf", "error", "max_frame", "sizes")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self.error: ProtocolError | None = None  # the bad frame met (read it, or have check() raise it)
        self.max_frame = max_frame
        self.sizes: list[int] = []

    def check(self) -> None:
        """Raise the ProtocolError a previous ``feed`` met, if any."""
        if self.error is not None:
            raise self.error

    def feed(self, data: bytes) -> list[Message]:
        if self.error is not None:  # check(), inline: every answer passes here
            raise self.error
        buf = self._buf
        if not buf and len(data) > 4:  # the common case: exactly one whole frame, decoded in place
            (size,) = HEADER.unpack_from(data)
            if size == len(data) - 4 and size <= self.max_frame:
                try:
                    with memoryview(data) as view, view[4:] as body:
                        msg = decode_body(body)
                except ProtocolError as exc:
                    self.error = exc
                    raise
                self.sizes = [size]
                return [msg]
        buf += data
        out: list[Message] = []
        sizes = self.sizes = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= 4:
                (size,) = HEADER.unpack_from(buf, pos)
                if size > self.max_frame:
                    raise ProtocolError(
                        f"frame header announces {size} bytes, over the {self.max_frame}-byte maximum"
                    )
                if end - pos - 4 < size:
                    break
                # Views must be released before ``buf`` is resized, even on error.
                with memoryview(buf) as view, view[pos + 4 : pos + 4 + size] as body:
                    out.append(decode_body(body))
                sizes.append(size)
                pos += 4 + size
        except ProtocolError as exc:
            self.error = exc
            buf.clear()
            if not out:
                raise
            return out
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)
