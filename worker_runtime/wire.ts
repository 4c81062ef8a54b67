/**
 * The wire: the host's socket, frames out (one pending buffer, a single writer) and in (one read
 * loop over a growable buffer), the limits the welcome sets, the checks on fields as they
 * arrive, and how the worker exits. The rest of the runtime talks to the host through `send`
 * and the `onFrame` the entry point gives `readLoop`.
 */

import { Decoder, Encoder, EncodingTooLarge } from "./msgpack.ts";
import type { FromWorker, Id, Limits } from "./protocol.ts";

export const EXIT_OK = 0;
export const EXIT_REJECTED = 3;
export const EXIT_HEARTBEAT = 4;
export const EXIT_PROTOCOL = 5;

const READ_CHUNK = 64 * 1024;
/** Buffers bigger than this are not kept for reuse once a large frame has gone through. */
const KEEP_BUFFER = 1024 * 1024;

export const limits: Limits = {
  heartbeat_interval_ms: 1000,
  heartbeat_timeout_ms: 10000,
  max_frame: 16 * 1024 * 1024,
  max_log_entries: 1000,
  max_log_bytes: 1024 * 1024,
  max_inflight: 1,
  max_result_bytes: 16 * 1024 * 1024,
  max_web_workers: 4,
  egress_proxy: 0,
  max_host_calls: 64,
  harden: 0,
  max_exports: 1000,
};

/** A message as it is read off the wire (checked field by field) or built to be sent. */
export type Msg = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Connection and exit

let conn: Deno.UnixConn;
/** Milliseconds on a clock that only goes forward, taken before a plugin's code runs (which may
 * replace performance.now or Date.now): the wall clock stepped forward past the heartbeat
 * timeout (NTP, a VM resumed) made a worker take the host for lost and exit. */
export const monotonic: () => number = performance.now.bind(performance);
/** When the host last sent anything, on ``monotonic`` (the heartbeat watch reads it). */
export let lastReceived = monotonic();

export const stderr = (text: string): void => {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(`worker: ${text}\n`));
  } catch {
    // stderr closed: nothing to report to
  }
};

export function exit(code: number, why?: string): never {
  if (why) stderr(why);
  Deno.exit(code);
}

export function protocolError(why: string): never {
  exit(EXIT_PROTOCOL, `protocol error: ${why}`);
}

export async function connect(path: string): Promise<void> {
  conn = await Deno.connect({ transport: "unix", path });
}

// ---------------------------------------------------------------------------------------------
// Output: frames are encoded straight into one pending buffer; a single writer drains it, so
// frames queued while a write is in progress go out together in the next write.

const out = new Encoder(64 * 1024);
let spare: Uint8Array | undefined;
let writing = false;
let flushQueued = false;
let encoding = false;
/** Frames sent by plugin code (a getter, a toJSON) while another frame was being encoded. */
const reentrant: FromWorker[] = [];

/**
 * Queues one frame. Returns its body size, or -1 if it would exceed `max` bytes (then nothing
 * is queued; the encoder stops at the limit). Throws what the encoder throws (TypeError for
 * unencodable values).
 */
export function send(msg: FromWorker, max: number = limits.max_frame): number {
  if (encoding) {
    reentrant.push(msg);
    return 0;
  }
  const start = out.pos;
  let size: number;
  encoding = true;
  try {
    out.ensure(4);
    out.pos = start + 4;
    out.limit = start + 4 + max;
    try {
      out.write(msg);
      size = out.pos - start - 4;
    } catch (e) {
      out.pos = start;
      if (!(e instanceof EncodingTooLarge)) throw e;
      size = max + 1;
    } finally {
      out.limit = Infinity;
    }
    if (size > max) out.pos = start;
    else out.view.setUint32(start, size);
  } finally {
    encoding = false;
    // Frames the plugin sent meanwhile go after this one, whose header is now complete.
    if (reentrant.length) drainReentrant();
  }
  if (size > max) return -1;
  if (!writing && !flushQueued) {
    flushQueued = true;
    queueMicrotask(flush);
  }
  return size;
}

function drainReentrant(): void {
  const msgs = reentrant.splice(0);
  for (const m of msgs) {
    try {
      send(m);
    } catch {
      // only logs and host calls get here; an unencodable one is dropped
    }
  }
}

async function flush(): Promise<void> {
  flushQueued = false;
  if (writing) return;
  writing = true;
  try {
    while (out.pos > 0) {
      const full = out.buf;
      const data = out.take(spare);
      spare = undefined;
      let off = 0;
      while (off < data.length) off += await conn.write(data.subarray(off));
      if (full.length <= KEEP_BUFFER) spare = full;
    }
  } catch {
    exit(EXIT_OK); // the host closed the socket
  } finally {
    writing = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Input: one read loop over a growable buffer

const decoder = new Decoder();

/** Reads frames until the host closes the socket; each goes to `onFrame`. */
export async function readLoop(onFrame: (msg: unknown) => void, describe: (e: unknown) => string): Promise<never> {
  let buf = new Uint8Array(2 * READ_CHUNK);
  let view = new DataView(buf.buffer);
  let start = 0;
  let end = 0;
  let want = 0; // bytes of the frame being awaited (header + body), 0 when unknown
  for (;;) {
    // Make room: move the unread bytes to the front, grow for a large frame, shrink after one.
    if (start === end) {
      start = end = 0;
      if (buf.length > KEEP_BUFFER) {
        buf = new Uint8Array(2 * READ_CHUNK);
        view = new DataView(buf.buffer);
        decoder.release();
      }
    }
    const room = Math.max(READ_CHUNK, want);
    if (buf.length - end < room) {
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      if (buf.length - end < room) {
        const next = new Uint8Array(Math.max(buf.length * 2, end + room));
        next.set(buf.subarray(0, end));
        buf = next;
        view = new DataView(buf.buffer);
      }
    }
    let n: number | null;
    try {
      n = await conn.read(buf.subarray(end));
    } catch {
      n = null;
    }
    if (n === null) exit(EXIT_OK);
    end += n;
    lastReceived = monotonic();
    want = 0;
    while (end - start >= 4) {
      const size = view.getUint32(start);
      if (size > limits.max_frame) {
        protocolError(`frame of ${size} bytes announced, over the ${limits.max_frame}-byte maximum`);
      }
      if (end - start - 4 < size) {
        want = 4 + size - (end - start);
        break;
      }
      let msg: unknown;
      try {
        msg = decoder.decode(buf, start + 4, start + 4 + size);
      } catch (e) {
        protocolError(`undecodable frame: ${describe(e)}`);
      }
      start += 4 + size;
      onFrame(msg);
    }
    // Answers produced synchronously go out now, before the next read is issued.
    if (flushQueued) flush();
  }
}

export function requireId(v: unknown, what: string): Id {
  if ((typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint") return v;
  protocolError(`${what} must be an integer`);
}

export function requireString(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  protocolError(`${what} must be a string`);
}

export function optionalNumber(v: unknown, what: string): number | undefined {
  if (v == null) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  protocolError(`${what} must be a number`);
}

export function optionalArray(v: unknown, what: string): unknown[] {
  if (v == null) return [];
  if (Array.isArray(v)) return v;
  protocolError(`${what} must be an array`);
}
