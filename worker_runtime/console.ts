/**
 * Logs: each call's budget of entries and bytes, console output tagged with the call it belongs
 * to, and the console of one execution (silent once it settled).
 */

import { type CallState, tracker } from "./calls.ts";
import { cap, describeValue, inspectValue, isError, safeJson, safeString, scrub } from "./errors.ts";
import type { ErrorInfo, Log } from "./protocol.ts";
import { limits, send } from "./wire.ts";

export const LEVELS = new Set(["log", "info", "warn", "error", "debug"]);

function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) n += c < 0x800 || (c >= 0xd800 && c <= 0xdfff) ? 1 : 2;
  }
  return n;
}

/** max_log_entries entries and max_log_bytes bytes, then one marker, then nothing. */
export class LogBudget {
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

export function emitLog(level: string, message: string, state: CallState | undefined, extra?: ErrorInfo): void {
  const msg: Log = { type: "log", level, message, id: state?.id, ts: Date.now() };
  if (!state) {
    if (message.length > limits.max_log_bytes) message = msg.message = cap(message, limits.max_log_bytes);
    if ((msg.ts as number) - looseSince >= 1000) [loose, looseSince] = [new LogBudget(), msg.ts as number];
  }
  const budget = state?.logs ?? loose;
  if (state && !budget.truncated && message.length > limits.max_log_bytes / 3 &&
    utf8Length(message) > limits.max_log_bytes) {
    // one line larger than a call's whole budget: its head, as much as is left, not nothing (a
    // 2 MB dump of a response was dropped whole); a third in characters, a character may be 3 bytes
    const room = Math.floor((limits.max_log_bytes - budget.bytes) / 3) - 40;
    if (room >= 256) message = msg.message = cap(message, room);
  }
  // an entry's stack counts as its text does (the host counts it too)
  const verdict = budget.spend(utf8Length(message) + (extra?.stack !== undefined ? utf8Length(extra.stack) : 0));
  if (verdict === "drop") return;
  if (verdict === "marker") {
    msg.level = "warn";
    msg.message = state
      ? `log output truncated: the call's logs reached limits.max_log_entries (${limits.max_log_entries}) or ` +
        `limits.max_log_bytes (${limits.max_log_bytes}); the rest of this call's lines are dropped`
      : "log output truncated (outside a call: more than the per-second budget of limits.max_log_entries / " +
        "limits.max_log_bytes)";
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
  return describeValue(v);
}

const SPECIFIERS = "sdifoOjc";

/** One argument as the format specifier `c` (%s %d %i %f %o %O %j %c) shows it, as Deno does;
 * %s shows an object as the console would log it (Deno: "[object Object]"). */
function specified(c: string, a: unknown): string {
  try {
    switch (c) {
      case "s":
        return typeof a === "bigint" ? `${a}n` : typeof a === "object" && a !== null ? formatValue(a) : safeString(a);
      case "d":
      case "i":
        return typeof a === "bigint" ? `${a}n` : typeof a === "symbol" ? "NaN" : String(parseInt(a as string, 10));
      case "f":
        return typeof a === "symbol" ? "NaN" : String(parseFloat(a as string));
      case "j":
        return safeJson(a) ?? "undefined";
      case "c":
        return ""; // CSS: nothing in a log line
      default: // o, O
        return inspectValue(a);
    }
  } catch {
    return safeString(a);
  }
}

/** The first argument's format specifiers filled from the ones after it (those left over are
 * appended, a specifier with no argument left stays as written), then the rest: console.log's
 * formatting as Deno does it. */
function formatted(fmt: string, args: unknown[]): string {
  let out = "";
  let last = 0;
  let next = 1;
  for (let i = fmt.indexOf("%"); i >= 0 && i < fmt.length - 1; i = fmt.indexOf("%", i + 1)) {
    const c = fmt[i + 1];
    if (c === "%") {
      out += fmt.slice(last, i) + "%";
    } else if (SPECIFIERS.includes(c) && next < args.length) {
      out += fmt.slice(last, i) + specified(c, args[next++]);
    } else {
      continue;
    }
    last = i + 2;
    i++;
  }
  out += fmt.slice(last);
  for (; next < args.length; next++) out += " " + formatValue(args[next]);
  return out;
}

export function formatArgs(args: unknown[]): string {
  if (args.length === 1) return formatValue(args[0]);
  if (typeof args[0] === "string" && args[0].includes("%")) return formatted(args[0], args);
  let s = "";
  for (let i = 0; i < args.length; i++) s += (i ? " " : "") + formatValue(args[i]);
  return s;
}

/** The console of one execution: its lines go to its logs while it runs, nowhere after. */
export function makeConsole(state: CallState): Record<string, unknown> {
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

export function captureConsole(): void {
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
