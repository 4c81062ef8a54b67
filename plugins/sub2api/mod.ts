/**
 * Balance of one key of a sub2api relay (https://github.com/Wei-Shaw/sub2api), with
 * `Authorization: Bearer <apiKey>`: the relay's own endpoint for cc-switch,
 *
 *   GET /v1/usage
 *   - a key with a quota or rate limits ("quota_limited"):
 *     {"mode":"quota_limited","isValid":true,"status":"active",
 *      "quota":{"limit":10.0,"used":3.2,"remaining":6.8,"unit":"USD"},"remaining":6.8,"unit":"USD",
 *      "rate_limits":[{"window":"5h","limit":5.0,"used":1.2,"remaining":3.8,"reset_at":"..."}, ...],
 *      "expires_at":"2026-10-01T00:00:00Z","usage":{...},"model_stats":[]}
 *     balance = quota.remaining, quota = quota.limit, usedQuota = quota.used. Without a quota
 *     (rate limits only), the window with the least remaining: its remaining, limit and used.
 *     Neither: `unlimited`.
 *   - a key of a subscription group ("unrestricted"):
 *     {"mode":"unrestricted","isValid":true,"planName":"Claude Pro","remaining":4.0,"unit":"USD",
 *      "subscription":{"daily_usage_usd":1.0,"daily_limit_usd":5.0,"weekly_usage_usd":5.0,
 *      "weekly_limit_usd":25.0,"monthly_usage_usd":12.5,"monthly_limit_usd":null,
 *      "expires_at":"2026-10-20T00:00:00Z"}}
 *     balance = remaining (the least remaining over the daily, weekly and monthly limits that
 *     are set); quota and usedQuota = that window's limit and usage; expiresAt = the
 *     subscription's. remaining -1 (no limit set) is `unlimited`.
 *   - a wallet key ("unrestricted", and older relays, which send no mode):
 *     {"mode":"unrestricted","isValid":true,"planName":"钱包余额","remaining":66.28,"unit":"USD",
 *      "balance":66.28}
 *     balance = remaining; no quota.
 *   currency = `unit` (USD); expiresAt = expires_at (the key's) when given; rawData = the
 *   whole answer. planName is a label only (it may be Chinese) and never matched on.
 *
 * Refusals: the relay's auth answers 401 {"code":"INVALID_API_KEY","message":"Invalid API key"}
 * (AUTH_ERROR); the same shape, or {"type":"error","error":{"type":"authentication_error",...}},
 * or isValid false, answered with 200 are typed alike (AUTH_ERROR for the key, else
 * PROVIDER_ERROR). Older relays ran their billing checks on /v1/usage too: 403
 * INSUFFICIENT_BALANCE (the wallet is empty) and 429 USAGE_LIMIT_EXCEEDED are PROVIDER_ERROR
 * saying so, not a bad key or a rate limit to wait out.
 *
 * sub2api is self-hosted: `baseUrl` (the relay's root; a trailing "/v1" is dropped) must be
 * configured, like the key; until both are, queryBalance fails with NOT_CONFIGURED and sends
 * nothing.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { configChecks, parsers, type Problem, secretProblem, urlProblem } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

interface Limit {
  name: string;
  limit: number;
  used: number;
  remaining: number;
}

const ID = "sub2api";
const { object, number, array } = parsers(ID);
const AUTH = /API_KEY|USER_INACTIVE|authentication|permission|unauthori[sz]ed|invalid.*key/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "sub2api",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "Balance of a sub2api relay key (quota, subscription or wallet) from /v1/usage.",
  author: "Plugin Host",
  homepage: "https://github.com/Wei-Shaw/sub2api",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A key of the relay (sk-...)." },
    baseUrl: { type: "string", description: "The relay's root URL, e.g. https://relay.example." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  const missing = (["apiKey", "baseUrl"] as const).find((k) => !config[k]);
  if (missing) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: ${missing} is not configured`);
  const root = config.baseUrl!.replace(/\/+$/, "").replace(/\/v1$/, "");
  let answer: unknown;
  try {
    answer = await ctx.fetchJson(`${root}/v1/usage`, { headers: { Authorization: `Bearer ${config.apiKey}` } });
  } catch (e) {
    throw billingRefusal(e);
  }
  const body = refusal(object(answer, "body"));
  const currency = typeof body.unit === "string" && body.unit ? body.unit : "USD";
  const keyExpiry = typeof body.expires_at === "string" && body.expires_at ? body.expires_at : null;

  if (body.mode === "quota_limited") {
    if (body.quota != null) {
      const q = object(body.quota, "quota");
      const limit = number(q.limit, "quota.limit");
      const used = number(q.used, "quota.used");
      const remaining = q.remaining == null ? limit - used : number(q.remaining, "quota.remaining");
      return { balance: remaining, currency, quota: limit, usedQuota: used, expiresAt: keyExpiry, rawData: body };
    }
    const windows = (body.rate_limits == null ? [] : array(body.rate_limits, "rate_limits")).map((w, i) => {
      const o = object(w, `rate_limits[${i}]`);
      const limit = number(o.limit, `rate_limits[${i}].limit`);
      const used = number(o.used, `rate_limits[${i}].used`);
      const remaining = o.remaining == null ? limit - used : number(o.remaining, `rate_limits[${i}].remaining`);
      return { name: String(o.window ?? i), limit, used, remaining };
    });
    if (windows.length === 0) {
      return { balance: null, currency, unlimited: true, expiresAt: keyExpiry, rawData: body };
    }
    const w = tightest(windows);
    return { balance: w.remaining, currency, quota: w.limit, usedQuota: w.used, expiresAt: keyExpiry, rawData: body };
  }

  // "unrestricted", or an older relay's {isValid, planName, remaining, unit}
  const remaining = number(body.remaining ?? body.balance, "remaining");
  if (remaining === -1) return { balance: null, currency, unlimited: true, expiresAt: keyExpiry, rawData: body };
  const result: BalanceResult = { balance: remaining, currency, expiresAt: keyExpiry, rawData: body };
  if (body.subscription != null) {
    const sub = object(body.subscription, "subscription");
    const windows = (["daily", "weekly", "monthly"] as const).flatMap((name) => {
      if (sub[`${name}_limit_usd`] == null) return [];
      const limit = number(sub[`${name}_limit_usd`], `subscription.${name}_limit_usd`);
      const used = sub[`${name}_usage_usd`] == null ? 0 : number(sub[`${name}_usage_usd`], `subscription.${name}_usage_usd`);
      return [{ name, limit, used, remaining: limit - used }];
    });
    if (windows.length > 0) {
      const w = tightest(windows);
      result.quota = w.limit;
      result.usedQuota = w.used;
    }
    if (typeof sub.expires_at === "string" && sub.expires_at) result.expiresAt = sub.expires_at;
  }
  return result;
}

/** The window with the least remaining (the first of equals): the one that stops the key first. */
function tightest(windows: Limit[]): Limit {
  return windows.reduce((a, b) => (b.remaining < a.remaining ? b : a));
}

/** A refusal answered with HTTP 200: isValid false, the auth middleware's {"code","message"}
 * or the handlers' {"type":"error","error":{"type","message"}}. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  let kind: string, message: string;
  if (body.type === "error" && body.error !== null && typeof body.error === "object") {
    const e = body.error as Record<string, unknown>;
    kind = String(e.type ?? "");
    message = String(e.message ?? (kind || "error"));
  } else if (typeof body.code === "string" && body.remaining === undefined && body.mode === undefined) {
    kind = body.code;
    message = `${body.code}: ${String(body.message ?? "")}`;
  } else if (body.isValid === false) {
    const status = body.status === undefined ? "" : ` (status ${String(body.status)})`;
    throw new PluginError(ErrorTypes.AUTH_ERROR,
      `${ID}: the relay says this key is not valid${status}${body.invalidMessage ? `: ${String(body.invalidMessage).slice(0, 200)}` : ""}`);
  } else {
    return body;
  }
  const type = AUTH.test(`${kind} ${message}`) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: the relay refused: ${message.slice(0, 200)}`);
}

/** Older relays' billing checks on /v1/usage: an empty wallet or a used-up subscription is not
 * a bad key (403) nor a rate limit to wait out (429). */
function billingRefusal(e: unknown): unknown {
  if (!(e instanceof PluginError)) return e;
  const details = e.details as { status?: number } | undefined;
  if (/INSUFFICIENT_BALANCE/.test(e.message)) {
    return new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: the relay refuses this key for lack of balance ` +
      "(INSUFFICIENT_BALANCE: the wallet is empty; older sub2api relays answer /v1/usage so)", details);
  }
  if (/USAGE_LIMIT_EXCEEDED/.test(e.message)) {
    return new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: the relay refuses this key: its subscription's ` +
      "usage limit is used up (USAGE_LIMIT_EXCEEDED; older sub2api relays answer /v1/usage so)", details);
  }
  return e;
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = configChecks(configProblem);

function configProblem(config: Config): Problem {
  return secretProblem(config.apiKey, "apiKey") ?? urlProblem(config.baseUrl, "baseUrl");
}
