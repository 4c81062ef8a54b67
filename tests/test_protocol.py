"""Frames and messages: round trips, limits, and garbage that must become ProtocolError (the
decoder's fuzz tests are in tests/security/test_fuzz.py)."""

from __future__ import annotations

import struct

import msgspec
import pytest

from host import PayloadTooLarge, ProtocolError
from host import protocol as p


def test_every_message_round_trips_through_a_frame():
    msgs = [
        p.Hello(cookie=p.MAGIC_COOKIE, protocol=1, token="t", pid=3, runtime="deno"),
        p.Welcome(plugin_id="x", module="/a.js", config={"k": 1}),
        p.Reject(reason="no"),
        p.Ready(metadata={"id": "x"}, exports=["a"]),
        p.Ready(error=p.ErrorInfo(name="SyntaxError", message="bad")),
        p.Call(id=1, fn="add", args=[1, 2], timeout_ms=500),
        p.Execute(id=2, code="export default 1", input=[1], tools=["crypto"]),
        p.Result(id=1, value={"a": [1, 2.5, None, b"\x00\xff", "ü"]}),
        p.Error(id=1, error=p.ErrorInfo(name="PluginError", message="m", error_type="AUTH_ERROR")),
        p.Log(level="info", message="hi", id=1, ts=1.5),
        p.Cancel(id=1),
        p.HostCall(id=1, op="cache.get", args=["k"], call=3),
        p.HostReply(id=1, value=None),
        p.Deliver(event="ping", data={"n": 1}),
        p.Ping(seq=1), p.Pong(seq=1), p.Shutdown(),
    ]
    buf = p.FrameBuffer()
    data = b"".join(p.encode(m) for m in msgs)
    assert buf.feed(data) == msgs
    assert buf.pending == 0


def test_frames_split_at_every_byte_reassemble():
    frame = p.encode(p.Result(id=7, value="x" * 300)) + p.encode(p.Pong(seq=2))
    buf = p.FrameBuffer()
    out = []
    for i in range(len(frame)):
        out += buf.feed(frame[i : i + 1])
    assert out == [p.Result(id=7, value="x" * 300), p.Pong(seq=2)]


def test_header_is_four_byte_big_endian_length():
    frame = p.encode(p.Ping(seq=1))
    (n,) = struct.unpack(">I", frame[:4])
    assert n == len(frame) - 4
    assert msgspec.msgpack.decode(frame[4:]) == {"type": "ping", "seq": 1}


def test_oversize_frame_is_refused_on_encode_and_on_decode():
    with pytest.raises(PayloadTooLarge):
        p.encode(p.Result(id=1, value="x" * 2000), max_frame=1000)
    buf = p.FrameBuffer(max_frame=1000)
    with pytest.raises(ProtocolError, match="over the 1000-byte maximum"):
        buf.feed(struct.pack(">I", 1001))


@pytest.mark.parametrize(
    "body",
    [
        b"\xc1",  # never-used msgpack byte
        msgspec.msgpack.encode({"type": "nope"}),
        msgspec.msgpack.encode({"type": "call", "id": "one", "fn": "f"}),
        msgspec.msgpack.encode({"type": "call"}),
        msgspec.msgpack.encode([1, 2, 3]),
        b"\x92\x01",  # truncated array
    ],
)
def test_garbled_unknown_or_truncated_body_is_protocol_error(body: bytes):
    with pytest.raises(ProtocolError):
        p.FrameBuffer().feed(struct.pack(">I", len(body)) + body)


def test_unknown_fields_are_ignored_for_forward_compatibility():
    body = msgspec.msgpack.encode({"type": "pong", "seq": 3, "future": True})
    assert p.FrameBuffer().feed(struct.pack(">I", len(body)) + body) == [p.Pong(seq=3)]


# ---------------------------------------------------------------------- transport


@pytest.mark.parametrize("ending", ["eof", "garbage"])
def test_a_socket_at_its_end_leaves_the_event_loop_selector(ending):
    """A socket at EOF, or past a bad frame, stays readable: left registered, it would wake
    the loop on every turn (a busy loop) until closed."""
    import asyncio
    import socket

    from host.transport import ConnectionLost, FrameSocket

    async def main() -> None:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        fs = FrameSocket(ours)
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        assert selector.get_key(ours.fileno())  # registered while the stream is alive
        theirs.sendall(p.encode(p.Ping(seq=1)) + (b"\xff\xff\xff\xff" if ending == "garbage" else b""))
        if ending == "eof":
            theirs.close()
        assert [type(m) for m in await fs.receive()] == [p.Ping]
        with pytest.raises(ConnectionLost if ending == "eof" else ProtocolError):
            await fs.receive()
        with pytest.raises(KeyError):
            selector.get_key(ours.fileno())
        with pytest.raises(ConnectionLost if ending == "eof" else ProtocolError):
            await asyncio.wait_for(fs.receive(), 2)  # again: the same end, at once
        fs.close()
        if ending == "garbage":
            theirs.close()

    asyncio.run(main())


def _result_body(value_bytes: bytes) -> bytes:
    head = msgspec.msgpack.encode({"type": "result", "id": 1, "value": None})
    return head[:-1] + value_bytes  # the value (nil, last) replaced by raw bytes


def test_frames_that_would_decode_into_too_many_objects_are_refused_and_real_tables_pass():
    groups = (4 * 1024 * 1024) // 16  # 4 MiB of nested empty arrays: ~4 million lists
    body = _result_body(b"\xdd" + groups.to_bytes(4, "big") + (b"\x9f" + b"\x90" * 15) * groups)
    with pytest.raises(ProtocolError, match="would take more than 128 MiB of host memory"):
        p.decode_body(body)
    declared = _result_body(b"\xdd" + (2**32 - 1).to_bytes(4, "big") + b"\x90" * (1 << 19))
    with pytest.raises(ProtocolError, match="would take more than"):
        p.decode_body(declared)
    # helper-97: 8 million one-byte trues (7.6 MiB, within the memory estimate) took 2.9 s to walk
    # and 2.9 s to decode in the event loop; refused from the array's header, past 2 million objects
    trues = _result_body(b"\xdd" + (8_000_000).to_bytes(4, "big") + b"\xc3" * 8_000_000)
    with pytest.raises(ProtocolError, match="hold more than 2,000,000 objects"):
        p.decode_body(trues)
    assert p.decoded_cost(_result_body(b"\xdc" + (60_000).to_bytes(2, "big") + b"\xc3" * 60_000), 1 << 30)
    table = [{"id": i, "name": f"row {i}", "tags": [1.5, None, True]} for i in range(100_000)]
    assert p.decode_body(msgspec.msgpack.encode(p.Result(id=1, value=table))).value == table
    text = "x" * (15 * 1024 * 1024)
    assert p.decode_body(msgspec.msgpack.encode(p.Result(id=1, value=text))).value == text


def test_a_deeply_nested_frame_is_a_protocol_error_not_a_recursion_error():
    body = _result_body(b"\x91" * 200_000 + b"\xc0")
    with pytest.raises(ProtocolError, match="nested too deeply"):
        p.decode_body(body)


def test_the_decoded_cost_estimate_walks_every_kind():
    value = [{"a": [1, {"b": b"zz"}], "s": "é" * 300, "f": 1.5, "n": -100000, "big": 2**63 - 1, "neg": -(2**63),
              "t": "x" * 70000, "bytes": b"q" * 70000, "ext": msgspec.msgpack.Ext(1, b"abcd")}] * 3
    cost = p.decoded_cost(msgspec.msgpack.encode(value), 1 << 30)
    assert cost is not None and 3 * 140_000 < cost < 3 * 160_000
    assert p.decoded_cost(msgspec.msgpack.encode(value), 1000) is None
