/**
 * Calls: each call or execution in flight, how it settles (exactly once, with a result or an
 * error frame), which call is running now (for console output), and the errors that escape
 * any call.
 */

import { dropHostCalls, dropSubscriptions, makeContext } from "./context.ts";
import { errorInfo, ErrorTypes, sendErrorFrame } from "./errors.ts";
import type { Execution } from "./isolate.ts";
import { emitLog, LogBudget } from "./console.ts";
import { type ErrorInfo, HOOKS, type Id } from "./protocol.ts";
import { limits, type Msg, optionalArray, optionalNumber, protocolError, requireId, requireString, send } from "./wire.ts";

/** The plugin this worker serves, once the welcome has named and loaded it. */
export const session: {
  pluginId: string;
  config: unknown;
  // deno-lint-ignore no-explicit-any
  plugin: Record<string, any> | null;
  // exported classes: callable in JavaScript's sense, but only with `new` (refused as calls)
  classes: Set<string>;
} = { pluginId: "", config: null, plugin: null, classes: new Set() };

export interface CallState {
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

export const calls = new Map<Id, CallState>();

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

export let tracker: CallTracker = {
  run: (_state, fn, ...args) => fn(...args),
  getStore: onlyCall,
};

export async function trackConcurrentCalls(): Promise<void> {
  const { AsyncLocalStorage } = await import("node:async_hooks");
  const als = new AsyncLocalStorage<CallState>();
  tracker = {
    run: (state, fn, ...args) => als.run(state, fn, ...args),
    getStore: () => als.getStore() ?? onlyCall(),
  };
}

export function newCall(id: Id): CallState {
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
  if (state.execution) {
    state.execution.dispose();
    dropHostCalls(state.id);
    // Its code may leave the event loop spinning in microtasks; the host gives this worker no
    // other execution until a pong shows the loop turned again (host/execute.py, reuse_probe).
    setTimeout(() => {
      try {
        send({ type: "pong", seq: 0 });
      } catch {
        // the connection is gone: so is the worker
      }
    }, 0);
  }
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

export function fail(state: CallState, e: unknown): void {
  failWith(state, errorInfo(e));
}

function failWith(state: CallState, info: ErrorInfo): void {
  if (!settle(state)) return;
  sendErrorFrame({ type: "error", id: state.id }, info);
}

/** Runs `thunk` as the body of call `state` and answers with its (awaited) outcome. */
export function invoke(state: CallState, thunk: () => unknown): void {
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

/** Why `name` cannot be called, with what the module does export: its functions (and the one
 * closest to a misspelt name), or what the export of that name is instead. */
function notFound(name: string): string {
  const mod = (session.plugin ?? {}) as Record<string, unknown>;
  const fns: string[] = [];
  let kind: string | undefined;
  for (const key of Object.keys(mod)) {
    try {
      const value = mod[key];
      if (typeof value === "function" && !session.classes.has(key)) fns.push(key);
      else if (key === name) {
        kind = session.classes.has(key) ? "a class (it needs `new`; export a function that makes one)"
          : value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`;
      }
    } catch {
      // an export still in its temporal dead zone
    }
  }
  if (kind !== undefined) return `"${name}" is exported, but as ${kind}, not a function`;
  fns.sort();
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const fn of fns) {
    const d = distance(name.toLowerCase(), fn.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [fn, d];
  }
  const meant = best === undefined ? "" : `; did you mean "${best}"?`;
  const shown = fns.length > 20 ? `${fns.slice(0, 20).join(", ")}, ...` : fns.join(", ");
  return `no exported function "${name}"${meant} (its functions: ${shown || "none"})`;
}

/** Edit distance of two short names (function names; capped at 64 characters each). */
function distance(a: string, b: string): number {
  a = a.slice(0, 64);
  b = b.slice(0, 64);
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

export function onCall(msg: Msg): void {
  const id = requireId(msg.id, "call.id");
  const fnName = requireString(msg.fn, "call.fn");
  const args = optionalArray(msg.args, "call.args");
  const timeoutMs = optionalNumber(msg.timeout_ms, "call.timeout_ms");
  const contextAt = optionalNumber(msg.context_at, "call.context_at");
  if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
  const state = newCall(id);
  const fn = session.plugin?.[fnName];
  if (typeof fn !== "function" || session.classes.has(fnName)) {
    failWith(state, { name: "FunctionNotFound", message: notFound(fnName) });
    return;
  }
  const context = makeContext(state, timeoutMs, undefined);
  // An optional parameter the caller left out stays undefined (its default applies): the
  // context goes where the host says the declared parameters end (host/arity.py); -1: a
  // function whose manifest declares a rest parameter last, which gets the caller's arguments only.
  if (contextAt !== -1) {
    while (contextAt !== undefined && args.length < contextAt && args.length < 1024) args.push(undefined);
    args.push(context);
  }
  tracker.run(state, invoke, state, () => fn(...args));
}

/** A lifecycle hook (docs/protocol.md "Lifecycle hooks"): answered true once the plugin's
 * export ran, false when it exports none. "config_change" sets the config first, so that
 * `context.config` of later calls is the new one whether or not the plugin has the hook. */
export function onHook(msg: Msg): void {
  const id = requireId(msg.id, "hook.id");
  const name = requireString(msg.name, "hook.name");
  const timeoutMs = optionalNumber(msg.timeout_ms, "hook.timeout_ms");
  if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
  const state = newCall(id);
  const exportName = Object.hasOwn(HOOKS, name) ? HOOKS[name] : undefined;
  if (exportName === undefined) {
    failWith(state, { name: "FunctionNotFound", message: `no lifecycle hook "${name}"` });
    return;
  }
  if (name === "config_change") session.config = msg.config ?? null;
  const fn = session.plugin?.[exportName];
  if (typeof fn !== "function") {
    succeed(state, false);
    return;
  }
  const context = makeContext(state, timeoutMs, undefined);
  const args = name === "config_change" ? [session.config, context] : [context];
  tracker.run(state, invoke, state, async () => {
    await fn(...args);
    return true;
  });
}

/** An execute frame: execute.ts's handler once an execute worker has loaded it (worker.ts, at
 * a welcome with no module). A plugin's worker never loads it (nor isolate.ts, tools.ts and
 * typescript.ts, ~0.3 MB of its idle memory): it answers with an error, as it always has (it
 * has no node:vm to run the code in). */
export const executor = {
  onExecute(msg: Msg): void {
    const id = requireId(msg.id, "execute.id");
    if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
    failWith(newCall(id), { name: "ExecuteUnavailable", message: "this worker serves a plugin, not ad-hoc code" });
  },
  /** The execution (lockdown.ts ownerOf) whose context made a value; none without execute.ts. */
  ownerOf(_value: unknown): { settled: boolean } | undefined {
    return undefined;
  },
};

export function onCancel(msg: Msg): void {
  const id = requireId(msg.id, "cancel.id");
  const reason = msg.reason == null ? "cancelled" : requireString(msg.reason, "cancel.reason");
  const state = calls.get(id);
  if (state && !state.controller.signal.aborted) {
    state.controller.abort(new DOMException(reason, "AbortError"));
  }
}

/** An unhandled rejection or uncaught error: log it and fail the call it must belong to. One
 * from an execution's context is that execution's alone: it fails it while it runs, and is
 * dropped after (it must never reach the next execution). */
export function onEscaped(reason: unknown, promise?: unknown): void {
  const owner = (executor.ownerOf(promise) ?? executor.ownerOf(reason)) as CallState | undefined;
  if (owner) {
    if (!owner.settled) fail(owner, reason);
    return;
  }
  const info = errorInfo(reason);
  // A worker shared by callers never credits an error of unknown origin to the one execution
  // running, neither as its failure nor as a line of its logs: code an earlier execution left
  // behind (a listener on a lent AbortSignal, a lent fetch it never awaited) makes the main
  // realm's own functions throw, with text it chose. The worker's log has it, no call's.
  if (limits.harden === 1) {
    emitLog("exception", info.message, undefined, info);
    return;
  }
  const only = calls.size === 1 ? calls.values().next().value : undefined;
  if (only) {
    failWith(only, info); // the call's error carries it: no separate log entry
  } else {
    // what it was, and when: helper-113 found "late failure" alone, as if the plugin had logged it
    const what = promise === undefined ? "uncaught error" : "unhandled rejection";
    const when = calls.size === 0 ? " while no call ran (a timer, handler or promise an earlier call left?)" : "";
    emitLog("exception", `${what}${when}: ${info.message}`, tracker.getStore(), info);
  }
}
