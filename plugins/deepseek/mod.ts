/**
 * DeepSeek account balance, with `Authorization: Bearer <apiKey>`:
 * https://api-docs.deepseek.com/api/get-user-balance
 *
 *   GET /user/balance
 *     {"is_available":true,"balance_infos":[{"currency":"CNY","total_balance":"110.00",
 *      "granted_balance":"10.00","topped_up_balance":"100.00"}]}
 *
 *   The amounts are strings. An account may hold several currencies, one entry each, and
 *   DeepSeek does not keep their order: the same account answers [CNY 81.69, USD 0.00] and
 *   then [USD 0.00, CNY 81.69] (https://github.com/wssfk12138/dsh-damage-pulse/issues/2,
 *   https://github.com/steipete/CodexBar/issues/873, cc-switch issue #6642). Which entry: the
 *   one named by the optional `currency` config field; else a funded one (total_balance > 0)
 *   before an empty one, CNY before USD before any other: the same entry whatever the order.
 *   balance = its total_balance, currency = its currency; rawData is the whole answer (every
 *   currency, granted and topped-up parts, is_available). No quota: DeepSeek is prepaid.
 *   {"is_available":false,"balance_infos":[]} (an account never topped up, as public clients'
 *   fixtures have it) is a balance of 0 marked invalid, saying why.
 *
 * `baseUrl` may be the OpenAI-style "https://api.deepseek.com/v1": the balance endpoint is at
 * the root, so a trailing "/v1" is dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, optionalNumber, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "deepseek";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.deepseek.com";
/** The currencies DeepSeek bills in, in the order one is shown when several are funded. */
const HOME = ["CNY", "USD"];

export const metadata: PluginMetadata = {
  id: ID,
  name: "DeepSeek",
  version: "1.2.0",
  apiVersion: "1.0",
  description: "DeepSeek account balance from /user/balance.",
  author: "Plugin Host",
  homepage: "https://api-docs.deepseek.com/api/get-user-balance",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A DeepSeek API key (sk-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL },
    currency: { type: "string", description: "Which balance to report (CNY, USD); default a funded one, CNY first." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  const body = object(await ctx.fetchJson(`${base}/user/balance`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body");
  const infos = body.balance_infos;
  if (body.is_available === false && Array.isArray(infos) && infos.length === 0) {
    // an account that never topped up: nothing to call with, and nothing garbled
    return {
      balance: 0, currency: config.currency?.trim().toUpperCase() || null, invalid: true,
      invalidMessage: `${ID}: the account holds no balance (is_available false): top it up to make API calls`,
      rawData: body,
    };
  }
  if (!Array.isArray(infos) || infos.length === 0) {
    throw new PluginError(ErrorTypes.PARSE_ERROR, `${ID}: balance_infos is missing or empty`);
  }
  const entries = infos.map((info, i) => object(info, `balance_infos[${i}]`));
  const wanted = config.currency?.trim().toUpperCase();
  const index = wanted ? entries.findIndex((e) => String(e.currency).toUpperCase() === wanted) : preferred(entries);
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

/** The index of the entry to show when no currency is configured: funded first, then CNY, USD,
 * any other by name, so that the answer's order (which DeepSeek does not keep) changes nothing. */
function preferred(entries: Record<string, unknown>[]): number {
  const rank = (e: Record<string, unknown>): [number, number, string] => {
    const currency = String(e.currency ?? "").toUpperCase();
    return [(optionalNumber(e.total_balance) ?? 0) > 0 ? 0 : 1, HOME.indexOf(currency) + 1 || HOME.length + 1, currency];
  };
  let best = 0;
  for (let i = 1; i < entries.length; i++) {
    const [a, b] = [rank(entries[i]), rank(entries[best])];
    if (a[0] < b[0] || (a[0] === b[0] && (a[1] < b[1] || (a[1] === b[1] && a[2] < b[2])))) best = i;
  }
  return best;
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
