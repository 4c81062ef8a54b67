/**
 * Types for Plugin Host plugins.
 *
 * A plugin is an ES module: it exports `metadata` and any number of functions. The host calls
 * an exported function with the caller's arguments followed by a `Context`. The globals
 * `PluginError` and `ErrorTypes` are defined by the worker before the plugin is imported.
 *
 *   import type { BalanceResult, Context, PluginMetadata } from "../worker_runtime/plugin.d.ts";
 *
 *   export const metadata: PluginMetadata = { id: "balance_x", name: "X", version: "1.0.0" };
 *   export async function queryBalance(config: { apiKey: string }, ctx: Context): Promise<BalanceResult> {
 *     const res = await fetch("https://api.x.example/balance", { signal: ctx.signal });
 *     if (res.status === 401) throw new PluginError(ErrorTypes.AUTH_ERROR, "invalid API key");
 *     const body = await res.json();
 *     return { balance: body.total, currency: "USD", rawData: body };
 *   }
 */

/** The kinds of failure a plugin reports with `PluginError`. */
export type ErrorType =
  | "NETWORK_ERROR"
  | "AUTH_ERROR"
  /** A setting the operator has not given yet (an API key, a URL): shown as "not configured",
   * never counted against the plugin's circuit breaker. */
  | "NOT_CONFIGURED"
  | "RATE_LIMIT"
  | "TIMEOUT"
  | "PARSE_ERROR"
  | "PROVIDER_ERROR"
  | "SANDBOX_LIMIT"
  | "UNKNOWN";

/**
 * What the plugin may do, one entry per Deno permission. A list allows those names (hosts for
 * `net`, paths for `read`/`write`, variable names for `env`, ...); `true` allows all; absent or
 * `false` allows none.
 */
export interface Permissions {
  net?: string[] | boolean;
  read?: string[] | boolean;
  write?: string[] | boolean;
  env?: string[] | boolean;
  run?: string[] | boolean;
  ffi?: string[] | boolean;
  sys?: string[] | boolean;
}

/** One configuration field of `metadata.configSchema`. */
export interface ConfigField {
  type: "string" | "number" | "integer" | "boolean" | "object" | "array";
  required?: boolean;
  /** Never logged or shown; passed only to the plugin. */
  secret?: boolean;
  default?: unknown;
  description?: string;
  title?: string;
  enum?: unknown[];
  /** Numbers: the smallest and largest value accepted. */
  minimum?: number;
  maximum?: number;
  /** Strings: length bounds, a regular expression the value must match, a format. */
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: "url" | "email";
}

/** The module's `metadata` export. */
export interface PluginMetadata {
  id: string;
  name: string;
  version: string;
  apiVersion: string;
  description?: string;
  author?: string;
  homepage?: string;
  permissions?: Permissions;
  configSchema?: Record<string, ConfigField>;
  /** What the plugin provides, e.g. `"balance"`, or the events it handles, e.g. `"message.incoming"`. */
  capabilities?: string[];
  /** Order among plugins: the highest runs first (events) and is asked first (balances). */
  priority?: number;
  /** An icon's URL, shown by dashboards (accepted for the balance plugin system's plugins). */
  icon?: string;
  /** Other plugins this one needs: id to semver range. */
  dependencies?: Record<string, string>;
  /** The arguments a caller gives each function (the context comes after them), when its
   * parameters do not say it: names, `"x?"` optional, `"...rest"` any number more. The host
   * refuses a call with too few or too many. */
  functions?: Record<string, { params: string[] }>;
}

/** What a balance plugin returns; the host adds provider, status and timestamps. */
export interface BalanceResult {
  /** null when the station reports only what was used, or sets no limit (`unlimited`). */
  balance: number | null;
  /** null: the station gives no unit. */
  currency: string | null;
  unlimited?: boolean;
  /** The station answered with this amount but says the key or plan is not valid (shown, in
   * red; never taken as a balance to go by); `invalidMessage` says why. */
  invalid?: boolean;
  invalidMessage?: string;
  quota?: number;
  usedQuota?: number;
  /** ISO 8601 string, a Date, or epoch milliseconds. */
  expiresAt?: string | Date | number | null;
  rawData?: unknown;
}

export type LogLevel = "log" | "info" | "warn" | "error" | "debug";

/** A cache in the host, shared by the plugin's workers and private to the plugin. Bounded:
 * the least recently used entries are evicted first; an expired entry is never returned. */
export interface PluginCache {
  get<T = unknown>(key: string): Promise<T | null>;
  /** `ttl` in seconds; the host's default (no expiry) when omitted. */
  set(key: string, value: unknown, ttl?: number): Promise<void>;
  /** Whether the key was there. */
  delete(key: string): Promise<boolean>;
}

/** Persistent key-value storage private to the plugin (a database in the host's state
 * directory); it survives restarts. Values round-trip like call arguments, bytes included. */
export interface PluginStorage {
  get<T = unknown>(key: string): Promise<T | null>;
  set(key: string, value: unknown): Promise<void>;
  /** Whether the key was there. */
  delete(key: string): Promise<boolean>;
  /** Every key, sorted. PayloadTooLarge when they would take more than 1 MiB as one answer
   * (about 100,000 short keys): keep the keys to list under one key of your own. */
  keys(): Promise<string[]>;
}

/** Events between the plugin's workers, routed by the host: `emit` reaches the handlers that
 * the plugin's other workers registered with `on` (never the sender's own) and resolves to
 * how many workers it reached. A handler that throws is logged as an `exception`. `data` may
 * take 1 MiB as MessagePack (PayloadTooLarge past it); a worker listens to 1,000 events at most. */
export interface Channel {
  emit(event: string, data?: unknown): Promise<number>;
  on(event: string, handler: (data: unknown) => unknown): Promise<unknown>;
  off(event: string, handler: (data: unknown) => unknown): Promise<unknown>;
}

/** The last argument of every call (not of a function whose metadata.functions.NAME.params ends in "...rest"). */
export interface Context<Config = Record<string, unknown>> {
  /** The call's id on its connection (as in the host's logs). */
  readonly callId: number;
  readonly pluginId: string;
  /** The plugin's configuration. */
  readonly config: Config;
  /** The call's deadline in milliseconds, if it has one; the host kills the worker when it passes. */
  readonly timeout: number | undefined;
  /** Aborted when the host cancels the call; pass it to fetch(). */
  readonly signal: AbortSignal;
  /** A log entry attached to this call, like console output. */
  log(level: LogLevel, ...args: unknown[]): void;
  readonly cache: PluginCache;
  readonly storage: PluginStorage;
  readonly channel: Channel;
  /**
   * fetch() and JSON.parse in one, failures as typed PluginErrors: 401/403 AUTH_ERROR, 429
   * RATE_LIMIT (details.retryAfter in seconds, from Retry-After), other non-2xx PROVIDER_ERROR
   * (details.status), a body that is not JSON PARSE_ERROR, no answer NETWORK_ERROR, the call
   * cancelled or past its deadline TIMEOUT. Uses the call's signal unless `init` has one.
   */
  fetchJson(url: string | URL, init?: RequestInit): Promise<unknown>;
}

/** An exported plugin function: the call's arguments, then the context. */
// deno-lint-ignore no-explicit-any
export type PluginFunction = (...args: any[]) => unknown;

/**
 * Lifecycle hooks, both optional. Each runs within the host's `limits.hook_timeout` (5 s by
 * default); past it the worker is killed, and a throw is logged: either way the worker goes.
 *
 * `onStop(context)`: the worker is being stopped gracefully (disable, uninstall, a reload
 * replacing it, an idle worker retired, the host shutting down); calls in flight have finished.
 *
 * `onConfigChange(config, context)`: the operator changed the config. The worker keeps running
 * with `config` as `context.config` and as the config argument of later calls. Without this
 * export, or when it throws or hangs, or when the change alters the plugin's grants, the host
 * restarts the plugin's workers with the new config instead.
 *
 * `onStart(context)`: a worker loaded the module and is about to take its first call (every
 * worker: at start, a reload, a scale-up, a replacement). When it throws or hangs in a worker
 * the version starts with, that version fails to start (a reload keeps the old one serving, with
 * the reason in `reload_error`); in a later worker it counts as a crash.
 */
export type OnStart = (context: Context) => unknown;
export type OnStop = (context: Context) => unknown;
export type OnConfigChange<Config = Record<string, unknown>> = (config: Config, context: Context<Config>) => unknown;

declare global {
  /** The error types, each mapped to its own name: `ErrorTypes.AUTH_ERROR === "AUTH_ERROR"`. */
  const ErrorTypes: Readonly<{ [K in ErrorType]: K }>;

  /** Throw this to report a classified failure; the host keeps `errorType` and `details`. */
  class PluginError extends Error {
    constructor(errorType: ErrorType | string, message: string, details?: unknown);
    errorType: ErrorType | string;
    details: unknown;
  }

  /** Defined only while an `execute` that asked for the `"channel"` tool is running; its
   * handlers are dropped when that execute settles. */
  var channel: Channel;
}
