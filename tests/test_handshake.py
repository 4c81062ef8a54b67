"""Hostile and broken workers: at the handshake (bad cookie, token, version, framing, silence)
and after it (garbage mid-session). Each runs a real deno process as the "worker" against the
real Worker code; the host must reject it with the reason, kill and reap it, remove its
socket, and keep serving everything else. (Replaying the token is in tests/security/test_gallery.py,
fuzzing the handshake in tests/security/test_fuzz.py.)"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import anyio
import msgspec
import pytest
from support.hostile import frame_of, hostile_spec, start_fails
from support.processes import gone, wait_for

from host import (
    HandshakeError,
    HostError,
    PluginUnavailable,
    ProtocolError,
    WorkerLimits,
)
from host import protocol as p
from host.runtime import Runtime
from host.worker import Worker

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


async def assert_rejected_while_host_serves(h, runtime: Runtime, tmp_path: Path, match: str) -> None:
    """The hostile worker is rejected with ``match`` in the reason, at once (not by the
    deadline), killed, reaped, its socket removed; the host's own workers are untouched."""
    assert await h.call("calc", "add", 1, 2) == 3
    calc_pid = h.plugin("calc").workers[0].pid
    err, worker, elapsed = await start_fails(runtime, hostile_spec(tmp_path))
    assert isinstance(err, HandshakeError), repr(err)
    assert match in err.message
    assert elapsed < 3.0  # the default handshake deadline is 10 s: this was not a timeout
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []
    assert await h.call("calc", "add", 1, 2) == 3
    info = h.plugin("calc")
    assert info.workers[0].pid == calc_pid and info.crashes == 0


# ---------------------------------------------------------------------------- at the handshake


@pytest.mark.parametrize(
    ("action", "match"),
    [
        pytest.param('await write(hello({ cookie: "NOT_A_PLUGIN_HOST" })); await readFrame();',
                     "bad magic cookie", id="wrong-magic-cookie"),
        pytest.param('await write(hello({ token: token.slice(0, -1) + (token.endsWith("A") ? "B" : "A") }));'
                     " await readFrame();",
                     "bad or replayed token", id="wrong-token"),
        pytest.param("await write(hello({ protocol: 99 })); await readFrame();",
                     "protocol version 99 unsupported", id="unsupported-protocol-version"),
        # Only the header is sent: the host must refuse on the length, not wait for 4 GiB.
        pytest.param('await write(hex("ffffffff"));',
                     "over the 16777216-byte maximum", id="first-frame-over-max-frame"),
        # Some other program pointed at the socket: "GET " read as a length is ~1.1 GiB.
        pytest.param(r'await write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));',
                     "1195725856 bytes", id="another-protocol-at-the-socket"),
        # A plausible length, then bytes that are not MessagePack (0xc1 is never used).
        pytest.param('await write(hex("00000006c1c1c1c1c1c1"));',
                     "bad frame", id="well-framed-garbage"),
        pytest.param('await write(frame({ type: "ready", metadata: null, exports: ["steal"] }));',
                     "expected hello, got Ready", id="message-other-than-hello-first"),
        pytest.param("conn.close();",
                     "connection closed", id="connection-closed-before-hello"),
    ],
)
async def test_bad_first_contact_is_rejected_at_once_and_host_keeps_serving(
    calc, make_host, hostile, tmp_path, action, match
):
    runtime = hostile(f"await connect(); {action} stayAlive();")
    async with make_host() as h:
        await assert_rejected_while_host_serves(h, runtime, tmp_path, match)


async def assert_deadline(runtime: Runtime, tmp_path: Path, *, socket_gone: bool) -> None:
    """The worker fails at its 0.5 s handshake deadline (not before, not long after) and is
    reaped; with ``socket_gone``, its socket directory is checked empty as well."""
    err, worker, elapsed = await start_fails(runtime, hostile_spec(tmp_path, WorkerLimits(handshake_timeout=0.5)))
    assert isinstance(err, HandshakeError) and "within 0.5s" in err.message  # no handshake, or no ready after it
    assert 0.5 <= elapsed < 1.5
    assert gone(worker.pid)
    if socket_gone:
        assert os.listdir(runtime.run_dir) == []


async def test_silent_connection_fails_at_the_handshake_deadline(calc, make_host, hostile, tmp_path):
    runtime = hostile("""
        await connect();
        stayAlive();
    """)
    async with make_host() as h:
        await assert_deadline(runtime, tmp_path, socket_gone=True)
        assert await h.call("calc", "add", 1, 2) == 3


async def test_trickled_hello_does_not_stretch_the_handshake_deadline(hostile, tmp_path):
    # Slowloris: one byte of a valid hello every 50 ms (~5 s in all) keeps the connection busy
    # but the deadline covers the whole handshake, not the gap between reads.
    runtime = hostile("""
        await connect();
        for (const b of hello()) { await write(Uint8Array.of(b)); await new Promise((r) => setTimeout(r, 50)); }
        stayAlive();
    """)
    await assert_deadline(runtime, tmp_path, socket_gone=False)


async def test_worker_that_stalls_after_welcome_fails_at_the_handshake_deadline(hostile, tmp_path):
    # A correct hello, then no ready: the deadline covers the whole handshake, ready included.
    runtime = hostile("""
        await connect();
        await write(hello());
        const welcome = await readFrame();
        if (welcome?.type === "welcome") stayAlive();
    """)
    await assert_deadline(runtime, tmp_path, socket_gone=False)


async def test_worker_that_never_connects_fails_at_the_handshake_deadline(hostile, tmp_path):
    runtime = hostile("stayAlive();")
    await assert_deadline(runtime, tmp_path, socket_gone=True)


async def test_host_with_a_hostile_runtime_marks_the_plugin_failed_with_the_reason(calc, make_host, hostile):
    # The whole PluginHost path: pool start → worker → rejection becomes the plugin's error.
    runtime = hostile("""
        await connect();
        await write(hello({ cookie: "NOT_A_PLUGIN_HOST" }));
        stayAlive();
    """)
    async with make_host(runtime_entry=str(runtime.entry)) as h:
        info = h.plugin("calc")
        assert info.state == "error" and "bad magic cookie" in info.error
        with pytest.raises(PluginUnavailable, match="bad magic cookie"):
            await h.call("calc", "add", 1, 2)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"cookie": "NOT_A_PLUGIN_HOST"}, "bad magic cookie", id="cookie"),
        pytest.param({"token": "replayed-token"}, "bad or replayed token", id="token"),
        pytest.param({"protocol": 99}, "protocol version 99 unsupported (host speaks 1)", id="protocol"),
    ],
)
async def test_rejected_hello_is_answered_with_reject_and_its_reason_then_closed(
    hostile, tmp_path, fields, reason, caplog
):
    # The worker process never connects; this test connects in its place, so it can read the
    # host's answer even though the host SIGKILLs the worker right after sending it. The fake
    # worker prints the socket path and token it read on stdin; the host logs its output.
    caplog.set_level(logging.DEBUG, logger="host.worker")
    runtime = hostile('console.log("BOOT", path, token); stayAlive();')
    worker = Worker(hostile_spec(tmp_path), runtime)
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            await worker.run()
        except HostError as exc:
            failure.append(exc)

    boot: list[str] = []

    def booted() -> bool:
        """The child printed what it read on stdin: the socket path and the token."""
        for record in caplog.records:
            message = record.getMessage()
            if " BOOT " in message:
                boot[:] = message.split(" BOOT ", 1)[1].split()
                return True
        return False

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_for(booted, timeout=5, interval=0.005)
        sock_path, token = boot
        assert sock_path.startswith(str(runtime.run_dir))
        hello = {"type": "hello", "cookie": p.MAGIC_COOKIE, "protocol": 1, "token": token, **fields}
        received = b""
        async with await anyio.connect_unix(sock_path) as stream:
            await stream.send(frame_of(msgspec.msgpack.encode(hello)))
            with anyio.fail_after(5):
                while True:
                    try:
                        received += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
    assert p.FrameBuffer().feed(received) == [p.Reject(reason=reason)]
    assert len(failure) == 1 and isinstance(failure[0], HandshakeError) and reason in failure[0].message
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []


async def test_rejected_worker_is_reaped_without_waiting_for_a_reader_that_never_ran(hostile, tmp_path):
    # Rejection is decided within milliseconds of the hello; nothing remains to drain from a
    # connection the host itself rejected, so run() should raise promptly, not after a grace.
    runtime = hostile("""
        await connect();
        await write(hello({ cookie: "NOT_A_PLUGIN_HOST" }));
        stayAlive();
    """)
    err, worker, elapsed = await start_fails(runtime, hostile_spec(tmp_path))
    assert isinstance(err, HandshakeError) and "bad magic cookie" in err.message
    assert gone(worker.pid)
    assert elapsed < 0.45, f"rejection took {elapsed:.3f}s"


# ---------------------------------------------------------------------------- after the handshake

# A worker that completes hello → welcome → ready correctly, then answers the first call
# with the frame under test.
MID_SESSION = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    if (welcome?.type !== "welcome") Deno.exit(9);
    await write(frame({ type: "ready", metadata: { id: "hostile" }, exports: ["f"] }));
    for (;;) {
      const msg = await readFrame();
      if (msg === null) Deno.exit(0);
      if (msg.type === "call") { await write(BAD(msg)); break; }
    }
    stayAlive();
"""


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        pytest.param('() => hex("ffffffff")', "over the 16777216-byte maximum", id="lying-length"),
        pytest.param('(m) => concat(hex("7fffffff"), frame({ type: "result", id: m.id, value: 1 }))',
                     "2147483647 bytes", id="lying-length-before-a-real-answer"),
        pytest.param('() => hex("00000006c1c1c1c1c1c1")', "bad frame", id="garbage-body"),
        pytest.param('(m) => frame({ type: "bogus", id: m.id })', "bad frame", id="unknown-type"),
        pytest.param('(m) => frame({ type: "result", id: "one", value: 1 })', "bad frame",
                     id="wrong-field-type"),
        pytest.param('() => frame({ type: "welcome", plugin_id: "x" })', "unexpected Welcome frame",
                     id="host-only-message"),
    ],
)
async def test_bad_frame_after_handshake_fails_the_call_and_kills_the_worker(hostile, tmp_path, bad, match):
    runtime = hostile(MID_SESSION.replace("BAD", f"({bad})"))
    worker = Worker(hostile_spec(tmp_path), runtime)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        assert worker.exports == ["f"] and worker.metadata is None  # what it said is not kept: only the spec's
        t0 = time.monotonic()
        with pytest.raises(ProtocolError) as e:
            await worker.call("f", [], timeout=10)
        assert time.monotonic() - t0 < 3.0  # failed on the frame, not on the call's deadline
        assert not isinstance(e.value, HandshakeError)
        assert match in e.value.message
        with anyio.fail_after(5):
            await worker.exited.wait()
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []
    assert worker.state == "crashed"


async def test_answer_that_arrived_before_a_bad_frame_still_settles_its_call(hostile, tmp_path):
    # One write: a valid result for call 1, then a frame announcing 4 GiB. The result was
    # received whole before the violation, so call 1 returns; the worker is still killed.
    runtime = hostile(MID_SESSION.replace(
        "BAD", '((m) => concat(frame({ type: "result", id: m.id, value: 42 }), hex("ffffffff")))'))
    worker = Worker(hostile_spec(tmp_path), runtime)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        assert await worker.call("f", [], timeout=10) == 42
        with anyio.fail_after(5):
            await worker.exited.wait()
    assert isinstance(worker.exit_error, ProtocolError)
    assert "over the 16777216-byte maximum" in worker.exit_error.message
    assert gone(worker.pid)


async def test_a_load_error_is_capped_by_the_host_whatever_the_runtime_sent(hostile, tmp_path):
    # The runtime caps an error's message and stack at 64 KiB, but it runs beside plugin code: a
    # ready frame carrying a 6 MiB load error reached the plugin's state, every listing of it and
    # the pattern that finds its place (helper-92's finding), uncapped.
    runtime = hostile("""
        await connect();
        await write(hello());
        await readFrame();
        const big = "m".repeat(6 * 1024 * 1024);
        await write(frame({ type: "ready", metadata: null, exports: [],
                            error: { name: "Error", message: big, stack: "/" + big } }));
        stayAlive();
    """)
    err, worker, _ = await start_fails(runtime, hostile_spec(tmp_path))
    assert isinstance(err, PluginUnavailable) and "failed to load: Error: mmm" in err.message, err
    assert len(err.message) < 70 * 1024 and "more characters" in err.message
    assert gone(worker.pid)


async def test_a_ready_naming_an_export_longer_than_the_cap_is_refused_as_it_is_decoded(hostile, tmp_path):
    # The host's own bound (protocol.MAX_EXPORT_NAME, 256), whatever the runtime checks.
    runtime = hostile("""
        await connect();
        await write(hello());
        await readFrame();
        await write(frame({ type: "ready", metadata: null, exports: ["f", "x".repeat(257)] }));
        stayAlive();
    """)
    err, worker, elapsed = await start_fails(runtime, hostile_spec(tmp_path))
    assert isinstance(err, HandshakeError) and "length <= 256" in err.message and "$.exports" in err.message, err
    assert elapsed < 3.0 and gone(worker.pid)


async def test_a_ready_listing_more_exports_than_the_cap_is_refused_as_it_is_decoded(hostile, tmp_path):
    # The host's own bound (protocol.MAX_EXPORTS, 1,000), whatever the runtime counts: before, a
    # ready frame's exports and signatures were bounded only by the frame size (100,000 of them
    # cost the host 48 MB and 7 s to load).
    runtime = hostile("""
        await connect();
        await write(hello());
        await readFrame();
        const exports = Array.from({ length: 1001 }, (_, i) => `f${i}`);
        await write(frame({ type: "ready", metadata: null, exports }));
        stayAlive();
    """)
    err, worker, elapsed = await start_fails(runtime, hostile_spec(tmp_path))
    assert isinstance(err, HandshakeError) and "length <= 1000" in err.message and "$.exports" in err.message, err
    assert elapsed < 3.0 and gone(worker.pid)
