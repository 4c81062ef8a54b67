/**
 * Helpers for plugins, provided by the runtime under a fixed specifier:
 *
 *   import { configChecks, parsers, secretProblem, urlProblem } from "@plugin-host/kit";
 *
 * The worker maps "@plugin-host/kit" to this file (worker_runtime/import_map.json) and loads it
 * before the plugin, so a plugin needs no read grant to import it. It is read-only: a module's
 * bindings cannot be assigned from outside, and everything it returns is frozen. Each plugin
 * runs in a process of its own, so nothing here is shared between plugins anyway.
 */

import { ErrorTypes, PluginError } from "./errors.ts";

// The types an author writes against, from the same specifier wherever the plugin lives:
// import type { Context, PluginMetadata } from "@plugin-host/kit" (erased when the plugin runs).
export type {
  BalanceResult, Channel, ConfigField, Context, ErrorType, LogLevel, OnConfigChange, OnStart, OnStop, Permissions,
  PluginCache, PluginFunction, PluginMetadata, PluginStorage,
} from "./plugin.d.ts";

/** What is wrong with a configuration, in words an operator can act on; undefined: nothing. */
export type Problem = string | undefined;

export interface Parsers {
  /** `value` as a JSON object, else PARSE_ERROR "<id>: <field> is not an object". */
  object(value: unknown, field: string): Record<string, unknown>;
  /** A finite number, or a string holding one (as many relays send amounts), else PARSE_ERROR
   * "<id>: <field> is missing or not a number". */
  number(value: unknown, field: string): number;
  /** A non-empty string, else PARSE_ERROR "<id>: <field> is missing or not a string". */
  string(value: unknown, field: string): string;
  /** A JSON array, else PARSE_ERROR "<id>: <field> is not a list". */
  array(value: unknown, field: string): unknown[];
}

/** Readers of a provider's answer whose errors name the plugin and the field. */
export function parsers(id: string): Parsers {
  const fail = (what: string): never => {
    throw new PluginError(ErrorTypes.PARSE_ERROR, `${id}: ${what}`);
  };
  return Object.freeze({
    object(value: unknown, field: string): Record<string, unknown> {
      if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
      return fail(`${field} is not an object`);
    },
    number(value: unknown, field: string): number {
      const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
      if (typeof n === "number" && Number.isFinite(n)) return n;
      return fail(`${field} is missing or not a number`);
    },
    string(value: unknown, field: string): string {
      if (typeof value === "string" && value !== "") return value;
      return fail(`${field} is missing or not a string`);
    },
    array(value: unknown, field: string): unknown[] {
      if (Array.isArray(value)) return value;
      return fail(`${field} is not a list`);
    },
  });
}

/** A finite number, or a string holding one; null for anything else (an optional field). */
export function optionalNumber(value: unknown): number | null {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : null;
}

/** Epoch milliseconds (a number or a numeric string; 0 or less: none) or an ISO string, as an
 * ISO 8601 string; null for anything else. */
export function instant(value: unknown): string | null {
  const ms = optionalNumber(value);
  if (ms !== null) return ms > 0 ? new Date(ms).toISOString() : null;
  return typeof value === "string" && value ? value : null;
}

/** The host name of a URL, lower case; "" when it is not a URL. What a provider's region (and
 * with it the currency its answer does not name) is read from. */
export function hostOf(url: string): string {
  try {
    return new URL(url).hostname.toLowerCase();
  } catch {
    return "";
  }
}

/** A key or token setting: "<name> is not configured" when empty, and no whitespace (a key
 * pasted with its line break fails every request with a confusing 401). */
export function secretProblem(value: unknown, name: string): Problem {
  if (value === undefined || value === null || value === "") return `${name} is not configured`;
  if (typeof value !== "string") return `${name} must be a string`;
  if (/\s/.test(value)) return `${name} must not contain whitespace`;
  return undefined;
}

/** A URL setting: an http(s) URL. */
export function urlProblem(value: unknown, name: string): Problem {
  if (value === undefined || value === null || value === "") return `${name} is not configured`;
  try {
    if (!/^https?:$/.test(new URL(String(value)).protocol)) return `${name} must be an http(s) URL`;
  } catch {
    return `${name} is not a URL`;
  }
  return undefined;
}

export interface ConfigChecks<C> {
  /** The host runs it every health interval: cheap and offline, so the balance query stays the
   * real probe of a key. */
  healthCheck(config: C): { healthy: boolean; message?: string };
  /** Run when the operator saves a configuration. */
  validateConfig(config: C): true | { valid: false; message: string };
}

/** A plugin's healthCheck and validateConfig from one function that names what is wrong:
 *
 *   export const { healthCheck, validateConfig } = configChecks((c: Config) =>
 *     secretProblem(c.apiKey, "apiKey") ?? urlProblem(c.baseUrl ?? DEFAULT_BASE_URL, "baseUrl"));
 */
/** The checks of the usual provider config, an ``apiKey`` and a ``baseUrl`` (``defaultBaseUrl``
 * when it is not set):
 *
 *   export const { healthCheck, validateConfig } = keyAndUrlChecks("https://api.example.com");
 */
export function keyAndUrlChecks(defaultBaseUrl?: string): ConfigChecks<{ apiKey?: string; baseUrl?: string }> {
  return configChecks((c) => secretProblem(c.apiKey, "apiKey") ?? urlProblem(c.baseUrl ?? defaultBaseUrl, "baseUrl"));
}

export function configChecks<C>(problem: (config: C) => Problem): ConfigChecks<C> {
  return Object.freeze({
    healthCheck(config: C) {
      const p = problem(config);
      return p ? { healthy: false, message: p } : { healthy: true };
    },
    validateConfig(config: C) {
      const p = problem(config);
      return p ? { valid: false as const, message: p } : true as const;
    },
  });
}
