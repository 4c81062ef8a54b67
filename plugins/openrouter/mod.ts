/**
 * OpenRouter credits, with `Authorization: Bearer <apiKey>`:
 * https://openrouter.ai/docs/api-reference/get-credits and
 * https://openrouter.ai/docs/api-reference/limits
 *
 *   GET /api/v1/credits
 *     {"data":{"total_credits":100.5,"total_usage":25.75}}
 *   GET /api/v1/key
 *     {"data":{"label":"sk-or-v1-abc...","limit":null,"usage":25.75,"limit_remaining":null,
 *      "is_free_tier":false,"rate_limit":{"requests":10,"interval":"10s"}}}
 *
 *   balance = total_credits - total_usage, quota = total_credits, usedQuota = total_usage,
 *   currency USD; rawData = { credits: <credits data>, key: <key data, null if it failed> }.
 *   Both are asked at once; the key's answer is only context, so its failure alone does not
 *   fail the query.
 *
 * A key without access to the account's credits gets 403 from /credits: the key's own limit
 * is then the balance (balance = limit_remaining, quota = limit, usedQuota = usage). A key
 * with no limit (limit null) can spend whatever the account holds, which that key cannot
 * see: rather than invent a number (0 would raise a false alarm, a large one hide a real
 * one), the query fails with AUTH_ERROR (details.status 403) saying to use a key with credit
 * access or to give this key a limit.
 *
 * `baseUrl` may be the OpenAI-style "https://openrouter.ai/api/v1": it is not repeated.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, parsers } from "@plugin-host/kit";

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
  version: "1.0.0",
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
    return { balance: total - used, currency: "USD", quota: total, usedQuota: used, rawData: { credits: data, key: keyData } };
  }
  if (!isForbidden(credits.reason)) throw credits.reason;
  if (key.status === "rejected") throw key.reason;
  const data = object(object(key.value, "key body").data, "data");
  if (data.limit === null || data.limit === undefined) {
    throw new PluginError(ErrorTypes.AUTH_ERROR, `${ID}: this key cannot read the account's credits ` +
      "(/api/v1/credits answered 403) and has no limit of its own: use a key with credit access, " +
      "or set a limit on this key", { status: 403 });
  }
  const limit = number(data.limit, "data.limit");
  const usage = number(data.usage, "data.usage");
  const remaining = data.limit_remaining == null ? limit - usage : number(data.limit_remaining, "data.limit_remaining");
  return { balance: remaining, currency: "USD", quota: limit, usedQuota: usage, rawData: { credits: null, key: data } };
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);

function isForbidden(e: unknown): boolean {
  return e instanceof PluginError && (e.details as { status?: number } | undefined)?.status === 403;
}
