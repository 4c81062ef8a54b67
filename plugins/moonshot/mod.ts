/**
 * Moonshot (Kimi) account balance, with `Authorization: Bearer <apiKey>`:
 * https://platform.moonshot.cn/docs/api/balance
 *
 *   GET /v1/users/me/balance
 *     {"code":0,"data":{"available_balance":49.58894,"voucher_balance":46.58893,
 *      "cash_balance":3.00001},"scode":"0x0","status":true}
 *
 *   balance = data.available_balance (vouchers plus cash; it may be negative when cash is
 *   owed); rawData is `data`. An answer with a code other than 0 or status false is
 *   PROVIDER_ERROR.
 *
 *   The answer names no currency: it is the site's. The international api.moonshot.ai counts
 *   in USD (https://platform.moonshot.ai/docs/api/balance: "available_balance ... float USD"),
 *   the China api.moonshot.cn in CNY (https://platform.kimi.com/docs/api/balance.md: "单位：人民币元").
 *   currency = the `currency` config field, else USD when baseUrl is on moonshot.ai, else CNY.
 *
 * `baseUrl` may be the OpenAI-style "https://api.moonshot.cn/v1": it is not repeated.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { hostOf, keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "moonshot";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.moonshot.cn";

export const metadata: PluginMetadata = {
  id: ID,
  name: "Moonshot (Kimi)",
  version: "1.1.0",
  apiVersion: "1.0",
  description: "Moonshot / Kimi account balance from /v1/users/me/balance.",
  author: "Plugin Host",
  homepage: "https://platform.moonshot.cn/docs/api/balance",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A Moonshot API key (sk-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL, description: "https://api.moonshot.ai internationally." },
    currency: {
      type: "string",
      description: "The balance's currency; default USD for api.moonshot.ai, CNY for api.moonshot.cn (and any other).",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  const body = object(await ctx.fetchJson(`${base}/v1/users/me/balance`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body");
  if (body.status === false || (body.code !== undefined && body.code !== 0)) {
    const why = String((body.error as { message?: unknown } | undefined)?.message ?? body.message ?? "").slice(0, 200);
    throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: code ${body.code}: ${why}`);
  }
  const data = object(body.data, "data");
  return {
    balance: number(data.available_balance, "data.available_balance"),
    currency: config.currency || (hostOf(base).endsWith("moonshot.ai") ? "USD" : "CNY"),
    rawData: data,
  };
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
