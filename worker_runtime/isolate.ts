/**
 * Isolation between the executions of ad-hoc code that share one warm worker (POST /execute).
 *
 * Each execution runs as a module in a V8 context of its own (node:vm), with its own globals and
 * its own intrinsics: code that replaces `Promise.prototype.then` or `Array.prototype.map`
 * changes its own copies. What it gets from the worker's main realm (fetch, TextEncoder, URL,
 * Deno, ...) is frozen first, deeply, with the main realm's intrinsics and global bindings
 * (`harden`), so code that climbs from such a function to the main realm (`fetch.constructor`)
 * finds nothing it can change there either. Its timers, console, tools and channel handlers are
 * its own and die with it: an execution that settled can neither observe nor change the next one.
 * Measured on Deno 2.9 (2-core machine): a context with its module costs ~0.5 ms per execution,
 * mostly making the context, so a warm worker makes the next one while it waits (`spare`);
 * hardening costs ~20-30 ms once per worker.
 */

// deno-lint-ignore-file no-explicit-any

import {
  guardListeners,
  loadLockdown,
  owners,
  tameFunctionConstructors,
  tameOverrides,
  tameRegExpStatics,
} from "./lockdown.ts";
import { MAX_PROBED_CHARS, MAX_PROBED_NESTING, nestingOf } from "./nesting.ts";

/** What the worker's main realm lends every execution, frozen (bindings of the same name). */
export const LENT = [
  "fetch", "Request", "Response", "Headers", "FormData", "URL", "URLSearchParams", "URLPattern",
  "TextEncoder", "TextDecoder", "TextEncoderStream", "TextDecoderStream", "atob", "btoa",
  "structuredClone", "AbortController", "AbortSignal", "Blob", "File", "ReadableStream",
  "WritableStream", "TransformStream", "ByteLengthQueuingStrategy", "CountQueuingStrategy",
  "CompressionStream", "DecompressionStream", "Event", "EventTarget", "CustomEvent", "DOMException",
  "MessageChannel", "MessagePort", "WebSocket", "navigator", "PluginError", "ErrorTypes",
] as const;
// Besides these, each execution gets `Deno` without what changes the process for the next one
// (lentDeno) and a `performance` of its own (ownPerformance).

/** Errors of code that does not parse (``Execution.load``), as opposed to one it threw: for
 * TypeScript a 400, as the stripper's own (typescript.ts). */
export const compileErrors = new WeakSet<object>();

type Vm = typeof import("node:vm");
let vm: Vm | undefined;

/** Loads node:vm (only execute workers pay for it), and what hardening needs (lockdown.ts). */
export async function loadVm(): Promise<void> {
  vm ??= (await import("node:vm")).default as unknown as Vm;
  await loadLockdown();
}

/**
 * Freeze what executions can reach of the main realm: every intrinsic and every object reachable
 * from the lent globals and from ``surfaces`` (what the tools hand out) (after loading what Deno loads lazily on first use, which would otherwise
 * fail against frozen objects), and make every global binding read-only, so that code reaching
 * the main realm can change nothing the runtime or the next execution relies on.
 */
export async function harden(surfaces: unknown[] = []): Promise<void> {
  const g = globalThis as any;
  // First use of these loads Deno's lazy modules, which define properties as they load.
  try {
    await (await g.fetch("data:text/plain,x")).text();
  } catch {
    // no network access needed: a data: URL
  }
  new g.Response(new g.ReadableStream()).body?.cancel();
  new g.Request("http://warm.invalid/");
  new g.Headers();
  new g.FormData();
  new g.Blob([]).stream();
  new g.TextEncoderStream();
  new g.TextDecoderStream();
  new g.CompressionStream("gzip");
  new g.DecompressionStream("gzip");
  new g.MessageChannel().port1.close();
  g.AbortSignal.timeout(1);
  g.structuredClone({ warm: [1] });
  g.performance.now();
  void g.navigator.userAgent;
  // Web Locks are the process's one LockManager, whose held locks and their names no freezing
  // reaches: lent to every execution, one caller's lock held for ever made the next caller's
  // request wait out its timeout, and query() read other callers' lock names. None here.
  delete Object.getPrototypeOf(g.navigator).locks;
  // WebGPU's one GPU object, lent to every execution and unfrozen, carried one caller's methods
  // into the next caller's execution; none here either.
  delete Object.getPrototypeOf(g.navigator).gpu;
  await g.crypto.subtle.digest("SHA-256", new Uint8Array(1));
  const timer = setTimeout(() => {}, 0);  // Node's Timeout (what an execution's setTimeout answers): its
  clearTimeout(timer);                     // prototype is frozen below (helper-109: A hooked every later timer)
  lent = lentDeno();
  shieldGlobalSlot(g);
  ownTimeoutSignals(g);
  pinProcess(g.process);
  pinDeno(g.Deno);
  tameFunctionConstructors();
  tameRegExpStatics();
  guardListeners(LENT);
  const stack: unknown[] = [...tameOverrides(), ...surfaces, ...instances(), Object.getPrototypeOf(timer)];
  // What lent functions answer the same each time is frozen too: navigator's getters (its
  // userAgentData) and OpenTelemetry's one root context, given an own setValue by one execution.
  const nav = Object.getPrototypeOf(g.navigator);
  for (const key of Reflect.ownKeys(nav)) {
    const d = Reflect.getOwnPropertyDescriptor(nav, key)!;
    if (d.get) {
      try {
        stack.push(Reflect.apply(d.get, g.navigator, []));
      } catch {
        // a getter that refuses: nothing to freeze
      }
    }
  }
  try {
    stack.push(g.Deno.telemetry?.contextManager?.active?.());
  } catch {
    // no telemetry in this Deno
  }
  const seen = new WeakSet<object>([globalThis]);
  for (const key of Reflect.ownKeys(globalThis)) {
    const d = Reflect.getOwnPropertyDescriptor(globalThis, key)!;
    if ("value" in d) stack.push(d.value);
    else if (typeof key === "string" && (LENT as readonly string[]).includes(key)) stack.push(g[key]);
    else stack.push(d.get, d.set); // lazy globals nobody lends stay unloaded; their accessors freeze
  }
  // node:vm loads every execution (Execution.load): the main realm's process.getBuiltinModule
  // answers this very module object, whose SourceTextModule (or its Module prototype's namespace
  // getter) one caller replaced to read, forge and fail every later caller's (helper-115)
  stack.push(Object.getPrototypeOf(globalThis), lent, vm);
  while (stack.length) {
    const o = stack.pop();
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o as object)) continue;
    seen.add(o as object);
    Object.freeze(o);
    stack.push(Object.getPrototypeOf(o));
    for (const key of Reflect.ownKeys(o as object)) {
      const d = Reflect.getOwnPropertyDescriptor(o as object, key);
      if (!d) continue;
      if ("value" in d) stack.push(d.value);
      else stack.push(d.get, d.set);
    }
  }
  // The global object itself must stay extensible (Deno adds to it at exit), but no binding on
  // it may be replaced: the runtime looks its globals up by name.
  for (const key of Reflect.ownKeys(globalThis)) {
    const d = Reflect.getOwnPropertyDescriptor(globalThis, key)!;
    if (!d.configurable) continue;
    if ("value" in d) Object.defineProperty(globalThis, key, { writable: false, configurable: false });
    else Object.defineProperty(globalThis, key, { configurable: false });
  }
}

/**
 * Objects of the main realm whose prototypes no property leads to, only an instance (SES's
 * "intrinsics reachable by instance"): the iterators (array, map, set, string, regexp, generator,
 * async generator, Headers, URLSearchParams, FormData, a stream's), the streams' readers, writers,
 * controllers. An execution reached the array iterator's prototype through structuredClone([1])
 * and replaced its `next`, which the runtime runs on every call's state: it read and forged the
 * next callers' inputs, logs and results; another replaced a reader's `read` and read every body
 * later callers read (helper-107). Frozen with the rest, through these samples.
 */
function instances(): unknown[] {
  const g = globalThis as any;
  const out: unknown[] = [];
  const keep = (c: unknown) => out.push(c);
  const it = (v: any) => v[Symbol.iterator]();
  out.push(it([]), it(new Map()), it(new Set()), it(""), "a".matchAll(/a/g), (function* () {})(),
    (async function* () {})(), it(new g.Headers()), it(new g.URLSearchParams()), it(new g.FormData()));
  const readable = new g.ReadableStream({ start: keep });
  out.push(readable.getReader(), new g.ReadableStream().values());
  let bytes: any;
  const byob = new g.ReadableStream({ type: "bytes", start: (c: unknown) => { bytes = c; } }).getReader({ mode: "byob" });
  byob.read(new Uint8Array(1)).catch(() => {});  // a read pending: its controller has a BYOB request
  out.push(bytes, byob, bytes.byobRequest);
  byob.cancel().catch(() => {});
  out.push(new g.WritableStream({ start: keep }).getWriter());
  new g.TransformStream({ start: keep });
  // What Deno keeps inside instances, under symbols (helper-108): a body's InnerBody, a Blob's
  // parts, an AbortSignal.timeout's timer and its list; and the iterator helpers.
  const inside = [new g.Request("http://warm.invalid/", { method: "POST", body: "x" }), new g.Response("x"),
    new g.Blob(["x"]), new g.File(["x"], "f"), g.AbortSignal.timeout(1)];
  const iterator = it([]);
  for (const helper of ["map", "filter", "take", "drop", "flatMap"]) {
    try {
      out.push(iterator[helper]((x: unknown) => helper === "flatMap" ? [x] : x));
    } catch {
      // no iterator helpers in this V8
    }
  }
  try {
    out.push((globalThis as any).Iterator.from({ next: () => ({ done: true }) }));
  } catch {
    // no Iterator.from
  }
  try {
    out.push(g.Deno.telemetry?.tracerProvider?.getTracer?.("harden"));
  } catch {
    // no telemetry
  }
  return [...out, ...prototypesWithin([...out, ...inside], 3)];
}

/** The prototypes of what ``roots`` hold, ``depth`` levels down, symbol-keyed state included:
 * each instance's own state stays as it is (not frozen), the classes it is made of are. */
function prototypesWithin(roots: unknown[], depth: number): unknown[] {
  const protos: unknown[] = [];
  const seen = new Set<unknown>();
  const visit = (o: unknown, left: number): void => {
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o) || left < 0) return;
    seen.add(o);
    const proto = Object.getPrototypeOf(o);
    if (proto !== null) protos.push(proto);
    for (const key of Reflect.ownKeys(o as object)) {
      const d = Reflect.getOwnPropertyDescriptor(o as object, key);
      if (d && "value" in d) visit(d.value, left - 1);
    }
  };
  for (const root of roots) visit(root, depth);
  return protos;
}

/** The `Deno` executions get: the worker's, less what would change the process for the
 * executions after it (revoking or requesting permissions, signal listeners, the working
 * directory, the umask, environment writes, timer references) and what says where the host is
 * installed (mainModule, execPath). */
function lentDeno(): object {
  const D = (globalThis as any).Deno;
  const refuse = (what: string) => () => {
    throw new TypeError(`Deno.${what} is not available to execute code`);
  };
  const copy = Object.create(Object.getPrototypeOf(D));
  const own = Object.getOwnPropertyDescriptors(D);
  own.exitCode = { get: () => D.exitCode, set: refuse("exitCode"), enumerable: true }; // the process's
  Object.defineProperties(copy, own);
  // What Deno's accessors answer is one object for the whole process (Deno.args, Deno.Command and
  // its prototype, Deno.telemetry, ...), which no walk of properties meets: one execution pushed
  // onto Deno.args or replaced Deno.Command.prototype.output for every later caller. Read once
  // here, each is a value of the copy, and `harden` freezes it.
  for (const [key, d] of Object.entries(own)) {
    if (!d.get || key === "exitCode") continue;
    try {
      Object.defineProperty(copy, key, { value: Reflect.apply(d.get, D, []), enumerable: d.enumerable });
    } catch {
      // a getter that refuses (a permission not granted): its accessor stays, frozen
    }
  }
  // The stdio resources are the process's too: closed by one execution, every later caller's
  // write failed with BadResource; a writer taken on Deno.stdout.writable locked it for them.
  const stdio = (name: "stdin" | "stdout" | "stderr", stream: "readable" | "writable", use: string[]) => {
    const own = D[name];
    const lent: Record<string, unknown> = { isTerminal: () => own.isTerminal(), close: refuse(`${name}.close`) };
    for (const fn of use) lent[fn] = (p: Uint8Array) => own[fn](p);
    return Object.defineProperty(lent, stream, { get: refuse(`${name}.${stream}`), enumerable: true });
  };
  copy.stdin = stdio("stdin", "readable", ["read", "readSync"]);
  copy.stdout = stdio("stdout", "writable", ["write", "writeSync"]);
  copy.stderr = stdio("stderr", "writable", ["write", "writeSync"]);
  const perms = D.permissions;
  // Deno keeps one PermissionStatus per descriptor for the whole process: given an own `state` or
  // `addEventListener` by one execution, it lied to (or ran code inside) every later caller. Each
  // query answers a status of its own (no permission changes in a worker: revoke refuses), which
  // its caller may set `onchange` on as Deno's manual does.
  const status = (s: any) => ({
    name: s.name, state: s.state, partial: s.partial, onchange: null,
    addEventListener: () => {}, removeEventListener: () => {}, dispatchEvent: () => true,
  });
  copy.permissions = {
    query: async (desc: unknown) => status(await perms.query(desc)),
    querySync: (desc: unknown) => status(perms.querySync(desc)),
    request: refuse("permissions.request"),
    requestSync: refuse("permissions.requestSync"),
    revoke: refuse("permissions.revoke"),
    revokeSync: refuse("permissions.revokeSync"),
  };
  const env = D.env;
  copy.env = {
    get: (key: string) => env.get(key),
    has: (key: string) => env.has(key),
    toObject: () => env.toObject(),
    set: refuse("env.set"),
    delete: refuse("env.delete"),
  };
  for (const what of ["addSignalListener", "removeSignalListener", "chdir", "umask", "refTimer", "unrefTimer"]) {
    if (what in copy) copy[what] = refuse(what);
  }
  // Where the host is installed is none of the code's business (errors.ts scrub, likewise).
  copy.execPath = refuse("execPath");
  Object.defineProperty(copy, "mainModule", { value: "runtime:/worker.ts", enumerable: true });
  return copy;
}

/**
 * What the main realm's `process` does to the process beyond the lent Deno's refusals: executions
 * reach it through the main realm's global (docs/security.md, "Not defended"), and in a pool
 * granted read or env one caller moved the worker's cwd (what the next caller's relative paths
 * resolve against) or set its environment (helper-115). Those members refuse, pinned.
 */
function pinProcess(proc: any): void {
  const refuse = (what: string) => () => {
    throw new TypeError(`process.${what} is not available to execute code`);
  };
  const pin = (key: string, value: unknown) =>
    Object.defineProperty(proc, key, { value, writable: false, configurable: false, enumerable: true });
  for (const what of ["chdir", "setuid", "setgid", "seteuid", "setegid", "setgroups", "initgroups", "loadEnvFile",
    "setSourceMapsEnabled", "setUncaughtExceptionCaptureCallback"]) {
    if (typeof proc[what] === "function") pin(what, refuse(what));
  }
  const umask = proc.umask;
  pin("umask", (...args: unknown[]) => {
    if (args.length && args[0] !== undefined) refuse("umask")();
    return Reflect.apply(umask, proc, []);
  });
  const env = proc.env;
  const readOnly = () => {
    throw new TypeError("process.env is read-only to execute code");
  };
  pin("env", new Proxy(env, { set: readOnly, deleteProperty: readOnly, defineProperty: readOnly }));
}

/**
 * The same refusals on the main realm's own Deno, which executions reach as they reach its
 * process (helper-116: G.Deno.chdir and G.Deno.env.set moved the next caller's cwd and set its
 * environment past pinProcess). The runtime uses none of these.
 */
function pinDeno(D: any): void {
  const refuse = (what: string) => () => {
    throw new TypeError(`Deno.${what} is not available to execute code`);
  };
  const pin = (on: object, key: string, value: unknown) =>
    Object.defineProperty(on, key, { value, writable: false, configurable: false, enumerable: true });
  for (const what of ["chdir", "addSignalListener", "removeSignalListener"]) pin(D, what, refuse(what));
  const umask = D.umask;
  pin(D, "umask", (...args: unknown[]) => {
    if (args.length && args[0] !== undefined) refuse("umask")();
    return Reflect.apply(umask, D, []);
  });
  pin(D.env, "set", refuse("env.set"));
  pin(D.env, "delete", refuse("env.delete"));
  for (const what of ["revoke", "revokeSync", "request", "requestSync"]) { // helper-117: a revoke for everyone
    pin(D.permissions, what, refuse(`permissions.${what}`));
    // and on the class every execution is lent (Deno.Permissions), whose methods take any `this`:
    // Deno.Permissions.prototype.revokeSync.call({}, {name: "env"}) revoked it for the next callers (helper-118)
    pin(Object.getPrototypeOf(D.permissions), what, refuse(`permissions.${what}`));
  }
}

/**
 * ``AbortSignal.timeout`` whose timer no signal holds: Deno's keeps the main realm's Timeout
 * object in the signal's ``[[timerId]]`` slot, an unfrozen node of the timer lists every caller's
 * and the runtime's timers share: one caller set its ``_onTimeout`` and, left behind, walked the
 * list to fire or silence the next caller's timers (helper-119). Same answer: aborted with a
 * DOMException "TimeoutError" once ``ms`` passed, the timer kept from holding the process.
 */
function ownTimeoutSignals(g: any): void {
  const { AbortController, DOMException } = g;
  const timeout = function timeout(ms: unknown): AbortSignal {
    const delay = Number(ms);
    if (!Number.isFinite(delay) || delay < 0) {
      throw new TypeError(`Failed to execute 'AbortSignal.timeout': Argument 1 is not a finite number of milliseconds`);
    }
    const controller = new AbortController();
    const timer: any = setTimeout(() => controller.abort(new DOMException("Signal timed out.", "TimeoutError")), delay);
    if (typeof timer?.unref === "function") timer.unref(); // as Deno's: it keeps nothing alive
    else Deno.unrefTimer(timer);
    return controller.signal;
  };
  Object.defineProperty(g.AbortSignal, "timeout", { value: timeout, writable: true, enumerable: true, configurable: true });
}

/**
 * The queuing strategies lent to executions keep the main realm's global object in an internal
 * slot (``Symbol([[globalObject]])``, an own property of each instance, which their ``size``
 * getter keys a WeakMap by): through it an execution reached ``process``, ``node:vm`` and the
 * runtime's own modules, and hooked every later caller's code, input and result (helper-115,
 * helper-117). The classes lent are wrappers whose instances hold an empty frozen object in that
 * slot instead; the original classes stay reachable from no lent object (their prototype's
 * ``constructor`` is the wrapper).
 */
function shieldGlobalSlot(g: any): void {
  for (const name of ["CountQueuingStrategy", "ByteLengthQueuingStrategy"]) {
    const Original = g[name];
    if (typeof Original !== "function") continue;
    const slot = Object.getOwnPropertySymbols(new Original({ highWaterMark: 1 }))
      .find((s) => String(s) === "Symbol([[globalObject]])");
    if (slot === undefined) continue;
    const shield = Object.freeze(Object.create(null));
    const Lent = function (this: unknown, ...args: unknown[]) {
      if (new.target === undefined) throw new TypeError(`Failed to construct '${name}': Please use the 'new' operator`);
      // made on the class's own (frozen) prototype: a caller's subclass or new.target whose
      // prototype had a setter for the slot got the global as the constructor stored it
      // (helper-118); it moves onto the caller's prototype once the slot holds the shield
      const made = Reflect.construct(Original, args);
      Object.defineProperty(made, slot, { value: shield, writable: false, enumerable: false, configurable: false });
      if (new.target !== Lent) Object.setPrototypeOf(made, new.target.prototype);
      return made;
    };
    Object.defineProperty(Lent, "name", { value: name });
    Object.defineProperty(Lent, "length", { value: 1 });
    Object.defineProperty(Lent, "prototype", { value: Original.prototype, writable: false });
    Object.defineProperty(Original.prototype, "constructor", { value: Lent, writable: true, configurable: true });
    const d = Object.getOwnPropertyDescriptor(g, name)!; // a lazy global's accessor, or a value
    Object.defineProperty(g, name, { value: Lent, writable: true, enumerable: d.enumerable, configurable: true });
    // every instance's size is one function (keyed by the shield), made on first use: made now and
    // frozen, else one caller planted what the next caller's size.call(...) ran (helper-118)
    Object.freeze(new (Lent as any)({ highWaterMark: 1 }).size);
  }
}

let lent: object | undefined;
let lentDescriptors: PropertyDescriptorMap | undefined;

/**
 * The `Deno` of one execution: the lent one, whose `exit` and `kill` refuse once the execution
 * settled. Code it leaves behind (a listener on a lent AbortSignal, a stream's callback) still
 * runs later, during another caller's execution on this worker; ending the process there failed
 * that caller with WorkerCrashed. While it runs, an execution may still end its own worker.
 */
function denoFor(owner: { settled: boolean }): object {
  const base = lent ?? (lent = lentDeno());
  lentDescriptors ??= Object.getOwnPropertyDescriptors(base);
  const D = base as any;
  const ended = (what: string) =>
    new TypeError(`Deno.${what} is not available to code whose execution has ended`);
  return Object.freeze(Object.create(Object.getPrototypeOf(base), {
    ...lentDescriptors,
    exit: { value: Object.freeze((code?: number) => {
      if (owner.settled) throw ended("exit");
      return D.exit(code);
    }), enumerable: true },
    kill: { value: Object.freeze((pid: number, signo?: string) => {
      if (owner.settled) throw ended("kill");
      return D.kill(pid, signo);
    }), enumerable: true },
  }));
}

/** A `performance` of one execution: the worker's clock, marks and measures of its own. */
function ownPerformance(): object {
  const main = (globalThis as any).performance;
  const entries: Array<Record<string, unknown>> = [];
  const at = (v: unknown, what: string): number => {
    if (typeof v === "number") return v;
    const mark = entries.findLast((e) => e.entryType === "mark" && e.name === String(v));
    if (!mark) throw new DOMException(`The mark '${String(v)}' does not exist (${what})`, "SyntaxError");
    return mark.startTime as number;
  };
  const drop = (type: string, name?: unknown): void => {
    for (let i = entries.length - 1; i >= 0; i--) {
      if (entries[i].entryType === type && (name === undefined || entries[i].name === String(name))) entries.splice(i, 1);
    }
  };
  return {
    timeOrigin: main.timeOrigin,
    now: () => main.now(),
    toJSON: () => ({ timeOrigin: main.timeOrigin }),
    mark(name: unknown, options?: { startTime?: number; detail?: unknown }) {
      const e = { name: String(name), entryType: "mark", startTime: options?.startTime ?? main.now(), duration: 0,
        detail: options?.detail ?? null };
      entries.push(e);
      return e;
    },
    measure(name: unknown, start?: unknown, end?: unknown) {
      let from: number, to: number, detail: unknown = null;
      if (start !== null && typeof start === "object") {
        const o = start as { start?: unknown; end?: unknown; duration?: number; detail?: unknown };
        to = o.end !== undefined ? at(o.end, "end") : o.duration !== undefined && o.start !== undefined
          ? at(o.start, "start") + o.duration : main.now();
        from = o.start !== undefined ? at(o.start, "start") : o.duration !== undefined ? to - o.duration : 0;
        detail = o.detail ?? null;
      } else {
        from = start === undefined ? 0 : at(start, "start");
        to = end === undefined ? main.now() : at(end, "end");
      }
      const e = { name: String(name), entryType: "measure", startTime: from, duration: to - from, detail };
      entries.push(e);
      return e;
    },
    getEntries: () => entries.slice(),
    getEntriesByName: (name: unknown, type?: string) =>
      entries.filter((e) => e.name === String(name) && (type === undefined || e.entryType === type)),
    getEntriesByType: (type: string) => entries.filter((e) => e.entryType === type),
    clearMarks: (name?: unknown) => drop("mark", name),
    clearMeasures: (name?: unknown) => drop("measure", name),
  };
}

// Before the code, on its first line (its columns there are corrected by this length): an import
// that cannot load, so the probed module's graph never loads and no module the code imports is
// evaluated (static imports run before the importing module's first statement), and a first
// statement that throws. A module that parses here is never run at all, whatever it imports.
const NO_RUN = 'import "plugin-host-never:x";throw 0;';

/**
 * "line:column" of a syntax error in `code` (V8's compile error in a context carries none): Deno's
 * own parser reports it when the code is imported as a data: URL, behind an import that cannot
 * load and a first statement that throws, so nothing of it, nor of what it imports, runs even if
 * it parses. Code nested too deeply for that parser (nesting.ts) gets no position.
 */
export async function syntaxErrorAt(code: string): Promise<string | undefined> {
  if (code.length > MAX_PROBED_CHARS || nestingOf(code) > MAX_PROBED_NESTING) return undefined;
  const bytes = new TextEncoder().encode(NO_RUN + code);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  try {
    await import(`data:application/javascript;base64,${btoa(bin)}`);
  } catch (e) {
    const m = /:(\d+):(\d+)\s*$/.exec(String((e as Error)?.message ?? ""));
    if (m) {
      const line = Number(m[1]);
      const column = line === 1 ? Number(m[2]) - NO_RUN.length : Number(m[2]);
      return `${line}:${column}`;
    }
  }
  return undefined;
}

/** The constructors of one context, to build values that belong to it. */
interface Realm {
  Object: ObjectConstructor;
  Array: ArrayConstructor;
  Uint8Array: Uint8ArrayConstructor;
  Date: DateConstructor;
  Map: MapConstructor;
  Set: SetConstructor;
  Promise: PromiseConstructor;
  Error: ErrorConstructor;
}

/** One execution's context: its globals, its timers, and the module it runs. */
export class Execution {
  readonly context: object;
  readonly realm: Realm;
  #sandbox: Record<string, unknown>;
  #owner: { settled: boolean } = { settled: true };  // none yet: a spare runs nothing
  #onUncaught: (e: unknown) => void = () => {};
  #timers = new Map<number, unknown>(); // the code's number -> the main realm's timer (setTimeout, setInterval)
  #disposed = false;

  /** A fresh context with the lent globals and timers of its own; `claim` gives it an owner. */
  constructor() {
    if (!vm) throw new Error("node:vm is not loaded (loadVm)");
    const sandbox: Record<string, unknown> = Object.create(null);
    for (const name of LENT) {
      const value = (globalThis as any)[name];
      if (value !== undefined) sandbox[name] = value;
    }
    sandbox.Deno = lent ?? (lent = lentDeno());
    sandbox.performance = ownPerformance();
    const run = (fn: unknown, args: unknown[]): void => {
      if (this.#disposed || typeof fn !== "function") return;
      try {
        fn(...args);
      } catch (e) {
        if (!this.#owner.settled) this.#onUncaught(e);
      }
    };
    // A timer is a number to the code: Node's Timeout object it stands for is the main realm's,
    // linked into the timer lists every caller's and the runtime's timers share (helper-119: code
    // left behind rewired them and fired or silenced the next caller's timers)
    const timers = this.#timers;
    sandbox.setTimeout = (fn: unknown, ms?: number, ...args: unknown[]): number => {
      if (this.#disposed) return 0;
      const id = nextTimerId++;
      timers.set(id, globalThis.setTimeout(() => {
        timers.delete(id);
        run(fn, args);
      }, ms));
      return id;
    };
    sandbox.setInterval = (fn: unknown, ms?: number, ...args: unknown[]): number => {
      if (this.#disposed) return 0;
      const id = nextTimerId++;
      timers.set(id, globalThis.setInterval(() => run(fn, args), ms));
      return id;
    };
    sandbox.clearTimeout = sandbox.clearInterval = (id?: unknown): void => {
      const timer = typeof id === "number" ? timers.get(id) : undefined;
      if (timer !== undefined) {
        timers.delete(id as number);
        clearTimeout(timer as number);
      }
    };
    sandbox.queueMicrotask = (fn: unknown): void => queueMicrotask(() => run(fn, []));
    this.#sandbox = sandbox;
    this.context = vm.createContext(sandbox, { name: "execute" });
    this.realm = vm.runInContext(
      "({ Object, Array, Uint8Array, Date, Map, Set, Promise, Error })",
      this.context,
    ) as Realm;
  }

  /**
   * This context now belongs to one execution: `owner` is its call state (its `settled` flag is
   * read when a rejection with no handler comes from this context), `globals` its own bindings
   * (console, tools, ...), and `onUncaught` receives an error thrown by one of its timers while
   * it has not settled. A context serves one execution only.
   */
  claim(owner: { settled: boolean }, globals: Record<string, unknown>, onUncaught: (e: unknown) => void): this {
    forgetLastMatch();
    Object.assign(this.#sandbox, globals);
    this.#sandbox.Deno = denoFor(owner);
    this.#owner = owner;
    this.#onUncaught = onUncaught;
    owners.set(this.realm.Promise.prototype, owner);
    owners.set(this.realm.Object.prototype, owner);
    return this;
  }

  /** Another global of this context (an operator's module tool, set up before the code runs). */
  bind(name: string, value: unknown): void {
    this.#sandbox[name] = value;
  }

  /** Compile `code` as a module of this context, run its top level, return export `entry`. */
  async load(code: string, entry: string, identifier = "<execute>"): Promise<unknown> {
    let mod;
    try {
      // No importModuleDynamically: Deno 2.9 keeps every module given one alive (measured:
      // +190 KB per execution); without it, import() fails with a TypeError of its own.
      mod = new vm!.SourceTextModule(code, { context: this.context, identifier });
    } catch (e) {
      if (e instanceof SyntaxError || (e as Error)?.name === "SyntaxError") {
        const where = await syntaxErrorAt(code);
        if (where) (e as Error).message += ` (at ${identifier}:${where})`;
        compileErrors.add(e as object); // the code does not parse: nothing of it ran (execute.ts)
      }
      throw e;
    }
    await mod.link((specifier: string) => {
      throw new TypeError(`execute code cannot import modules (${specifier}); use the tools it is given`);
    });
    await mod.evaluate();
    return (mod.namespace as Record<string, unknown>)[entry];
  }

  /** `value` (decoded in the main realm) rebuilt with this context's own constructors. */
  adopt(value: unknown, depth = 0): unknown {
    if (value === null || typeof value !== "object" || depth > 128) return value;
    const r = this.realm;
    if (Array.isArray(value)) {
      const out = new r.Array(value.length);
      for (let i = 0; i < value.length; i++) out[i] = this.adopt(value[i], depth + 1);
      return out;
    }
    if (value instanceof Uint8Array) return new r.Uint8Array(value);
    if (value instanceof Date) return new r.Date(value.getTime());
    if (value instanceof Map) {
      const out = new r.Map();
      for (const [k, v] of value) out.set(this.adopt(k, depth + 1), this.adopt(v, depth + 1));
      return out;
    }
    const out = new r.Object() as Record<string, unknown>;
    for (const key of Object.keys(value)) {
      Object.defineProperty(out, key, {
        value: this.adopt((value as Record<string, unknown>)[key], depth + 1),
        writable: true, enumerable: true, configurable: true,
      });
    }
    return out;
  }

  /** The execution settled: its timers stop, and nothing it left behind runs any more. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    forgetLastMatch();
    for (const timer of this.#timers.values()) clearTimeout(timer as number);
    this.#timers.clear();
  }
}

let nextTimerId = 1; // the numbers executions' timers are known by: never a main-realm object

/**
 * The main realm's RegExp legacy statics (``lastMatch``, ``input``, ``$1``...) emptied, before an
 * execution runs and once it settled: tameRegExpStatics deletes them from its RegExp, but Deno's
 * own frozen RegExp subclass (reached through a URLPattern's components) carries copies, which
 * gave the next caller what Deno's code last matched for the previous one, a Blob type's
 * charset=<its secret> (helper-119). A match of nothing in the main realm sets them all to "".
 */
function forgetLastMatch(): void {
  EMPTY.exec("");
}
const EMPTY = /(?:)/;

let spareContext: Execution | undefined;
let spareQueued = false;

/** A context for the next execution: the one made ahead of time, else a new one. */
export function nextExecution(): Execution {
  const ready = spareContext;
  spareContext = undefined;
  return ready ?? new Execution();
}

/** Make the next execution's context once the worker is idle (a macrotask after this one). */
export function prepareSpare(): void {
  if (spareContext || spareQueued) return;
  spareQueued = true;
  setTimeout(() => {
    spareQueued = false;
    if (!spareContext) {
      try {
        spareContext = new Execution();
      } catch {
        // made on demand instead
      }
    }
  }, 0);
}
