/**
 * OpenRouter credits, with `Authorization: Bearer <apiKey>`:
 * https://openrouter.ai/docs/api-reference/get-credits and
 * https://openrouter.ai/docs/api-reference/limits
 *
 *   GET /api/v1/credits
 *     {"data":{"total_credits":100.5,"total_usage":25.75}}
 *   GET /api/v1/key       https://openrouter.ai/docs/api/api-reference/api-keys/get-current-key
 *     {"data":{"label":"sk-or-v1-au7...890","limit":100,"limit_remaining":74.5,
 *      "limit_reset":"monthly","include_byok_in_limit":false,"usage":25.5,"usage_daily":25.5,
 *      "usage_weekly":25.5,"usage_monthly":25.5,"byok_usage":17.38,...,"is_free_tier":false,
 *      "is_management_key":false,"expires_at":"2027-12-31T23:59:59Z","rate_limit":{...}}}
 *
 *   balance = total_credits - total_usage, quota = total_credits, usedQuota = total_usage,
 *   currency USD; rawData = { credits: <credits data>, key: <key data, null if it failed> }.
 *   Both are asked at once; the key's answer is only context, so its failure alone does not
 *   fail the query.
 *
 * /credits needs a management key: an inference key gets 403 from it, and the key's own limit
 * is then the balance (balance = limit_remaining, quota = limit, usedQuota = limit -
 * limit_remaining, what counts against the limit now). `usage` is the key's spend since it was
 * made: a limit that resets (limit_reset daily, weekly or monthly) counts only this period's
 * spend (usage_daily, _weekly, _monthly; with BYOK usage when include_byok_in_limit), so usage
 * is never the used part of the limit. expiresAt = the key's expires_at (null: never). A key
 * with no limit (limit null), which is most keys, can spend whatever the account holds, which
 * that key cannot see: rather than invent a number (0 would raise a false alarm, a large one
 * hide a real one) it is shown with no balance, usedQuota its usage, and a warning in the
 * plugin's log saying to use a management key or give the key a limit (before: AUTH_ERROR,
 * a working key called bad and a failing alert raised).
 *
 * `baseUrl` may be the OpenAI-style "https://openrouter.ai/api/v1": it is not repeated.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, optionalNumber, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

const ID = "openrouter";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://openrouter.ai";

export const metadata: PluginMetadata = {
  id: ID,
  name: "OpenRouter",
  version: "1.2.0",
  apiVersion: "1.0",
  description: "OpenRouter credits from /api/v1/credits, or the key's own limit from /api/v1/key.",
  author: "Plugin Host",
  homepage: "https://openrouter.ai/docs/api-reference/get-credits",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "An OpenRouter API key (sk-or-v1-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/api\/v1$/, "");
  const init = { headers: { Authorization: `Bearer ${config.apiKey}` } };
  const [credits, key] = await Promise.allSettled([
    ctx.fetchJson(`${base}/api/v1/credits`, init),
    ctx.fetchJson(`${base}/api/v1/key`, init),
  ]);
  if (credits.status === "fulfilled") {
    const data = object(object(credits.value, "body").data, "data");
    const total = number(data.total_credits, "data.total_credits");
    const used = number(data.total_usage, "data.total_usage");
    if (key.status === "rejected") ctx.log("warn", `${ID}: /api/v1/key failed, rawData.key is null: ${key.reason}`);
    const keyData = key.status === "fulfilled" ? (key.value as { data?: unknown } | null)?.data ?? null : null;
    return {
      balance: total - used,
      currency: "USD",
      quota: total,
      usedQuota: used,
      expiresAt: expiry(keyData),
      rawData: { credits: data, key: keyData },
    };
  }
  if (!isForbidden(credits.reason)) throw credits.reason;
  if (key.status === "rejected") throw key.reason;
  const data = object(object(key.value, "key body").data, "data");
  if (data.limit === null || data.limit === undefined) {  // most keys: no limit of their own
    ctx.log("warn", `${ID}: this key cannot read the account's credits (/api/v1/credits answered 403) and has ` +
      "no limit of its own: shown with what it spent and no balance; for the balance use a management key, " +
      "or set a limit on this key");
    return {
      balance: null,
      currency: "USD",
      usedQuota: number(data.usage, "data.usage"),
      expiresAt: expiry(data),
      rawData: { credits: null, key: data },
    };
  }
  const limit = number(data.limit, "data.limit");
  const remaining = data.limit_remaining == null
    ? limit - periodUsage(data)
    : number(data.limit_remaining, "data.limit_remaining");
  return {
    balance: remaining,
    currency: "USD",
    quota: limit,
    usedQuota: limit - remaining,
    expiresAt: expiry(data),
    rawData: { credits: null, key: data },
  };
}

/** The spend that counts against a key's limit when OpenRouter does not say what is left:
 * this period's when the limit resets, plus BYOK usage when the limit includes it. */
function periodUsage(data: Record<string, unknown>): number {
  const period = { daily: "_daily", weekly: "_weekly", monthly: "_monthly" }[String(data.limit_reset)] ?? "";
  const usage = number(data[`usage${period}`], `data.usage${period}`);
  return data.include_byok_in_limit === true ? usage + (optionalNumber(data[`byok_usage${period}`]) ?? 0) : usage;
}

/** The key's expires_at (an ISO 8601 string; null: it never expires). */
function expiry(key: unknown): string | null {
  const at = (key as { expires_at?: unknown } | null)?.expires_at;
  return typeof at === "string" && at ? at : null;
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);

function isForbidden(e: unknown): boolean {
  return e instanceof PluginError && (e.details as { status?: number } | undefined)?.status === 403;
}
