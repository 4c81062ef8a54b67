"""Fuzzing the wire: the frame decoder, the handshake, and a whole host whose worker sends
random bytes after a good handshake. Garbage must only ever become a typed error (ProtocolError,
HandshakeError, WorkerCrashed, ...), never a crash of the host, and the plugin must serve again
once its worker has been replaced."""

from __future__ import annotations

import os
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.hostile import frame_of, hostile_spec, on_demand_runtime, start_fails
from support.processes import gone, process_gone, wait_for

from host import (
    CallTimeout,
    HandshakeError,
    HostError,
    PluginError,
    PoolConfig,
    ProtocolError,
    WorkerCrashed,
    WorkerLimits,
)
from host import protocol as p

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

# ---------------------------------------------------------------------------- the decoder


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decoder_only_ever_raises_protocol_error(data: bytes):
    buf = p.FrameBuffer(max_frame=4096)
    try:
        buf.feed(data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzz_valid_length_random_bodies(bodies: list[bytes]):
    buf = p.FrameBuffer()
    for body in bodies:
        try:
            msgs = buf.feed(struct.pack(">I", len(body)) + body)
        except ProtocolError:
            return
        assert all(isinstance(m, p.Message.__args__) for m in msgs)


# ---------------------------------------------------------------------------- the handshake

_NAMES = ["hello", "welcome", "reject", "ready", "call", "result", "error", "log", "ping", "pong",
          "shutdown", "host_call", "bogus"]
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "cookie": st.sampled_from([p.MAGIC_COOKIE]) | _values,
        "protocol": st.sampled_from([p.PROTOCOL_VERSION]) | _values,
        "token": _values, "pid": _values, "id": _values, "seq": _values, "metadata": _values,
    },
)
_messages = st.builds(lambda t, f: {**f, "type": t}, st.sampled_from(_NAMES) | _values, _fields)


_chunks = st.one_of(
    st.binary(max_size=48),                                           # raw bytes
    st.binary(max_size=48).map(frame_of),                               # framed garbage
    _messages.map(lambda m: frame_of(msgspec.msgpack.encode(m))),       # framed, plausible maps
    st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n)),    # a bare header
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.lists(_chunks, max_size=3).map(b"".join), close=st.booleans())
async def test_random_first_bytes_are_always_a_handshake_error(hostile, tmp_path, data, close):
    runtime = hostile(f"""
        await connect();
        await write(hex("{data.hex()}"));
        {"conn.close();" if close else ""}
        stayAlive();
    """)
    err, worker, _ = await start_fails(runtime, hostile_spec(tmp_path, WorkerLimits(handshake_timeout=0.3)))
    assert isinstance(err, HandshakeError), repr(err)
    if close:  # the host saw the end of the stream: it did not wait for the deadline
        assert "no handshake within" not in err.message, err.message
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []


# ---------------------------------------------------------------------------- after the handshake

ONE = PoolConfig(min_workers=1, max_workers=1)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.lists(_chunks, min_size=1, max_size=3).map(b"".join), end=st.sampled_from(["", "close", "exit"]))
async def test_random_frames_after_a_good_handshake_never_take_the_host_down(
    plugin_dir, make_host, hostile, data, end
):
    # Two plugins served by the hostile runtime; "target" answers one call with the garbage
    # (followed by a valid result, then maybe the end of its stream), "bystander" never does.
    entry = on_demand_runtime(hostile, plugin_dir, "target", "bystander")
    async with make_host(runtime_entry=entry, pool=ONE, limits=WorkerLimits(call_timeout=1)) as h:
        pid = await h.call("target", "pid")
        bystander = await h.call("bystander", "pid")
        try:
            outcome: object = await h.call("target", "f", data.hex(), end)
        except HostError as exc:
            outcome = exc
            # Typed, whatever the bytes were: a violation, a lost worker, a frame that never
            # ended, or an error frame that happened to answer the call.
            assert isinstance(exc, (ProtocolError, WorkerCrashed, CallTimeout, PluginError)), repr(exc)
            assert not isinstance(exc, HandshakeError), repr(exc)
        if isinstance(outcome, HostError) or end:
            # The worker is being replaced: the host kills a violator, and one whose stream
            # ended, within its grace period.
            await wait_for(lambda: process_gone(pid), timeout=3)
            # ...and the host has seen it go: a call sent meanwhile may be lost with it
            await wait_for(lambda: pid not in [w.pid for w in h.plugin("target").workers], timeout=3)
        assert await h.call("target", "f", "ok") == "ok"
        info = h.plugin("target")
        assert info.state == "running", info.error
        assert info.workers and info.workers[0].pid is not None
        assert await h.call("bystander", "pid") == bystander
        assert h.plugin("bystander").crashes == 0
