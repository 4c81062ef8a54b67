/**
 * The context object a plugin function gets as its last argument: host calls (cache, storage,
 * channel) answered by the host, the channel's handlers, the call's signal and fetchJson.
 */

import { type CallState, session, tracker } from "./calls.ts";
import { emitLog, formatArgs, LEVELS } from "./console.ts";
import { errorInfo, PluginError, ResourceLimitExceeded } from "./errors.ts";
import { fetchJson } from "./http.ts";
import type { Id } from "./protocol.ts";
import { limits, type Msg, protocolError, requireId, requireString, send } from "./wire.ts";

let hostSeq = 0;
const hostPending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; call?: Id }>();

/** A host call's promise, which knows whether the plugin ever looked at it (awaited it, or
 * called then/catch): a failure of one nobody looks at is logged, not lost. */
class Watched<T> extends Promise<T> {
  observed = false;
  static override get [Symbol.species]() {
    return Promise; // what then() answers is a plain promise
  }
  // deno-lint-ignore no-explicit-any
  override then<A = T, B = never>(ok?: ((v: T) => A | PromiseLike<A>) | null, no?: ((e: any) => B | PromiseLike<B>) | null) {
    this.observed = true;
    return super.then(ok, no);
  }
}

const plainThen = Promise.prototype.then;

/** Marks a promise as handled, so a caller that never awaits it does not fail its call (an
 * unhandled rejection fails the call running); a plugin's that fails with nobody having looked
 * at it (a ctx.storage.set(42, "x") without await) is logged at error level, naming ``op``
 * (before: lost without a word). An execution's stay plain promises: a class of their own would
 * be one more prototype for one caller to hook (docs/security.md). */
function handled<T>(p: Promise<T>, op = "a host call"): Promise<T> {
  if (limits.harden === 1) {
    p.catch(() => {});
    return p;
  }
  const state = tracker.getStore(); // the call that made it: awaiting it may come later (helper-116)
  const watched = new Watched<T>((ok, no) => Reflect.apply(plainThen, p, [ok, no]));
  Reflect.apply(plainThen, watched, [undefined, (e: unknown) => {
    const verdict = () => { // once the call that made it ended (or at once, made by none)
      if (watched.observed) return;
      if (state && !state.settled) {
        setTimeout(verdict, 100);
        return;
      }
      const info = errorInfo(e);
      emitLog("error", `ctx.${op} failed and nothing awaited it: ${info.name}: ${info.message}`, undefined);
    };
    if (!watched.observed) setTimeout(verdict, 0);
  }]);
  return watched;
}

export function hostCall(op: string, args: unknown[], call: Id | undefined): Promise<unknown> {
  if (hostPending.size >= limits.max_host_calls) {
    return handled(Promise.reject(new ResourceLimitExceeded(
      `${op}: at most ${limits.max_host_calls} host calls may be in flight (limits.max_host_calls)`,
    )), op);
  }
  const id = ++hostSeq;
  const p = handled(new Promise((resolve, reject) => hostPending.set(id, { resolve, reject, call })), op);
  let size: number;
  try {
    size = send({ type: "host_call", id, op, args, call });
  } catch (e) {
    hostPending.delete(id);
    return handled(Promise.reject(e), op);
  }
  if (size < 0) {
    hostPending.delete(id);
    const err = new Error(`${op} arguments exceed the ${limits.max_frame}-byte frame maximum`);
    err.name = "PayloadTooLarge";
    return handled(Promise.reject(err), op);
  }
  return p;
}

/** An execution settled: its host calls still unanswered are dropped (rejected), so that they
 * no longer count against limits.max_host_calls for the next caller on this worker (the host
 * ends them too, and ignores replies to them). */
export function dropHostCalls(call: Id): void {
  for (const [id, pending] of hostPending) {
    if (pending.call !== call) continue;
    hostPending.delete(id);
    const err = new Error("the execution that made this host call has ended");
    err.name = "InvalidHostCall";
    pending.reject(err);
  }
}

export function onHostReply(msg: Msg): void {
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
  return handled(Promise.reject(new TypeError(what)), "channel");
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

export function dropSubscriptions(owner: CallState): void {
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
export function onDeliver(msg: Msg): void {
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

// Level names authors write for context.log beyond the console's own (Python's "warning", ...).
const LEVEL_ALIASES: Record<string, string> = {
  warning: "warn", fatal: "error", critical: "error", err: "error", trace: "debug", information: "info",
  verbose: "log", notice: "info",
};

/** context.log's level as a console level: case-insensitive, common aliases taken; null when
 * ``level`` is no level's name ("log" is one). */
function logLevel(level: unknown): string | null {
  const name = typeof level === "string" ? level.toLowerCase() : "";
  if (LEVELS.has(name)) return name;
  return Object.hasOwn(LEVEL_ALIASES, name) ? LEVEL_ALIASES[name] : null;
}

export function makeContext(state: CallState, timeoutMs: number | undefined, owner: CallState | undefined) {
  const call = state.id;
  const channel = makeChannel(call, owner);
  return {
    callId: call,
    pluginId: session.pluginId,
    config: session.config,
    timeout: timeoutMs,
    signal: state.controller.signal,
    log(level: string, ...args: unknown[]): void {
      // ctx.log("message") or ctx.log({...}): no level named, the whole is the message (before:
      // an empty line, the message taken for a level)
      const known = logLevel(level);
      emitLog(known ?? "log", formatArgs(known === null ? [level, ...args] : args), state);
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
      fetchJson((t, m, d) => new PluginError(t, m, d), state.controller.signal, url, init,
        (line) => emitLog("debug", line, state)),
  };
}
