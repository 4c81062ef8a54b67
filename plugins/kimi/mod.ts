/**
 * Kimi For Coding (Moonshot) plan usage, with `Authorization: Bearer <apiKey>` (a Kimi Code key,
 * sk-kimi-...), as the official client asks it (kimi-cli's /usage,
 * https://github.com/MoonshotAI/kimi-cli):
 *
 *   GET /coding/v1/usages
 *     {"usage":{"limit":"100","used":"15","remaining":"85","resetTime":"2026-09-30T10:10:16.485718Z"},
 *      "limits":[{"window":{"duration":300,"timeUnit":"TIME_UNIT_MINUTE"},
 *                 "detail":{"limit":"100","used":"20","remaining":"80","resetTime":"2026-09-24T15:10:16.485718Z"}}],
 *      "usages":{"limit_5h":{"used_ratio":0,...},"limit_7d":{...}},"booster_wallet":{"balance":"0"},
 *      "user":{"userId":"u1","region":"REGION_OVERSEA","membership":{"level":"LEVEL_BASIC"}}}
 *
 *   `usage` is the weekly quota; `limits` the rolling windows (duration × timeUnit; 300
 *   minutes is the 5-hour one). Counts are decimal strings (or numbers), and a count of 0 is
 *   left out (proto3): a missing `used` is limit - remaining, a missing `remaining` limit - used.
 *
 *   The headline is the shortest rolling window (the 5-hour one), else the weekly `usage`:
 *   balance = its remaining, quota = its limit, usedQuota = its used, in Kimi's own quota
 *   units, which it does not name: currency null. expiresAt is null: a reset is not an
 *   expiry. rawData = { plan: user.membership.level, windows: every window as {name ("5 hours",
 *   "weekly"), headline, limit, used, remaining, resetsAt}, answer: the whole answer }.
 *
 * Refusals: 401 {"error":{"message":"Invalid Authentication","type":"invalid_authentication_error"}}
 * (AUTH_ERROR); the same answered with 200 is typed alike (AUTH_ERROR for authentication, else
 * PROVIDER_ERROR). A 404 means the key is not a Kimi For Coding key (or baseUrl is not the
 * coding one): PROVIDER_ERROR saying so.
 *
 * `baseUrl` is the coding base URL, https://api.kimi.com/coding (one host for every region);
 * a trailing "/v1" is dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, optionalNumber, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

interface Counter {
  limit: number;
  used: number;
  remaining: number;
  resetsAt: string | null;
}

const ID = "kimi";
const { object, number, array } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.kimi.com/coding";
const MINUTES: Record<string, number> = {
  TIME_UNIT_SECOND: 1 / 60, TIME_UNIT_MINUTE: 1, TIME_UNIT_HOUR: 60, TIME_UNIT_DAY: 1440,
};
const AUTH = /authenticat|unauthori[sz]ed|invalid.*key|api key|expired|permission/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "Kimi For Coding",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "Kimi For Coding plan usage (the 5-hour window's quota left) from /coding/v1/usages.",
  author: "Plugin Host",
  homepage: "https://github.com/MoonshotAI/kimi-cli",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A Kimi For Coding API key (sk-kimi-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL, description: "The Kimi Code base URL." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  let answer: unknown;
  try {
    answer = await ctx.fetchJson(`${base}/v1/usages`, {
      headers: { Authorization: `Bearer ${config.apiKey}`, Accept: "application/json" },
    });
  } catch (e) {
    const status = (e as { details?: { status?: number } })?.details?.status;
    if (e instanceof PluginError && status === 404) {
      throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: ${base}/v1/usages answered 404: usage is only ` +
        "available for a Kimi For Coding key, with baseUrl = https://api.kimi.com/coding", { status });
    }
    throw e;
  }
  const body = refusal(object(answer, "body"));
  const windows = (body.limits == null ? [] : array(body.limits, "limits")).map((item, i) => {
    const o = object(item, `limits[${i}]`);
    const window = o.window !== null && typeof o.window === "object" ? o.window as Record<string, unknown> : {};
    const minutes = optionalNumber(window.duration) === null || MINUTES[String(window.timeUnit)] === undefined
      ? Infinity
      : optionalNumber(window.duration)! * MINUTES[String(window.timeUnit)];
    const detail = o.detail == null ? o : object(o.detail, `limits[${i}].detail`);
    return { name: windowName(minutes), minutes, ...counter(detail, `limits[${i}].detail`) };
  });
  const weekly = body.usage == null && windows.length > 0 ? null : counter(object(body.usage, "usage"), "usage");
  const first = windows.reduce((best, w, i) => (w.minutes < windows[best].minutes ? i : best), 0);
  const headIndex = windows.length > 0 ? first : -1;
  const head = headIndex >= 0 ? windows[headIndex] : weekly!;
  const all = [
    ...windows.map(({ minutes: _, ...w }, i) => ({ ...w, headline: i === headIndex })),
    ...(weekly ? [{ name: "weekly", ...weekly, headline: headIndex < 0 }] : []),
  ];
  const membership = (body.user as { membership?: { level?: unknown } } | undefined)?.membership;
  const plan = typeof membership?.level === "string" ? membership.level : null;
  return {
    balance: head.remaining,
    currency: null,
    quota: head.limit,
    usedQuota: head.used,
    expiresAt: null,
    rawData: { plan, windows: all, answer: body },
  };
}

/** {limit, used, remaining, resetTime}, a count of 0 left out. */
function counter(o: Record<string, unknown>, field: string): Counter {
  const limit = number(o.limit, `${field}.limit`);
  const used = o.used == null
    ? (o.remaining == null ? 0 : limit - number(o.remaining, `${field}.remaining`))
    : number(o.used, `${field}.used`);
  const remaining = o.remaining == null ? limit - used : number(o.remaining, `${field}.remaining`);
  const resetsAt = typeof o.resetTime === "string" && o.resetTime ? o.resetTime : null;
  return { limit, used, remaining, resetsAt };
}

function windowName(minutes: number): string | null {
  if (!Number.isFinite(minutes)) return null;
  const [n, unit] = minutes % 1440 === 0 ? [minutes / 1440, "day"] : minutes % 60 === 0 ? [minutes / 60, "hour"] : [minutes, "minute"];
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

/** An OpenAI-style error answered with HTTP 200. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const error = body.error;
  if (error === undefined || error === null || error === false) return body;
  const e = (typeof error === "object" ? error : { message: String(error) }) as Record<string, unknown>;
  const message = String(e.message ?? e.type ?? "error").slice(0, 200);
  const type = AUTH.test(`${e.type ?? ""} ${message}`) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: Kimi answered with an error: ${message}`);
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
