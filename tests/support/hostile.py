"""Hostile worker runtimes: a fake runtime (the real msgpack codec and framing, then a script of
its own) that misbehaves on the protocol; used by test_handshake.py and tests/security/."""

from __future__ import annotations

import os
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from host import HostError, WorkerLimits
from host.runtime import Runtime, find_deno
from host.worker import Worker, WorkerSpec

from .plugins import PluginDir

MSGPACK_URL = (Path(__file__).resolve().parents[2] / "worker_runtime" / "msgpack.ts").as_uri()


# Shared by every hostile script: the real msgpack codec (a static import of the main module
# needs no read permission), framing, and the argv the host starts a worker with.
PRELUDE = """
import { encode, Decoder } from "@MSGPACK_URL@";
const [path, token] = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer()).split("\\n");
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


def frame_of(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def runtime_for(entry: Path, run_root: Path, shared_state: Path) -> Runtime:
    run_dir = Path(tempfile.mkdtemp(dir=run_root))
    os.chmod(run_dir, 0o700)
    deno_dir = shared_state / "deno"
    deno_dir.mkdir(parents=True, exist_ok=True)
    return Runtime(deno=find_deno(), entry=entry, deno_dir=deno_dir, run_dir=run_dir)


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


# A hostile worker that serves correctly (handshake, pings, shutdown) until a call asks it to
# misbehave, so that a host can run it as the runtime of real plugins (``runtime_entry``):
# ``pid()`` and ``f("ok")`` answer normally; ``f(hex, end)`` writes those raw bytes, then a
# valid result for the call, then with ``end`` "close" closes its end of the connection (and
# stays alive), with "exit" exits (end of stream and of process), with "" carries on.
ON_DEMAND = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    if (welcome?.type !== "welcome") Deno.exit(9);
    const id = welcome.plugin_id;
    await write(frame({ type: "ready", metadata: { id, name: id, version: "1.0.0", apiVersion: "1.0" },
                        exports: ["f", "pid"] }));
    for (;;) {
      const msg = await readFrame();
      if (msg === null || msg.type === "shutdown") Deno.exit(0);
      if (msg.type === "ping") await write(frame({ type: "pong", seq: msg.seq }));
      if (msg.type !== "call") continue;
      const [bytes, end] = msg.args ?? [];
      if (msg.fn === "pid" || bytes === "ok") {
        await write(frame({ type: "result", id: msg.id, value: msg.fn === "pid" ? Deno.pid : "ok" }));
        continue;
      }
      await write(concat(hex(bytes), frame({ type: "result", id: msg.id, value: "after" })));
      if (end === "exit") Deno.exit(0);
      if (end === "close") { conn.close(); break; }
    }
    stayAlive();
"""


def on_demand_runtime(hostile, plugin_dir: PluginDir, *plugins: str) -> str:
    """The entry of the ON_DEMAND fake runtime, with a stub module for each of ``plugins`` (the
    fake answers for them whatever their module says), for ``make_host(runtime_entry=...)``."""
    runtime = hostile(ON_DEMAND)
    for name in plugins:
        plugin_dir.add(f"{name}.js", "export function f() {}\n")
    return str(runtime.entry)
