/**
 * The Plugin Host worker: one Deno process serving one plugin over a Unix socket.
 *
 *   deno run [flags] worker_runtime/worker.ts     (stdin: "<socket-path>\n<token>\n")
 *
 * The socket path and the one-time token come on stdin, not as arguments: Deno.args needs no
 * permission, so plugin code could read them there.
 * It speaks the protocol of docs/protocol.md (message and field names as in host/protocol.py):
 * hello/welcome/ready, then call/execute answered by result/error, with log, host_call/host_reply,
 * deliver (channel events), hook (onStop, onConfigChange), ping/pong, cancel and shutdown. It needs no permission beyond the socket and the plugin's
 * directory; everything the plugin may do is decided by the flags the host starts it with.
 *
 * This file is the entry point: handshake, dispatch of each frame, heartbeat and parent watch.
 * The rest, by concern:
 *   wire.ts     the socket, frames out and in, limits, field checks, exit codes
 *   calls.ts    calls and executions in flight, how each settles, errors that escape them
 *   execute.ts  the execute frame (ad-hoc code); loaded only by an execute worker, at its welcome
 *   context.ts  the context argument: host calls (cache, storage, channel), channel handlers
 *   console.ts  log budgets and console capture
 *   errors.ts   PluginError, ErrorTypes, and any thrown value as an error frame
 *   sandbox.ts  the globals changed before plugin code runs (Worker cap, egress fetch)
 *   tools.ts    execute's crypto, db and operator (host-function) tools
 *   isolate.ts  execute's per-execution contexts and the hardened main realm
 *   lockdown.ts what hardening changes in that main realm, and which execution a value belongs to
 * They are loaded before plugin code (execute.ts, tools.ts, isolate.ts, lockdown.ts and typescript.ts only
 * in an execute worker: a plugin's worker stays smaller without them), so a plugin can import them (a URL relative to
 * import.meta.resolve("@plugin-host/kit") needs no read grant for a module already loaded). What
 * it reaches there is its own process only: `limits` is frozen once the welcome has set it, the
 * Worker counter and the native constructors are closures, and the host enforces every cap on
 * what arrives (and RLIMIT_DATA on the process) whatever a worker sends.
 */

import { executor, onCall, onCancel, onEscaped, onHook, session, trackConcurrentCalls } from "./calls.ts";
import { captureConsole } from "./console.ts";
import { onDeliver, onHostReply } from "./context.ts";
import { errorInfo, ErrorTypes, importError, jsonClone, safeString, sendErrorFrame } from "./errors.ts";
// Loaded with the runtime (a static import needs no read grant), so that a plugin may import it
// as "@plugin-host/kit" (import_map.json) with none either.
import "./kit.ts";
import { type ErrorInfo, type Limits, type Signature, MAGIC_COOKIE as COOKIE, PROTOCOL_VERSION as PROTOCOL } from "./protocol.ts";
import { installGlobals, useEgressProxy } from "./sandbox.ts";
import { signatureOf } from "./signature.ts";
import {
  connect,
  EXIT_HEARTBEAT,
  EXIT_OK,
  EXIT_REJECTED,
  exit,
  lastReceived,
  limits,
  monotonic,
  type Msg,
  protocolError,
  readLoop,
  requireId,
  requireString,
  send,
  stderr,
} from "./wire.ts";

const PPID_POLL_MS = 500;
const MAX_EXPORT_NAME = 256; // host/protocol.py MAX_EXPORT_NAME: a longer one is a bad frame there

installGlobals(); // before any plugin code is imported

let phase: "hello" | "importing" | "ready" = "hello";
/** Frames that arrived while the plugin was still being imported. */
const early: Msg[] = [];

function handle(msg: unknown): void {
  try {
    dispatch(msg);
  } catch (e) {
    // A bug of ours must not stop the read loop; the host's deadline covers a lost answer.
    stderr(`internal error handling a frame: ${errorInfo(e).stack}`);
  }
}

function dispatch(m: unknown): void {
  if (m === null || typeof m !== "object" || Array.isArray(m) || m instanceof Uint8Array) {
    protocolError("a frame is not a map");
  }
  const msg = m as Msg;
  switch (msg.type) {
    case "ping":
      send({ type: "pong", seq: Number(requireId(msg.seq, "ping.seq")) });
      return;
    case "call":
    case "execute":
    case "hook":
      if (phase === "hello") protocolError(`${msg.type} before welcome`);
      if (phase === "importing") {
        early.push(msg);
        return;
      }
      if (msg.type === "call") onCall(msg);
      else if (msg.type === "hook") onHook(msg);
      else executor.onExecute(msg);
      return;
    case "cancel":
      if (phase === "importing") {
        early.push(msg);
        return;
      }
      onCancel(msg);
      return;
    case "host_reply":
      onHostReply(msg);
      return;
    case "deliver":
      if (phase === "hello") protocolError("deliver before welcome");
      onDeliver(msg);
      return;
    case "welcome":
      if (phase !== "hello") protocolError("welcome after the handshake");
      onWelcome(msg);
      return;
    case "reject":
      if (phase !== "hello") protocolError("reject after the handshake");
      exit(EXIT_REJECTED, `rejected by the host: ${safeString(msg.reason)}`);
      break;
    case "shutdown":
      exit(EXIT_OK);
      break;
    default:
      protocolError(`unknown message type ${JSON.stringify(safeString(msg.type))}`);
  }
}

// Field checks: a missing required field or one of the wrong type is a protocol error.

// ---------------------------------------------------------------------------------------------
// Handshake, heartbeat, parent watch

/**
 * Run `fn` every `ms` without keeping the process alive. Built on AbortSignal.timeout because
 * in Deno 2.9 the first setTimeout/setInterval of a process costs about 4-10 ms (its timer
 * module loads lazily), which would double a worker's time to ready, and ~3 MB RSS (~2 MB of
 * it private) that a plugin never using timers need not pay: the runtime never calls them
 * (a plugin that does pays both at its first timer).
 */
function every(ms: number, fn: () => void): () => void {
  let stopped = false;
  const arm = (): void => {
    const signal = AbortSignal.timeout(ms);
    signal.addEventListener("abort", () => {
      if (stopped) return;
      fn();
      arm();
    }, { once: true });
  };
  arm();
  return () => {
    stopped = true;
  };
}

let stopHeartbeatWatch: (() => void) | undefined;

function startHeartbeatWatch(): void {
  stopHeartbeatWatch?.();
  const timeout = limits.heartbeat_timeout_ms;
  stopHeartbeatWatch = every(Math.max(10, Math.min(500, Math.floor(timeout / 4))), () => {
    if (monotonic() - lastReceived > timeout) {
      exit(EXIT_HEARTBEAT, `nothing from the host for ${timeout} ms`);
    }
  });
}

function startParentWatch(): void {
  const ppid = Deno.ppid;
  every(PPID_POLL_MS, () => {
    if (Deno.ppid !== ppid) exit(EXIT_OK, "parent process changed");
  });
}

function applyLimits(v: unknown): void {
  if (v == null) return;
  if (typeof v !== "object" || Array.isArray(v)) protocolError("welcome.limits must be a map");
  const given = v as Record<string, unknown>;
  for (const key of Object.keys(limits) as Array<keyof Limits>) {
    const x = given[key];
    if (x == null) continue;
    const n = typeof x === "bigint" ? Number(x) : x;
    const floor = key === "max_web_workers" || key === "egress_proxy" ? 0 : Number.MIN_VALUE;
    if (typeof n !== "number" || !(n >= floor)) protocolError(`welcome.limits.${key} must be a positive number`);
    limits[key] = n;
  }
}

function toFileUrl(path: string): string {
  const abs = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  // No regular expression on the start path: the first one maps V8's regexp compiler into
  // every idle worker (~0.5 MB of RSS; signature.ts says more).
  return "file://" + encodeURI(abs).replaceAll("?", "%3F").replaceAll("#", "%23");
}

/** The module's exported functions, each with what it declares it takes; more than
 * `limits.max_exports` of them fail the load, counted before any is read further. */
function exportedFunctions(mod: Record<string, unknown>, module: string): Record<string, Signature> {
  const found: Record<string, Signature> = {};
  let count = 0;
  for (const k of Object.keys(mod)) {
    try {
      if (typeof mod[k] !== "function") continue;
    } catch {
      continue; // an export still in its temporal dead zone
    }
    count++;
    if (k.length > MAX_EXPORT_NAME) {  // `export { f as "..." }`: every listing and metric would carry it
      throw new RangeError(`${module} exports a function named "${k.slice(0, 40)}...", ${k.length} characters ` +
        `long: at most ${MAX_EXPORT_NAME}`);
    }
  }
  if (count > limits.max_exports) {
    throw new RangeError(`${module} exports ${count} functions, more than the ${limits.max_exports} a plugin ` +
      "may export: export an object holding them, or split the plugin");
  }
  for (const k of Object.keys(mod)) {
    try {
      const value = mod[k];
      if (typeof value !== "function") continue;
      const sig = signatureOf(value as (...args: unknown[]) => unknown);
      if (sig === null) session.classes.add(k); // a class: not a function a caller can call
      else found[k] = sig;
    } catch {
      // an export still in its temporal dead zone
    }
  }
  return found;
}

async function onWelcome(msg: Msg): Promise<void> {
  session.pluginId = requireString(msg.plugin_id, "welcome.plugin_id");
  const module = msg.module;
  if (module != null && typeof module !== "string") protocolError("welcome.module must be a string or nil");
  applyLimits(msg.limits);
  Object.freeze(limits); // a plugin that imports wire.ts (see the header) must not lift a cap
  if (limits.max_inflight > 1) await trackConcurrentCalls();
  if (limits.egress_proxy === 1) useEgressProxy();
  session.config = msg.config ?? null;
  if (module == null) {  // an execute worker: each execution gets a context of its own
    await (await import("./execute.ts")).startExecuting(msg.tools);
  }
  startHeartbeatWatch();
  phase = "importing";

  let metadata: unknown = null;
  let exports: string[] = [];
  let signatures: Record<string, Signature> = {};
  let error: ErrorInfo | undefined;
  if (typeof module === "string") {
    try {
      const plugin = await import(toFileUrl(module));
      session.plugin = plugin;
      signatures = exportedFunctions(plugin, module);
      exports = Object.keys(signatures);
      metadata = plugin.metadata ?? null;
      // An async factory's promise (`export const metadata = loadMetadata()`): its value. A
      // rejection fails the load like a throw at the top level; a hang meets the handshake's deadline.
      if (metadata !== null && typeof (metadata as { then?: unknown }).then === "function") metadata = await metadata;
    } catch (e) {
      session.plugin = null;
      error = errorInfo(importError(e));
    }
  }
  if (error) {
    sendErrorFrame({ type: "ready", metadata: null, exports: [] }, error);
  } else {
    sendReady(metadata, exports, signatures);
  }
  phase = "ready";
  for (const m of early.splice(0)) handle(m);
}

function sendReady(metadata: unknown, exports: string[], signatures: Record<string, Signature>): void {
  let size: number;
  try {
    size = send({ type: "ready", metadata, exports, signatures });
  } catch {
    size = send({ type: "ready", metadata: jsonClone(metadata), exports, signatures });
  }
  if (size < 0) {
    sendErrorFrame({ type: "ready", metadata: null, exports: [] }, {
      name: "PayloadTooLarge",
      error_type: ErrorTypes.SANDBOX_LIMIT,
      message: `metadata exceeds the ${limits.max_frame}-byte frame maximum`,
    });
  }
}

/** The socket path and one-time token the host writes on stdin (then closes it). */
async function readBootstrap(): Promise<[string, string]> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const buf = new Uint8Array(4096);
    const n = await Deno.stdin.read(buf);
    if (n === null) break;
    chunks.push(buf.subarray(0, n));
    size += n;
    if (size > 64 * 1024) break;
  }
  const all = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const [path, token] = new TextDecoder().decode(all).split("\n");
  return [path ?? "", token ?? ""];
}

async function main(): Promise<void> {
  // Deno's internals (Deno[Deno.internal].core) reach this process's own resources, the host's
  // socket included: plugin code gets no handle on them. (The host enforces every cap on what
  // arrives anyway: assume code can still find a way to write frames.)
  const internal = (Deno as unknown as { internal: symbol }).internal;
  delete (Deno as unknown as Record<symbol, unknown>)[internal];
  const [path, token] = await readBootstrap();
  if (!path || !token) exit(2, "usage: worker.ts, with \"<socket-path>\\n<token>\\n\" on stdin");
  captureConsole();
  // Registered first: no listener code adds later (an execution that reached the main realm)
  // ever sees another call's rejections or errors.
  globalThis.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    e.stopImmediatePropagation();
    onEscaped(e.reason, e.promise);
  });
  globalThis.addEventListener("error", (e) => {
    e.preventDefault();
    e.stopImmediatePropagation();
    onEscaped(e.error ?? e.message);
  });
  try {
    await connect(path);
  } catch (e) {
    exit(1, `cannot connect to ${path}: ${errorInfo(e).message}`);
  }
  startParentWatch();
  startHeartbeatWatch();
  send({ type: "hello", cookie: COOKIE, protocol: PROTOCOL, token, pid: Deno.pid, runtime: `deno ${Deno.version.deno}` });
  await readLoop(handle, (e) => errorInfo(e).message);
}

main().catch((e) => exit(1, `internal error: ${errorInfo(e).stack}`));