/**
 * Errors: the classes plugins see (PluginError, ErrorTypes, ResourceLimitExceeded) and how any
 * thrown value becomes the ErrorInfo of an error frame, scrubbed, capped and never throwing.
 */

import type { ErrorInfo, FromWorker } from "./protocol.ts";
import { type Msg, send } from "./wire.ts";

/** Caps on an error's name, message and stack, so that an error report always fits in a frame
 * (the host enforces the same on what arrives: host/worker.py MAX_ERROR_*). */
const MAX_ERROR_NAME = 256;
const MAX_ERROR_MESSAGE = 64 * 1024;
const MAX_ERROR_STACK = 64 * 1024;

/** What import() inside an execution's context throws (Deno's own message) and what it means
 * (isolate.ts). Here, not there: a plugin's worker never loads isolate.ts. */
export const DYNAMIC_IMPORT = "A dynamic import callback was not specified.";
export const NO_IMPORTS = "execute code cannot import modules; use the tools it is given";

export const ErrorTypes = Object.freeze({
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
export class PluginError extends Error {
  errorType: string;
  details: unknown;

  constructor(errorType: string, message?: string, details?: unknown) {
    // `new PluginError("message")` is a common slip: keep the message, type UNKNOWN.
    const slip = message === undefined && !Object.hasOwn(ErrorTypes, errorType);
    if (slip) {
      message = errorType;
      errorType = ErrorTypes.UNKNOWN;
    }
    super(message ?? "");
    this.name = "PluginError";
    this.errorType = errorType ?? ErrorTypes.UNKNOWN;
    this.details = details;
    if (!slip && !KNOWN_TYPES.has(errorType)) warnType(errorType, this.stack);
  }
}

const KNOWN_TYPES = new Set<unknown>(Object.values(ErrorTypes));

/** A PluginError made with a type the host does not classify: said in the plugin's log, where it
 * was made (a misspelt `ErrorTypes.X` is undefined, and the error would pass as UNKNOWN unseen). */
function warnType(given: unknown, stack: string | undefined): void {
  try {
    const at = (stack ?? "").split("\n").slice(1).find((l) => !l.includes("/worker_runtime/"))?.trim() ?? "";
    const what = given === undefined || given === null
      ? `errorType is ${given} (a misspelt ErrorTypes name?), taken as UNKNOWN`
      : `errorType ${JSON.stringify(safeString(given)).replaceAll('"', "'")} is not one of ErrorTypes ` +
        `(${[...KNOWN_TYPES].join(", ")}): the host classifies it as none of them`;
    console.warn(`new PluginError: ${what}${at ? ` (${at})` : ""}`);
  } catch {
    // a warning must never change what the plugin throws
  }
}

/** A sandbox cap reached (Workers, egress size); the host raises ResourceLimitExceeded. */
export class ResourceLimitExceeded extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ResourceLimitExceeded";
  }
}

const DATA_URL_PREFIX = "data:application/javascript;base64,";
// V8 shortens long URLs in stack frames to "<head>......<tail>": take both halves.
const DATA_URL_RE = /data:application\/javascript;base64,[A-Za-z0-9+/=]*(?:\.{2,}[A-Za-z0-9+/=]*)?/g;

// The runtime's own directory as its frames name it: where the host is installed.
const RUNTIME_DIR = new URL(".", import.meta.url).href;

/** Replaces execute's data: URLs (the whole code, base64) in messages and stacks by `<execute>`,
 * and the runtime's own file URLs by `runtime:/` (whoever may run code need not learn where the
 * host is installed). */
export function scrub(s: string): string {
  if (s.includes(DATA_URL_PREFIX)) s = s.replace(DATA_URL_RE, "<execute>");
  return s.includes(RUNTIME_DIR) ? s.replaceAll(RUNTIME_DIR, "runtime:/") : s;
}

/**
 * Deno's module loader reports a parse error as a TypeError whose message starts with
 * "SyntaxError: "; report it as the SyntaxError it is.
 */
export function importError(e: unknown): unknown {
  if (e instanceof Error && e.name === "TypeError" && e.message.startsWith("SyntaxError: ")) {
    const err = new SyntaxError(e.message.slice("SyntaxError: ".length));
    err.stack = `SyntaxError: ${err.message}`;
    return err;
  }
  return e;
}

export function cap(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max)}... (${s.length - max} more characters)` : s;
}

/** Describes any thrown value; never throws itself. */
const IMPORT_REFUSAL = /^Requires \w+ access to |but --no-(remote|npm) is specified/;

/** An Error of any realm (an execution's context has Error constructors of its own). */
export function isError(e: unknown): e is Error {
  return e instanceof Error || (e !== null && typeof e === "object" && Object.prototype.toString.call(e) === "[object Error]");
}

export function errorInfo(e: unknown): ErrorInfo {
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
      else if ((info.details = ownFields(e)) === undefined) delete info.details;
      return info;
    }
    const message = typeof e === "string" ? e : describeValue(e);
    const info: ErrorInfo = { name: "Exception", message: cap(message, MAX_ERROR_MESSAGE) };
    if (e !== undefined) info.details = e;
    return info;
  } catch {
    return { name: "Error", message: "a thrown value that could not be described" };
  }
}

/** What an error carries besides its message (helper-113: lost): its own fields of plain
 * values (Node's ``code``, an HTTP ``status``), and an AggregateError's inner errors. */
function ownFields(e: Error): Record<string, unknown> | undefined {
  try {
    const out: Record<string, unknown> = {};
    let n = 0;
    for (const key of Object.keys(e)) {
      if (n >= 32 || key === "stack" || key === "message" || key === "name" || key === "cause") continue;
      const v = (e as unknown as Record<string, unknown>)[key];
      if (v === null || typeof v === "number" || typeof v === "boolean") out[key] = v;
      else if (typeof v === "string") out[key] = cap(scrub(v), 1000);
      else continue;
      n++;
    }
    if (e instanceof AggregateError && Array.isArray(e.errors)) {
      out.errors = e.errors.slice(0, 10).map((x) => isError(x) ? `${x.name}: ${cap(scrub(String(x.message)), 1000)}` : safeString(x));
      n++;
    }
    return n ? out : undefined;
  } catch {
    return undefined; // a getter that throws: the error as it is
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

// Taken before any plugin code runs (an execution's hardened realm may not reach Deno).
const inspect = Deno.inspect;
const INSPECT = { colors: false, compact: true, breakLength: Infinity, depth: 6, iterableLimit: 100 } as const;
// Objects JSON.stringify shows as "{}" or without their kind (it reads own enumerable keys only).
const NOT_PLAIN_JSON = new Set(["[object Map]", "[object Set]", "[object WeakMap]", "[object WeakSet]",
  "[object RegExp]", "[object ArrayBuffer]", "[object Promise]"]);

/** JSON (the Isolate engine's logs: "Processing data: [1,2,3]") when it shows `v` as it is;
 * undefined when it would not (a cycle, a BigInt, a Map, a Set, symbol keys, undefined or NaN
 * inside, a class instance, a getter that throws): those are inspected as Deno's console would. */
function faithfulJson(v: unknown): string | undefined {
  let lossy = false;
  let json: string | undefined;
  try {
    json = JSON.stringify(v, function (_key, x: unknown) {
      if (lossy) return undefined;
      switch (typeof x) {
        case "bigint":
        case "symbol":
        case "function":
        case "undefined":
          lossy = true;
          return undefined;
        case "number":
          if (!Number.isFinite(x)) lossy = true;
          return x;
        case "object":
          if (x === null || Array.isArray(x)) return x;
          if (ArrayBuffer.isView(x) || NOT_PLAIN_JSON.has(Object.prototype.toString.call(x)) ||
              !isPlain(x) || Object.getOwnPropertySymbols(x).length > 0) lossy = true;
          return x;
      }
      return x;
    });
  } catch {
    return undefined; // a cycle, a getter or a proxy trap that throws
  }
  return lossy ? undefined : json;
}

/** `v` as Deno's console inspects it (console.log's %o and %O); never throws. */
export function inspectValue(v: unknown): string {
  try {
    return inspect(v, INSPECT);
  } catch {
    return safeString(v);
  }
}

/** `v` as JSON when that shows it as it is, else as Deno's console shows it; never throws. */
export function describeValue(v: unknown): string {
  const json = faithfulJson(v);
  if (json !== undefined) return json;
  try {
    return inspect(v, INSPECT);
  } catch {
    return safeJson(v) ?? safeString(v);
  }
}

/** A plain object of any realm. */
export function isPlain(o: object): boolean {
  const proto = Object.getPrototypeOf(o);
  return proto === Object.prototype || proto === null ||
    (Object.getPrototypeOf(proto) === null && Object.prototype.toString.call(o) === "[object Object]");
}

export function safeJson(v: unknown): string | undefined {
  try {
    return JSON.stringify(v);
  } catch {
    return undefined;
  }
}

export function safeString(v: unknown): string {
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

export function jsonClone(v: unknown): unknown {
  const s = safeJson(v);
  return s === undefined ? null : JSON.parse(s);
}

/** Sends a frame carrying `info` at `msg[key]`, dropping parts of it until it is encodable. */
export function sendErrorFrame(msg: Msg, info: ErrorInfo): void {
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
