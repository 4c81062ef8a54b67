/**
 * The Plugin Host worker: one Deno process serving one plugin over a Unix socket.
 *
 *   deno run [flags] worker_runtime/worker.ts     (stdin: "<socket-path>\n<token>\n")
 *
 * The socket path and the one-time token come on stdin, not as arguments: Deno.args needs no
 * permission, so plugin code could read them there.
 * It speaks the protocol of docs/protocol.md (message and field names as in host/protocol.py):
 * hello/welcome/ready, then call/execute answered by result/error, with log, host_call/host_reply,
 * deliver (channel events), ping/pong, cancel and shutdown. It needs no permission beyond the socket and the plugin's
 * directory; everything the plugin may do is decided by the flags the host starts it with.
 */

import { fetchJson } from "./http.ts";
import { DYNAMIC_IMPORT, type Execution, harden, loadVm, nextExecution, NO_IMPORTS, ownerOf, prepareSpare } from "./isolate.ts";
import { Decoder, Encoder, EncodingTooLarge } from "./msgpack.ts";
import {
  type ErrorInfo,
  type FromWorker,
  type Id,
  type Limits,
  type Log,
  MAGIC_COOKIE as COOKIE,
  PROTOCOL_VERSION as PROTOCOL,
} from "./protocol.ts";

const EXIT_OK = 0;
const EXIT_REJECTED = 3;
const EXIT_HEARTBEAT = 4;
const EXIT_PROTOCOL = 5;

const PPID_POLL_MS = 500;
const READ_CHUNK = 64 * 1024;
/** Buffers bigger than this are not kept for reuse once a large frame has gone through. */
const KEEP_BUFFER = 1024 * 1024;
/** Caps on an error's name, message and stack, so that an error report always fits in a frame
 * (the host enforces the same on what arrives: host/worker.py MAX_ERROR_*). */
const MAX_ERROR_NAME = 256;
const MAX_ERROR_MESSAGE = 64 * 1024;
const MAX_ERROR_STACK = 64 * 1024;

const limits: Limits = {
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
};

/** A message as it is read off the wire (checked field by field) or built to be sent. */
type Msg = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Globals for plugins (defined before any plugin code is imported)

const ErrorTypes = Object.freeze({
  NETWORK_ERROR: "NETWORK_ERROR",
  AUTH_ERROR: "AUTH_ERROR",
  NOT_CONFIGURED: "NOT_CONFIGURED", // a key or URL the operator has not set yet: not a failure of the station
  RATE_LIMIT: "RATE_LIMIT",
  TIMEOUT: "TIMEOUT",
  PARSE_ERROR: "PARSE_ERROR",
  PROVIDER_ERROR: "PROVIDER_ERROR",
  SANDBOX_LIMIT: "SANDBOX_LIMIT",
  UNKNOWN: "UNKNOWN",
});

/** The error a plugin throws to report a classified failure (see plugin.d.ts). */
class PluginError extends Error {
  errorType: string;
  details: unknown;

  constructor(errorType: string, message?: string, details?: unknown) {
    // `new PluginError("message")` is a common slip: keep the message, type UNKNOWN.
    if (message === undefined && !Object.hasOwn(ErrorTypes, errorType)) {
      message = errorType;
      errorType = ErrorTypes.UNKNOWN;
    }
    super(message ?? "");
    this.name = "PluginError";
    this.errorType = errorType ?? ErrorTypes.UNKNOWN;
    this.details = details;
  }
}

function defineGlobal(name: string, value: unknown): void {
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}

defineGlobal("PluginError", PluginError);
defineGlobal("ErrorTypes", ErrorTypes);

/** A sandbox cap reached (Workers, egress size); the host raises ResourceLimitExceeded. */
class ResourceLimitExceeded extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ResourceLimitExceeded";
  }
}

// Web Workers: each is a V8 isolate with a heap of its own (the heap cap is per isolate), so a
// plugin may keep at most limits.max_web_workers alive, and a Worker may start none: every
// Worker first runs NO_NESTED, which replaces its Worker constructor before the plugin's code.
//
// The native constructor must not be reachable from plugin code: CappedWorker is a plain
// function (a class extending Worker would have it as its prototype), and the prototype's
// `constructor` names CappedWorker. (RLIMIT_DATA, set by the host, bounds Workers anyway:
// each isolate reserves its code range against it.)
const NativeWorker = globalThis.Worker;
const NativeTerminate = NativeWorker.prototype.terminate;
const NO_NESTED = `Object.defineProperty(globalThis, "Worker", { configurable: false, writable: false,
  value: class Worker { constructor() { const e = new Error("a Worker may not start Workers");
    e.name = "ResourceLimitExceeded"; throw e; } } });\n`;
let liveWebWorkers = 0;
const aliveWorkers = new WeakSet<object>();

function CappedWorker(this: unknown, specifier: string | URL, options?: WorkerOptions): Worker {
  if (!new.target) throw new TypeError("Worker must be called with new");
  if (liveWebWorkers >= limits.max_web_workers) {
    throw new ResourceLimitExceeded(
      `a plugin may run at most ${limits.max_web_workers} Workers at once (limits.max_web_workers)`,
    );
  }
  const url = new URL(String(specifier), globalThis.location?.href).href;
  const boot = `${NO_NESTED}await import(${JSON.stringify(url)});\n`;
  const w = Reflect.construct(NativeWorker, [`data:application/javascript;base64,${btoa(boot)}`, options], new.target);
  liveWebWorkers++;
  aliveWorkers.add(w);
  return w;
}

CappedWorker.prototype = Object.create(NativeWorker.prototype, {
  constructor: { value: CappedWorker, writable: true, configurable: true },
  terminate: {
    value: function terminate(this: Worker): void {
      if (aliveWorkers.delete(this)) liveWebWorkers--;
      NativeTerminate.call(this);
    },
    writable: true,
    configurable: true,
  },
});
Object.defineProperty(NativeWorker.prototype, "constructor", { value: CappedWorker, configurable: false, writable: false });

defineGlobal("Worker", CappedWorker);

// With the host's egress proxy on, its verdicts become typed errors: "refused" (a private
// address, a host not granted) is a sandbox refusal, "too-large" a resource cap.
const nativeFetch = globalThis.fetch;

async function egressFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const r = await nativeFetch(input, init);
  const verdict = r.headers.get("x-plugin-host-egress");
  if (verdict === "refused" || verdict === "too-large") {
    const why = cap(await r.text().catch(() => ""), 1000);
    if (verdict === "refused") throw new Deno.errors.NotCapable(`egress proxy refused the request: ${why}`);
    throw new ResourceLimitExceeded(`egress proxy: ${why}`);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Process-level state

let conn: Deno.UnixConn;
let phase: "hello" | "importing" | "ready" = "hello";
let pluginId = "";
let config: unknown = null;
// deno-lint-ignore no-explicit-any
let plugin: Record<string, any> | null = null;
/** Frames that arrived while the plugin was still being imported. */
const early: Msg[] = [];
let lastReceived = Date.now();

const stderr = (text: string): void => {
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(`worker: ${text}\n`));
  } catch {
    // stderr closed: nothing to report to
  }
};

function exit(code: number, why?: string): never {
  if (why) stderr(why);
  Deno.exit(code);
}

function protocolError(why: string): never {
  exit(EXIT_PROTOCOL, `protocol error: ${why}`);
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
function send(msg: FromWorker, max: number = limits.max_frame): number {
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
// Error normalisation

const DATA_URL_PREFIX = "data:application/javascript;base64,";
// V8 shortens long URLs in stack frames to "<head>......<tail>": take both halves.
const DATA_URL_RE = /data:application\/javascript;base64,[A-Za-z0-9+/=]*(?:\.{2,}[A-Za-z0-9+/=]*)?/g;

/** Replaces execute's data: URLs (the whole code, base64) in messages and stacks by `<execute>`. */
function scrub(s: string): string {
  return s.includes(DATA_URL_PREFIX) ? s.replace(DATA_URL_RE, "<execute>") : s;
}

/**
 * Deno's module loader reports a parse error as a TypeError whose message starts with
 * "SyntaxError: "; report it as the SyntaxError it is.
 */
function importError(e: unknown): unknown {
  if (e instanceof Error && e.name === "TypeError" && e.message.startsWith("SyntaxError: ")) {
    const err = new SyntaxError(e.message.slice("SyntaxError: ".length));
    err.stack = `SyntaxError: ${err.message}`;
    return err;
  }
  return e;
}

function cap(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max)}... (${s.length - max} more characters)` : s;
}

/** Describes any thrown value; never throws itself. */
const IMPORT_REFUSAL = /^Requires \w+ access to |but --no-(remote|npm) is specified/;

/** An Error of any realm (an execution's context has Error constructors of its own). */
function isError(e: unknown): e is Error {
  return e instanceof Error || (e !== null && typeof e === "object" && Object.prototype.toString.call(e) === "[object Error]");
}

function errorInfo(e: unknown): ErrorInfo {
  try {
    if (isError(e)) {
      let name = typeof e.name === "string" && e.name ? e.name : "Error";
      if (name === "Error") {
        const ctor = (e as { constructor?: { name?: unknown } }).constructor?.name;
        if (typeof ctor === "string" && ctor && ctor !== "Error") name = ctor;
      }
      let { message, refused } = withCauses(e);
      if (message === DYNAMIC_IMPORT) message = `${NO_IMPORTS} (import())`;
      // fetch reports a sandbox refusal at connect time as TypeError("fetch failed") whose
      // cause says "Requires net access to ...", and a refused import is a TypeError too
      // ("Requires read access to", "--no-remote is specified"): name them as Deno.connect's
      // refusal is named.
      if (refused || (name === "TypeError" && IMPORT_REFUSAL.test(message))) name = "NotCapable";
      const info: ErrorInfo = { name: cap(name, MAX_ERROR_NAME), message: cap(scrub(message), MAX_ERROR_MESSAGE) };
      if (typeof e.stack === "string") info.stack = cap(scrub(e.stack), MAX_ERROR_STACK);
      const { errorType, details } = e as { errorType?: unknown; details?: unknown };
      if (typeof errorType === "string") info.error_type = cap(errorType, MAX_ERROR_NAME);
      if ((e instanceof PluginError || info.error_type) && details !== undefined) info.details = details;
      return info;
    }
    let message: string;
    if (typeof e === "string") {
      message = e;
    } else if (e !== null && typeof e === "object" && isPlain(e)) {
      message = safeJson(e) ?? safeString(e);
    } else {
      message = safeString(e);
    }
    const info: ErrorInfo = { name: "Exception", message: cap(message, MAX_ERROR_MESSAGE) };
    if (e !== undefined) info.details = e;
    return info;
  } catch {
    return { name: "Error", message: "a thrown value that could not be described" };
  }
}

/** The message, then its causes': fetch's "fetch failed" says why only in its cause (e.g. a
 * connection to a denied address: "client error (Connect): Requires net access to ...").
 * ``refused``: a cause is the sandbox refusing access. */
function withCauses(e: Error): { message: string; refused: boolean } {
  let message = String(e.message ?? "");
  let refused = false;
  let cause: unknown = e.cause;
  for (let depth = 0; depth < 3 && cause !== undefined && cause !== null; depth++) {
    const text = isError(cause) ? String(cause.message ?? "") : safeString(cause);
    if (text && !message.includes(text)) message += `: ${text}`;
    refused ||= cause instanceof Deno.errors.NotCapable || /\bRequires \w+ access to /.test(text);
    cause = isError(cause) ? cause.cause : undefined;
  }
  return { message, refused };
}

/** A plain object of any realm. */
function isPlain(o: object): boolean {
  const proto = Object.getPrototypeOf(o);
  return proto === Object.prototype || proto === null ||
    (Object.getPrototypeOf(proto) === null && Object.prototype.toString.call(o) === "[object Object]");
}

function safeJson(v: unknown): string | undefined {
  try {
    return JSON.stringify(v);
  } catch {
    return undefined;
  }
}

function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    try {
      return Object.prototype.toString.call(v);
    } catch {
      return "[unprintable]";
    }
  }
}

function jsonClone(v: unknown): unknown {
  const s = safeJson(v);
  return s === undefined ? null : JSON.parse(s);
}

/** Sends a frame carrying `info` at `msg[key]`, dropping parts of it until it is encodable. */
function sendErrorFrame(msg: Msg, info: ErrorInfo): void {
  const attempts: Array<() => ErrorInfo> = [
    () => info,
    () => ({ ...info, details: jsonClone(info.details) }),
    () => ({ name: info.name, message: info.message, stack: info.stack, error_type: info.error_type }),
    () => ({ name: info.name, message: cap(info.message, 1024), error_type: info.error_type }),
    () => ({ name: cap(info.name, 64), message: cap(info.message, 1024) }),
  ];
  for (const attempt of attempts) {
    try {
      msg.error = attempt();
      if (send(msg as unknown as FromWorker) >= 0) return; // msg.error was just set
    } catch {
      // try the next, smaller form
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Calls

interface CallState {
  id: Id;
  controller: AbortController;
  settled: boolean;
  logs: LogBudget;
  cleanup?: () => void;
  /** Events this (execute) call subscribed to; its handlers go when it settles. */
  events?: Set<string>;
  /** The tools this (execute) call asked for. */
  tools?: Set<string>;
  /** Crypto operations this (execute) call has made. */
  cryptoOps?: number;
  /** This execution's own context (globals, timers), disposed when it settles. */
  execution?: Execution;
}

const calls = new Map<Id, CallState>();

/** Which call is running now, for tagging console output. With one call in flight at a time
 * (the host's default) that call is the answer. Only when the host allows several does the
 * worker load node:async_hooks (it costs ~4 MB and several ms of startup) to follow each
 * call through its awaits. */
interface CallTracker {
  run<A extends unknown[], R>(state: CallState, fn: (...args: A) => R, ...args: A): R;
  getStore(): CallState | undefined;
}

function onlyCall(): CallState | undefined {
  return calls.size === 1 ? calls.values().next().value : undefined;
}

let tracker: CallTracker = {
  run: (_state, fn, ...args) => fn(...args),
  getStore: onlyCall,
};

async function trackConcurrentCalls(): Promise<void> {
  const { AsyncLocalStorage } = await import("node:async_hooks");
  const als = new AsyncLocalStorage<CallState>();
  tracker = {
    run: (state, fn, ...args) => als.run(state, fn, ...args),
    getStore: () => als.getStore() ?? onlyCall(),
  };
}

function newCall(id: Id): CallState {
  const state: CallState = {
    id,
    controller: new AbortController(),
    settled: false,
    logs: new LogBudget(),
  };
  calls.set(id, state);
  return state;
}

function settle(state: CallState): boolean {
  if (state.settled) return false;
  state.settled = true;
  calls.delete(state.id);
  state.execution?.dispose();
  if (state.events) dropSubscriptions(state);
  if (state.cleanup) {
    try {
      state.cleanup();
    } catch {
      // cleanup is ours and does not throw; be safe anyway
    }
  }
  return true;
}

function succeed(state: CallState, value: unknown): void {
  if (!settle(state)) return;
  const max = Math.min(limits.max_result_bytes, limits.max_frame);
  let size: number;
  try {
    size = send({ type: "result", id: state.id, value }, max);
  } catch (e) {
    sendErrorFrame({ type: "error", id: state.id }, errorInfo(e));
    return;
  }
  if (size < 0) {
    sendErrorFrame({ type: "error", id: state.id }, {
      name: "PayloadTooLarge",
      error_type: ErrorTypes.SANDBOX_LIMIT,
      message: `result exceeds the ${max}-byte limit (limits.max_result_bytes)`,
    });
  }
}

function fail(state: CallState, e: unknown): void {
  failWith(state, errorInfo(e));
}

function failWith(state: CallState, info: ErrorInfo): void {
  if (!settle(state)) return;
  sendErrorFrame({ type: "error", id: state.id }, info);
}

/** Runs `thunk` as the body of call `state` and answers with its (awaited) outcome. */
function invoke(state: CallState, thunk: () => unknown): void {
  let r: unknown;
  try {
    r = thunk();
  } catch (e) {
    fail(state, e);
    return;
  }
  answerWith(state, r);
}

function answerWith(state: CallState, r: unknown): void {
  let then: unknown;
  if (r !== null && (typeof r === "object" || typeof r === "function")) {
    try {
      then = (r as { then?: unknown }).then;
    } catch (e) {
      fail(state, e);
      return;
    }
  }
  if (typeof then !== "function") {
    succeed(state, r);
    return;
  }
  new Promise((resolve, reject) => (then as (a: unknown, b: unknown) => void).call(r, resolve, reject))
    .then((v) => succeed(state, v), (e) => fail(state, e));
}

function onCall(msg: Msg): void {
  const id = requireId(msg.id, "call.id");
  const fnName = requireString(msg.fn, "call.fn");
  const args = optionalArray(msg.args, "call.args");
  const timeoutMs = optionalNumber(msg.timeout_ms, "call.timeout_ms");
  if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
  const state = newCall(id);
  const fn = plugin?.[fnName];
  if (typeof fn !== "function") {
    failWith(state, { name: "FunctionNotFound", message: `no exported function "${fnName}"` });
    return;
  }
  const context = makeContext(state, timeoutMs, undefined);
  args.push(context);
  tracker.run(state, invoke, state, () => fn(...args));
}

function onExecute(msg: Msg): void {
  const id = requireId(msg.id, "execute.id");
  const code = requireString(msg.code, "execute.code");
  const entry = msg.entry == null ? "default" : requireString(msg.entry, "execute.entry");
  const timeoutMs = optionalNumber(msg.timeout_ms, "execute.timeout_ms");
  const tools = optionalArray(msg.tools, "execute.tools");
  if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
  const state = newCall(id);
  state.tools = new Set(tools as string[]);
  // Code run by execute is gone when the call settles, and so are its channel handlers. Its
  // context has no cache or storage (executions share nothing), and a channel only with the
  // tool; the host refuses these host calls from execute code all the same.
  const { cache: _cache, storage: _storage, channel: _channel, ...context } = makeContext(state, timeoutMs, state);
  if (state.tools.has("channel")) (context as Record<string, unknown>).channel = _channel;
  // Its own context: its own globals and intrinsics, console, timers and tools (isolate.ts).
  // crypto and db are bindings for every execution, undefined unless it asked for the tool.
  const globals: Record<string, unknown> = { console: makeConsole(state), crypto: undefined, db: undefined };
  if (state.tools.has("crypto")) globals.crypto = makeCryptoTool(cryptoSettings, state);
  if (state.tools.has("db")) globals.db = makeDbTool(state);
  if (state.tools.has("channel")) globals.channel = _channel;
  try {
    state.execution = nextExecution().claim(state, globals, (e) => fail(state, e));
  } catch (e) {
    fail(state, e);
    return;
  }
  const execution = state.execution;
  if (limits.harden === 1) prepareSpare();  // the next execution's context, made while idle
  tracker.run(state, invoke, state, async () => {
    let fn;
    try {
      fn = await execution.load(code, entry);
    } catch (e) {
      throw importError(e);
    }
    if (typeof fn !== "function") {
      const err = new Error(`Entry "${entry}" is not a function`);
      err.name = "EntryError";
      throw err;
    }
    return await fn(msg.input === undefined ? undefined : execution.adopt(msg.input), context);
  });
}

function onCancel(msg: Msg): void {
  const id = requireId(msg.id, "cancel.id");
  const reason = msg.reason == null ? "cancelled" : requireString(msg.reason, "cancel.reason");
  const state = calls.get(id);
  if (state && !state.controller.signal.aborted) {
    state.controller.abort(new DOMException(reason, "AbortError"));
  }
}

// ---------------------------------------------------------------------------------------------
// The crypto tool (as in Isolate): in an execute worker, the global `crypto` is only there for code
// that asked for the tool, and then only the allowed methods, a bounded number of times.

interface CryptoToolSettings {
  subtle: boolean;
  methods: string[];
  max_bytes: number;
  max_ops: number;
}

const realCrypto = globalThis.crypto;
let cryptoSettings: CryptoToolSettings = { subtle: true, methods: [], max_bytes: 65536, max_ops: 1000 };

/** An execute worker's tool settings, from the welcome. */
function readToolSettings(tools: Record<string, unknown>): void {
  const s = (tools.crypto ?? {}) as Record<string, unknown>;
  cryptoSettings = {
    subtle: s.subtle !== false,
    methods: Array.isArray(s.methods) ? s.methods.filter((m) => typeof m === "string") : [],
    max_bytes: typeof s.max_bytes === "number" ? s.max_bytes : 65536,
    max_ops: typeof s.max_ops === "number" ? s.max_ops : 1000,
  };
}

/** The crypto tool of one execution: only the allowed methods, each use counted against it;
 * dead once it settled. */
function makeCryptoTool(settings: CryptoToolSettings, state: CallState): unknown {
  const count = (what: string) => {
    if (state.settled) throw new TypeError(`crypto.${what}: the execution that owned this tool has ended`);
    state.cryptoOps = (state.cryptoOps ?? 0) + 1;
    if (state.cryptoOps > settings.max_ops) {
      throw new ResourceLimitExceeded(`crypto: more than ${settings.max_ops} operations (${what})`);
    }
  };
  const tool: Record<string, unknown> = {};
  if (settings.methods.includes("getRandomValues")) {
    tool.getRandomValues = <T extends ArrayBufferView | null>(array: T): T => {
      count("getRandomValues");
      if (array && array.byteLength > settings.max_bytes) {
        throw new ResourceLimitExceeded(
          `crypto.getRandomValues: ${array.byteLength} bytes is over the ${settings.max_bytes}-byte limit`,
        );
      }
      return realCrypto.getRandomValues(array as never) as T;
    };
  }
  if (settings.methods.includes("randomUUID")) {
    tool.randomUUID = () => {
      count("randomUUID");
      return realCrypto.randomUUID();
    };
  }
  if (settings.subtle) {
    const subtle = realCrypto.subtle;
    tool.subtle = new Proxy(subtle, {
      get(target, key) {
        const value = Reflect.get(target, key);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          count(`subtle.${String(key)}`);
          return Reflect.apply(value, target, args);
        };
      },
      set: () => false, // code may not change what other executions use
      defineProperty: () => false,
      deleteProperty: () => false,
    });
  }
  return Object.freeze(tool);
}

// ---------------------------------------------------------------------------------------------
// The db tool (the Isolate engine's db examples): `await db.users.select().limit(10)`,
// `await db.users.findMany({ where: { active: true }, limit: 10 })`. Read-only: the worker sends
// the host a structured query and the host, which alone can open the database, builds the SQL.

type DbQuery = {
  table: string;
  columns?: string[];
  where?: Record<string, unknown>;
  order_by?: [string, string][];
  limit?: number;
  offset?: number;
};

function runDbQuery(state: CallState, query: DbQuery): Promise<unknown> {
  if (state.settled) return Promise.reject(new TypeError(`db.${query.table}: the execution that owned this tool has ended`));
  return hostCall("db.select", [query], state.id);
}

/** A query being built; awaiting it runs it. */
class DbSelect implements PromiseLike<unknown> {
  #query: DbQuery;
  #state: CallState;
  constructor(state: CallState, query: DbQuery) {
    this.#state = state;
    this.#query = query;
  }
  where(conditions: Record<string, unknown>): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, where: { ...this.#query.where, ...conditions } });
  }
  orderBy(column: string, direction: "asc" | "desc" = "asc"): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, order_by: [...(this.#query.order_by ?? []), [column, direction]] });
  }
  limit(n: number): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, limit: n });
  }
  offset(n: number): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, offset: n });
  }
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return runDbQuery(this.#state, this.#query).then(onFulfilled, onRejected);
  }
}

interface FindOptions {
  where?: Record<string, unknown>;
  columns?: string[];
  orderBy?: Record<string, "asc" | "desc">;
  limit?: number;
  offset?: number;
}

function tableApi(state: CallState, table: string) {
  const find = (o: FindOptions = {}): DbQuery => ({
    table,
    columns: o.columns,
    where: o.where,
    order_by: o.orderBy ? Object.entries(o.orderBy) : undefined,
    limit: o.limit,
    offset: o.offset,
  });
  return Object.freeze({
    select: (...columns: (string | string[])[]) =>
      new DbSelect(state, { table, columns: columns.length ? columns.flat() : undefined }),
    findMany: (o?: FindOptions) => runDbQuery(state, find(o)),
    findFirst: async (o?: FindOptions) => ((await runDbQuery(state, { ...find(o), limit: 1 })) as unknown[])[0],
  });
}

/** The db tool of one execution. */
function makeDbTool(state: CallState): unknown {
  return new Proxy(Object.freeze({}), {
    get: (_target, key) => (typeof key === "string" && key !== "then" ? tableApi(state, key) : undefined),
  });
}


// ---------------------------------------------------------------------------------------------
// The context object and host calls

let hostSeq = 0;
const hostPending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

/** Marks a promise as handled, so a caller that never awaits it does not fail its call. */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

function hostCall(op: string, args: unknown[], call: Id | undefined): Promise<unknown> {
  if (hostPending.size >= limits.max_host_calls) {
    return handled(Promise.reject(new ResourceLimitExceeded(
      `${op}: at most ${limits.max_host_calls} host calls may be in flight (limits.max_host_calls)`,
    )));
  }
  const id = ++hostSeq;
  const p = handled(new Promise((resolve, reject) => hostPending.set(id, { resolve, reject })));
  let size: number;
  try {
    size = send({ type: "host_call", id, op, args, call });
  } catch (e) {
    hostPending.delete(id);
    return handled(Promise.reject(e));
  }
  if (size < 0) {
    hostPending.delete(id);
    const err = new Error(`${op} arguments exceed the ${limits.max_frame}-byte frame maximum`);
    err.name = "PayloadTooLarge";
    return handled(Promise.reject(err));
  }
  return p;
}

function onHostReply(msg: Msg): void {
  const id = requireId(msg.id, "host_reply.id");
  const pending = hostPending.get(Number(id));
  if (!pending) return;
  hostPending.delete(Number(id));
  const info = msg.error;
  if (info == null) {
    pending.resolve(msg.value);
    return;
  }
  if (typeof info !== "object") protocolError("host_reply.error must be a map");
  const { name, message, error_type, details } = info as Record<string, unknown>;
  const err = new Error(typeof message === "string" ? message : "host call failed") as Error & {
    errorType?: string;
    details?: unknown;
  };
  err.name = typeof name === "string" ? name : "Error";
  if (typeof error_type === "string") err.errorType = error_type;
  if (details !== undefined && details !== null) err.details = details;
  pending.reject(err);
}

type Handler = (data: unknown) => unknown;

interface Channel {
  emit(event: string, data?: unknown): Promise<unknown>;
  on(event: string, fn: Handler): Promise<unknown>;
  off(event: string, fn: Handler): Promise<unknown>;
}

/** A `channel.on` handler. `owner` is the execute call it belongs to (dropped when that call
 * settles); a plugin's handlers have none and last as long as the worker. */
interface Subscription {
  fn: Handler;
  owner: CallState | undefined;
}

/** This worker's channel handlers by event. The host knows which events have any: it sends
 * `deliver` for those, emitted by other workers. */
const subscriptions = new Map<string, Subscription[]>();

function channelArgsError(what: string): Promise<unknown> {
  return handled(Promise.reject(new TypeError(what)));
}

function makeChannel(call: Id, owner: CallState | undefined): Channel {
  return {
    emit: (event, data) => hostCall("channel.emit", [event, data], call),
    on(event, fn) {
      if (typeof event !== "string") return channelArgsError("channel.on: the event name must be a string");
      if (typeof fn !== "function") return channelArgsError("channel.on: the handler must be a function");
      if (owner?.settled) return channelArgsError("channel.on: the execution that owned this channel has ended");
      let subs = subscriptions.get(event);
      if (!subs) subscriptions.set(event, subs = []);
      if (!subs.some((s) => s.fn === fn && s.owner === owner)) subs.push({ fn, owner });
      if (owner) (owner.events ??= new Set()).add(event);
      return hostCall("channel.on", [event], call);
    },
    off(event, fn) {
      if (typeof event !== "string") return channelArgsError("channel.off: the event name must be a string");
      const subs = subscriptions.get(event);
      if (!subs) return Promise.resolve(null);
      const rest = subs.filter((s) => !(s.fn === fn && s.owner === owner));
      if (rest.length) {
        subscriptions.set(event, rest);
        return Promise.resolve(null); // other handlers still listen
      }
      subscriptions.delete(event);
      return hostCall("channel.off", [event], call);
    },
  };
}

function dropSubscriptions(owner: CallState): void {
  for (const event of owner.events ?? []) {
    const subs = subscriptions.get(event);
    if (!subs) continue;
    const rest = subs.filter((s) => s.owner !== owner);
    if (rest.length) {
      subscriptions.set(event, rest);
    } else {
      subscriptions.delete(event);
      hostCall("channel.off", [event], undefined);
    }
  }
  owner.events = undefined;
}

/** `deliver`: run every handler of the event. A handler that throws (or rejects) is logged as
 * an `exception` entry; it never fails a call or stops the worker. */
function onDeliver(msg: Msg): void {
  const event = requireString(msg.event, "deliver.event");
  const subs = subscriptions.get(event);
  if (!subs) return;
  for (const sub of subs.slice()) if (!sub.owner?.settled) runHandler(sub, msg.data);
}

function runHandler(sub: Subscription, data: unknown): void {
  const report = (e: unknown): void => {
    const info = errorInfo(e);
    emitLog("exception", info.message, sub.owner, info);
  };
  let r: unknown;
  try {
    r = sub.owner ? tracker.run(sub.owner, sub.fn, data) : sub.fn(data);
  } catch (e) {
    report(e);
    return;
  }
  if (r !== null && (typeof r === "object" || typeof r === "function")) {
    Promise.resolve(r).then(undefined, report);
  }
}

const LEVELS = new Set(["log", "info", "warn", "error", "debug"]);

function makeContext(state: CallState, timeoutMs: number | undefined, owner: CallState | undefined) {
  const call = state.id;
  const channel = makeChannel(call, owner);
  return {
    callId: call,
    pluginId,
    config,
    timeout: timeoutMs,
    signal: state.controller.signal,
    log(level: string, ...args: unknown[]): void {
      emitLog(LEVELS.has(level) ? level : "log", formatArgs(args), state);
    },
    cache: {
      get: (key: string) => hostCall("cache.get", [key], call),
      set: (key: string, value: unknown, ttl?: number) =>
        hostCall("cache.set", ttl === undefined ? [key, value] : [key, value, ttl], call),
      delete: (key: string) => hostCall("cache.delete", [key], call),
    },
    storage: {
      get: (key: string) => hostCall("storage.get", [key], call),
      set: (key: string, value: unknown) => hostCall("storage.set", [key, value], call),
      delete: (key: string) => hostCall("storage.delete", [key], call),
      keys: () => hostCall("storage.keys", [], call),
    },
    channel,
    fetchJson: (url: string | URL, init?: RequestInit) =>
      fetchJson((t, m, d) => new PluginError(t, m, d), state.controller.signal, url, init),
  };
}

// ---------------------------------------------------------------------------------------------
// Logs

function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) n += c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 1 : 2;
  }
  return n;
}

/** max_log_entries entries and max_log_bytes bytes, then one marker, then nothing. */
class LogBudget {
  entries = 0;
  bytes = 0;
  truncated = false;

  spend(bytes: number): "ok" | "marker" | "drop" {
    if (this.truncated) return "drop";
    if (this.entries >= limits.max_log_entries || this.bytes + bytes > limits.max_log_bytes) {
      this.truncated = true;
      return "marker";
    }
    this.entries++;
    this.bytes += bytes;
    return "ok";
  }
}

// Each call has a budget of its own; logs outside any call (timers, handlers, module top
// level) share one that starts afresh every second.
let loose = new LogBudget();
let looseSince = 0;

function emitLog(level: string, message: string, state: CallState | undefined, extra?: ErrorInfo): void {
  const msg: Log = { type: "log", level, message, id: state?.id, ts: Date.now() };
  if (!state) {
    if (message.length > limits.max_log_bytes) message = msg.message = cap(message, limits.max_log_bytes);
    if ((msg.ts as number) - looseSince >= 1000) [loose, looseSince] = [new LogBudget(), msg.ts as number];
  }
  const verdict = (state?.logs ?? loose).spend(utf8Length(message));
  if (verdict === "drop") return;
  if (verdict === "marker") {
    msg.level = "warn";
    msg.message = state ? "log output truncated" : "log output truncated (outside a call: more than the per-second budget)";
    extra = undefined;
  }
  if (extra) {
    msg.name = extra.name;
    if (extra.stack !== undefined) msg.stack = extra.stack;
  }
  try {
    send(msg);
  } catch {
    // a log line is all strings; nothing to do if it somehow fails
  }
}

function formatValue(v: unknown): string {
  if (typeof v === "string") return v;
  try {
    if (isError(v)) return scrub(v.stack ?? `${v.name}: ${v.message}`);
  } catch {
    // a revoked proxy, say: fall through
  }
  return safeJson(v) ?? safeString(v);
}

function formatArgs(args: unknown[]): string {
  if (args.length === 1) return formatValue(args[0]);
  let s = "";
  for (let i = 0; i < args.length; i++) s += (i ? " " : "") + formatValue(args[i]);
  return s;
}

/** The console of one execution: its lines go to its logs while it runs, nowhere after. */
function makeConsole(state: CallState): Record<string, unknown> {
  const logger = (level: string) => (...args: unknown[]): void => {
    if (state.settled) return;
    try {
      emitLog(level, formatArgs(args), state);
    } catch {
      // console must never throw into plugin code
    }
  };
  const c: Record<string, unknown> = {};
  for (const level of LEVELS) c[level] = logger(level);
  c.trace = logger("debug");
  c.table = c.dir = c.dirxml = logger("log");
  c.assert = (cond: unknown, ...args: unknown[]): void => {
    if (!cond) logger("error")("Assertion failed" + (args.length ? ":" : ""), ...args);
  };
  return c;
}

function captureConsole(): void {
  const c = console as unknown as Record<string, unknown>;
  const logger = (level: string) => (...args: unknown[]): void => {
    try {
      emitLog(level, formatArgs(args), tracker.getStore());
    } catch {
      // console must never throw into plugin code
    }
  };
  for (const level of LEVELS) c[level] = logger(level);
  c.trace = logger("debug");
  c.table = logger("log");
  c.dir = logger("log");
  c.dirxml = logger("log");
  c.assert = (cond: unknown, ...args: unknown[]): void => {
    if (!cond) logger("error")("Assertion failed" + (args.length ? ":" : ""), ...args);
  };
}

/** An unhandled rejection or uncaught error: log it and fail the call it must belong to. One
 * from an execution's context is that execution's alone: it fails it while it runs, and is
 * dropped after (it must never reach the next execution). */
function onEscaped(reason: unknown, promise?: unknown): void {
  const owner = (ownerOf(promise) ?? ownerOf(reason)) as CallState | undefined;
  if (owner) {
    if (!owner.settled) fail(owner, reason);
    return;
  }
  const info = errorInfo(reason);
  let only: CallState | undefined;
  // A worker shared by callers never credits an error of unknown origin to the one execution
  // running: code an earlier execution left behind (a listener on a lent AbortSignal, a lent
  // fetch it never awaited) would fail the next caller's.
  if (calls.size === 1 && limits.harden !== 1) only = calls.values().next().value;
  if (only) {
    failWith(only, info); // the call's error carries it: no separate log entry
  } else {
    emitLog("exception", info.message, tracker.getStore(), info);
  }
}

// ---------------------------------------------------------------------------------------------
// Input: one read loop over a growable buffer

const decoder = new Decoder();

async function readLoop(): Promise<never> {
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
    lastReceived = Date.now();
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
        protocolError(`undecodable frame: ${errorInfo(e).message}`);
      }
      start += 4 + size;
      handle(msg);
    }
    // Answers produced synchronously go out now, before the next read is issued.
    if (flushQueued) flush();
  }
}

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
      if (phase === "hello") protocolError(`${msg.type} before welcome`);
      if (phase === "importing") {
        early.push(msg);
        return;
      }
      if (msg.type === "call") onCall(msg);
      else onExecute(msg);
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

function requireId(v: unknown, what: string): Id {
  if ((typeof v === "number" && Number.isInteger(v)) || typeof v === "bigint") return v;
  protocolError(`${what} must be an integer`);
}

function requireString(v: unknown, what: string): string {
  if (typeof v === "string") return v;
  protocolError(`${what} must be a string`);
}

function optionalNumber(v: unknown, what: string): number | undefined {
  if (v == null) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  protocolError(`${what} must be a number`);
}

function optionalArray(v: unknown, what: string): unknown[] {
  if (v == null) return [];
  if (Array.isArray(v)) return v;
  protocolError(`${what} must be an array`);
}

// ---------------------------------------------------------------------------------------------
// Handshake, heartbeat, parent watch

/**
 * Run `fn` every `ms` without keeping the process alive. Built on AbortSignal.timeout because
 * in Deno 2.9 the first setTimeout/setInterval of a process costs about 10 ms (its timer
 * module loads lazily), which would double a worker's time to ready.
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
    if (Date.now() - lastReceived > timeout) {
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

/** Pay the lazy timer-module cost while idle after ready, not in a plugin's first call. */
function warmTimers(): void {
  AbortSignal.timeout(20).addEventListener("abort", () => {
    if (calls.size === 0) clearTimeout(setTimeout(() => {}, 0));
  }, { once: true });
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
  return "file://" + encodeURI(abs).replace(/[?#]/g, (c) => (c === "?" ? "%3F" : "%23"));
}

function exportNames(mod: Record<string, unknown>): string[] {
  const names: string[] = [];
  for (const k of Object.keys(mod)) {
    try {
      if (typeof mod[k] === "function") names.push(k);
    } catch {
      // an export still in its temporal dead zone
    }
  }
  return names;
}

async function onWelcome(msg: Msg): Promise<void> {
  pluginId = requireString(msg.plugin_id, "welcome.plugin_id");
  const module = msg.module;
  if (module != null && typeof module !== "string") protocolError("welcome.module must be a string or nil");
  applyLimits(msg.limits);
  if (limits.max_inflight > 1) await trackConcurrentCalls();
  if (limits.egress_proxy === 1) defineGlobal("fetch", egressFetch);
  config = msg.config ?? null;
  if (module == null) {  // an execute worker: each execution gets a context of its own
    if (msg.tools != null) readToolSettings(msg.tools as Record<string, unknown>);
    await loadVm();
    if (limits.harden === 1) await harden();
  }
  startHeartbeatWatch();
  phase = "importing";

  let metadata: unknown = null;
  let exports: string[] = [];
  let error: ErrorInfo | undefined;
  if (typeof module === "string") {
    try {
      plugin = await import(toFileUrl(module));
      exports = exportNames(plugin!);
      metadata = plugin!.metadata ?? null;
    } catch (e) {
      plugin = null;
      error = errorInfo(importError(e));
    }
  }
  if (error) {
    sendErrorFrame({ type: "ready", metadata: null, exports: [] }, error);
  } else {
    sendReady(metadata, exports);
  }
  phase = "ready";
  for (const m of early.splice(0)) handle(m);
  warmTimers();
}

function sendReady(metadata: unknown, exports: string[]): void {
  let size: number;
  try {
    size = send({ type: "ready", metadata, exports });
  } catch {
    size = send({ type: "ready", metadata: jsonClone(metadata), exports });
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
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    exit(1, `cannot connect to ${path}: ${errorInfo(e).message}`);
  }
  startParentWatch();
  startHeartbeatWatch();
  send({ type: "hello", cookie: COOKIE, protocol: PROTOCOL, token, pid: Deno.pid, runtime: `deno ${Deno.version.deno}` });
  await readLoop();
}

main().catch((e) => exit(1, `internal error: ${errorInfo(e).stack}`));
