"""The worker runtime's own MessagePack codec (worker_runtime/msgpack.ts) against msgspec, the
host's: random values encoded by one and decoded by the other, both ways — through a Deno
process that decodes what the host sends with msgpack.ts and sends it back encoded with
msgpack.ts — with integers past 2**53, timestamps, binary, maps with non-string keys, and the
depth limits. The one codec of the project with no tests of its own until now (issue 16)."""

from __future__ import annotations

import datetime as dt
import math
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.runtime import find_deno

pytestmark = pytest.mark.timeout(300)

MSGPACK = (Path(__file__).resolve().parents[1] / "worker_runtime" / "msgpack.ts").as_uri()

# Reads frames (4-byte length, then MessagePack) on stdin; answers each with the value decoded by
# msgpack.ts and encoded again by it, or a frame "!<error>" when it refuses the input.
ECHO = """
import { Decoder, Encoder } from "@MSGPACK@";
const decoder = new Decoder();
const encoder = new Encoder();
let buf = new Uint8Array(0);
const out = Deno.stdout.writable.getWriter();
async function send(bytes) {
  const frame = new Uint8Array(4 + bytes.length);
  new DataView(frame.buffer).setUint32(0, bytes.length);
  frame.set(bytes, 4);
  await out.write(frame);
}
for await (const chunk of Deno.stdin.readable) {
  const next = new Uint8Array(buf.length + chunk.length);
  next.set(buf); next.set(chunk, buf.length); buf = next;
  while (buf.length >= 4) {
    const size = new DataView(buf.buffer, buf.byteOffset).getUint32(0);
    if (buf.length < 4 + size) break;
    let reply;
    try {
      reply = encoder.encode(decoder.decode(buf, 4, 4 + size));
    } catch (e) {
      reply = new TextEncoder().encode("!" + e.name + ": " + e.message);
    }
    buf = buf.slice(4 + size);
    await send(reply);
  }
}
""".replace("@MSGPACK@", MSGPACK)


class Echo:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def roundtrip(self, data: bytes) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(struct.pack(">I", len(data)) + data)
        self.proc.stdin.flush()
        (size,) = struct.unpack(">I", self.proc.stdout.read(4))
        return self.proc.stdout.read(size)


@pytest.fixture
def echo(tmp_path: Path) -> Iterator[Echo]:
    script = tmp_path / "echo.js"
    script.write_text(ECHO)
    proc = subprocess.Popen([find_deno(), "run", "--no-prompt", "--allow-read", str(script)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        yield Echo(proc)
    finally:
        proc.kill()
        proc.wait()


def normal(v: object) -> object:
    """A value as msgspec decodes it back (tuples as lists)."""
    if isinstance(v, (list, tuple)):
        return [normal(x) for x in v]
    if isinstance(v, dict):
        return {k: normal(x) for k, x in v.items()}
    if isinstance(v, dt.datetime):  # a JavaScript Date holds milliseconds
        return v.replace(microsecond=v.microsecond // 1000 * 1000)
    return v


_keys = st.text(max_size=10) | st.integers(min_value=-(2**31), max_value=2**31)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=40)
            | st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2400, 1, 1),
                           timezones=st.just(dt.UTC)))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=5)
                       | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_values)
def test_what_msgspec_encodes_msgpack_ts_decodes_and_encodes_back_the_same(echo, value):
    back = echo.roundtrip(msgspec.msgpack.encode(value))
    assert not back.startswith(b"!"), back
    assert msgspec.msgpack.decode(back) == normal(value)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_keys, st.integers(min_value=-(2**63), max_value=2**64 - 1), max_size=5))
def test_maps_with_integer_keys_come_back_with_string_keys(echo, value):
    # A JavaScript object's keys are strings: the runtime turns a map key into one as JS would.
    back = msgspec.msgpack.decode(echo.roundtrip(msgspec.msgpack.encode(value)))
    assert back == {str(k): v for k, v in value.items()}


def test_nan_and_the_float_extremes_survive(echo):
    values = [math.inf, -math.inf, 5e-324, 1.7976931348623157e308, -0.0]
    back = msgspec.msgpack.decode(echo.roundtrip(msgspec.msgpack.encode(values)))
    assert back == values and math.copysign(1, back[-1]) == -1
    assert math.isnan(msgspec.msgpack.decode(echo.roundtrip(msgspec.msgpack.encode(math.nan))))


def test_depth_limits_are_refused_not_overflowed(echo):
    def nested(depth: int) -> bytes:
        return b"\x91" * depth + b"\xc0"  # fixarray of one, `depth` times, then nil

    assert msgspec.msgpack.decode(echo.roundtrip(nested(500))) is not None  # the encoder's own limit is 512
    refused = echo.roundtrip(nested(2000))
    assert refused.startswith(b"!RangeError: MessagePack data nested too deeply"), refused
    too_deep_to_encode = echo.roundtrip(nested(700))  # decodes (≤ 1024) but cannot be encoded back (> 512)
    assert too_deep_to_encode.startswith(b"!TypeError: value is not serializable: cyclic or nested deeper")


def test_truncated_and_garbage_input_is_refused(echo):
    for data in (b"\xdb\x00\x00\x10\x00ab", b"\xc1", b"\x92\x01", b"\xd4\x05"):
        back = echo.roundtrip(data)
        assert back.startswith(b"!") or msgspec.msgpack.decode(back) is not None
    assert echo.roundtrip(msgspec.msgpack.encode("still here")) == msgspec.msgpack.encode("still here")
