"""Hostile and broken workers: at the handshake (bad cookie, token, version, framing, silence)
and after it (garbage mid-session). Each runs a real deno process as the "worker" against the
real Worker code; the host must reject it with the reason, kill and reap it, remove its
socket, and keep serving everything else."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
from conftest import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import (
    HandshakeError,
    HostError,
    PluginUnavailable,
    ProtocolError,
    WorkerLimits,
)
from host import protocol as p
from host.runtime import Runtime, find_deno, find_runtime_entry
from host.worker import Worker, WorkerSpec

# The fuzz test's own, larger timeout overrides this one.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

MSGPACK_URL = (Path(__file__).resolve().parents[1] / "worker_runtime" / "msgpack.ts").as_uri()

# Shared by every hostile script: the real msgpack codec (a static import of the main module
# needs no read permission), framing, and the argv the host starts a worker with.
PRELUDE = """
import { encode, Decoder } from "@MSGPACK_URL@";
const [path, token] = Deno.args;
const decoder = new Decoder();
let conn;
let inbuf = new Uint8Array(0);

async function connect() { conn = await Deno.connect({ transport: "unix", path }); }
function frame(msg) {
  const body = encode(msg);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}
function hex(s) { return new Uint8Array((s.match(/../g) ?? []).map((b) => parseInt(b, 16))); }
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
  let off = 0;
  for (const x of parts) { out.set(x, off); off += x.length; }
  return out;
}
async function write(bytes) { let off = 0; while (off < bytes.length) off += await conn.write(bytes.subarray(off)); }
async function fill(n) {
  while (inbuf.length < n) {
    const chunk = new Uint8Array(65536);
    const got = await conn.read(chunk);
    if (got === null) return false;
    inbuf = concat(inbuf, chunk.subarray(0, got));
  }
  return true;
}
/** The next frame from the host as an object, or null at end of file. */
async function readFrame() {
  if (!(await fill(4))) return null;
  const size = new DataView(inbuf.buffer, inbuf.byteOffset).getUint32(0);
  if (!(await fill(4 + size))) return null;
  const msg = decoder.decode(inbuf, 4, 4 + size);
  inbuf = inbuf.slice(4 + size);
  return msg;
}
function hello(fields = {}) {
  return frame({ type: "hello", cookie: "PLUGIN_HOST_7f3a9c2e", protocol: 1, token, pid: Deno.pid,
                 runtime: "hostile", ...fields });
}
/** Keep the process alive: the host, not this script, decides when it ends. */
function stayAlive() { setInterval(() => {}, 60_000); }
""".replace("@MSGPACK_URL@", MSGPACK_URL)

Hostile = Callable[[str], Runtime]


def gone(pid: int | None) -> bool:
    """The process has exited and been reaped (the worker is our child, so no zombie either)."""
    assert pid is not None
    return not os.path.exists(f"/proc/{pid}")


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.fixture
def run_root() -> Iterator[Path]:
    # Short, so that socket paths stay far below the ~108-byte sun_path limit.
    root = Path(tempfile.mkdtemp(prefix="ph-hs-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _runtime(entry: Path, run_root: Path, shared_state: Path) -> Runtime:
    run_dir = Path(tempfile.mkdtemp(dir=run_root))
    os.chmod(run_dir, 0o700)
    deno_dir = shared_state / "deno"
    deno_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(deno=find_deno(), entry=entry, deno_dir=deno_dir, run_dir=run_dir)


@pytest.fixture
def hostile(tmp_path: Path, run_root: Path, shared_state: Path) -> Hostile:
    """Runtime whose worker entry is a hostile script (PRELUDE + ``body``), own socket dir."""
    counter = itertools.count()

    def make(body: str) -> Runtime:
        script = tmp_path / f"hostile-{next(counter)}.js"
        script.write_text(PRELUDE + textwrap.dedent(body))
        return _runtime(script, run_root, shared_state)

    return make


def hostile_spec(tmp_path: Path, limits: WorkerLimits | None = None) -> WorkerSpec:
    return WorkerSpec(plugin_id="hostile", module=None, base_dir=tmp_path, read_paths=[],
                      limits=limits or WorkerLimits())


async def start_fails(runtime: Runtime, spec: WorkerSpec) -> tuple[HostError, Worker, float]:
    """Run a worker that must fail to start; returns its error, the worker and the time taken."""
    worker = Worker(spec, runtime)
    t0 = time.monotonic()
    with pytest.raises(HostError) as e, anyio.fail_after(15):
        await worker.run()
    return e.value, worker, time.monotonic() - t0


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
    assert isinstance(err, HandshakeError) and "no handshake within 0.5s" in err.message
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
    hostile, tmp_path, fields, reason
):
    # The worker process never connects; this test connects in its place, so it can read the
    # host's answer even though the host SIGKILLs the worker right after sending it.
    runtime = hostile("stayAlive();")
    worker = Worker(hostile_spec(tmp_path), runtime)
    failure: list[BaseException] = []

    async def run() -> None:
        try:
            await worker.run()
        except HostError as exc:
            failure.append(exc)

    argv: list[str] = []

    def exec_done() -> bool:
        """The child has exec'd: its argv (kept in ``argv``) ends with socket path and token."""
        socks = os.listdir(runtime.run_dir)
        if worker.pid is None or len(socks) != 1:
            return False
        with open(f"/proc/{worker.pid}/cmdline", "rb") as f:
            argv[:] = [a.decode() for a in f.read().split(b"\0")[:-1]]
        return argv[-2:-1] == [str(runtime.run_dir / socks[0])]

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_for(exec_done, timeout=5, interval=0.005)
        sock_path, token = argv[-2], argv[-1]
        hello = {"type": "hello", "cookie": p.MAGIC_COOKIE, "protocol": 1, "token": token, **fields}
        received = b""
        async with await anyio.connect_unix(sock_path) as stream:
            await stream.send(_frame(msgspec.msgpack.encode(hello)))
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


# ---------------------------------------------------------------------------- the token


async def test_socket_is_unlinked_after_accept_so_the_token_cannot_be_replayed(calc, run_root, shared_state):
    runtime = _runtime(find_runtime_entry(), run_root, shared_state)
    spec_ = WorkerSpec(plugin_id="calc", module=calc.root / "calc.js", base_dir=calc.root,
                       read_paths=[str(calc.root)])
    async with anyio.create_task_group() as tg:
        worker: Worker = await tg.start(Worker(spec_, runtime).run)
        # The worker's real command line ends with the socket path and the one-time token.
        with open(f"/proc/{worker.pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        sock_path, token = argv[-2].decode(), argv[-1].decode()
        assert Path(sock_path).parent == runtime.run_dir
        intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        intruder.settimeout(2)
        try:
            connected = False
            try:
                intruder.connect(sock_path)
                connected = True
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            if connected:  # show what a replay gets: it must not be a welcome
                hello = p.Hello(cookie=p.MAGIC_COOKIE, protocol=p.PROTOCOL_VERSION, token=token)
                intruder.sendall(p.encode(hello))
                try:
                    reply = intruder.recv(65536)
                except TimeoutError:
                    reply = b"<no answer>"
                assert b"welcome" not in reply
            assert not connected, f"a second client could connect to {sock_path} after the handshake"
            assert not os.path.exists(sock_path)
        finally:
            intruder.close()
            # the legitimate worker is unaffected and still serves
            assert await worker.call("add", [1, 2], timeout=5) == 3
            await worker.shutdown()
    assert gone(worker.pid)
    assert os.listdir(runtime.run_dir) == []


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
        assert worker.exports == ["f"] and worker.metadata == {"id": "hostile"}
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


# ---------------------------------------------------------------------------- fuzz

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
    st.binary(max_size=48).map(_frame),                               # framed garbage
    _messages.map(lambda m: _frame(msgspec.msgpack.encode(m))),       # framed, plausible maps
    st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n)),    # a bare header
)


@pytest.mark.timeout(120)
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
