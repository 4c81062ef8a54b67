/**
 * DeepSeek account balance, with `Authorization: Bearer <apiKey>`:
 * https://api-docs.deepseek.com/api/get-user-balance
 *
 *   GET /user/balance
 *     {"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",
 *      "granted_balance":"10.00","topped_up_balance":"100.00"}]}
 *
 *   The amounts are strings. An account may hold several currencies: the entry named by the
 *   optional `currency` config field, else the first. balance = its total_balance, currency =
 *   its currency; rawData is the whole answer (every currency, granted and topped-up parts,
 *   is_available). No quota: DeepSeek is prepaid.
 *
 * `baseUrl` may be the OpenAI-style "https://api.deepseek.com/v1": the balance endpoint is at
 * the root, so a trailing "/v1" is dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "deepseek";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.deepseek.com";

export const metadata: PluginMetadata = {
  id: ID,
  name: "DeepSeek",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "DeepSeek account balance from /user/balance.",
  author: "Plugin Host",
  homepage: "https://api-docs.deepseek.com/api/get-user-balance",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A DeepSeek API key (sk-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL },
    currency: { type: "string", description: "Which balance to report (CNY, USD); default the first." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  const body = object(await ctx.fetchJson(`${base}/user/balance`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body");
  const infos = body.balance_infos;
  if (!Array.isArray(infos) || infos.length === 0) {
    throw new PluginError(ErrorTypes.PARSE_ERROR, `${ID}: balance_infos is missing or empty`);
  }
  const entries = infos.map((info, i) => object(info, `balance_infos[${i}]`));
  const wanted = config.currency?.trim().toUpperCase();
  const index = wanted ? entries.findIndex((e) => String(e.currency).toUpperCase() === wanted) : 0;
  if (index < 0) {
    const held = entries.map((e) => String(e.currency)).join(", ");
    throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: no balance in ${wanted} (the account holds ${held})`);
  }
  const entry = entries[index];
  if (typeof entry.currency !== "string" || !entry.currency) {
    throw new PluginError(ErrorTypes.PARSE_ERROR, `${ID}: balance_infos[${index}].currency is missing`);
  }
  return {
    balance: number(entry.total_balance, `balance_infos[${index}].total_balance`),
    currency: entry.currency,
    rawData: body,
  };
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
