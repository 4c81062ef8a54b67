/**
 * StepFun account balance, with `Authorization: Bearer <apiKey>`:
 * https://platform.stepfun.com/docs/zh/api-reference/accounts/get
 *
 *   GET /v1/accounts
 *     {"object":"account","type":"prepaid","balance":128.0,"total_cash_balance":100.0,
 *      "total_voucher_balance":28.0}
 *
 *   balance = balance (what is available now; a postpaid account may show 0 or less). The
 *   answer names no currency: the international api.stepfun.ai bills in USD, the China
 *   api.stepfun.com in CNY. currency = the `currency` config field, else USD when baseUrl is
 *   on stepfun.ai, else CNY. No quota: total_cash_balance (topped up) and
 *   total_voucher_balance (granted) are totals, not a limit, and kept in rawData, the answer.
 *
 * Refusals: 401 {"error":{"message":"Incorrect API key provided","type":"invalid_api_key"}}
 * (AUTH_ERROR); the same answered with 200 is typed alike (AUTH_ERROR for the key, else
 * PROVIDER_ERROR).
 *
 * `baseUrl`: https://api.stepfun.com (China, the default) or https://api.stepfun.ai
 * (international); keys work on their own site only. The OpenAI-style ".../v1" is not repeated.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { hostOf, keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "stepfun";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.stepfun.com";
const AUTH = /invalid_api_key|api key|authenticat|unauthori[sz]ed|permission/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "StepFun",
  version: "1.1.0",
  apiVersion: "1.0",
  description: "StepFun account balance from /v1/accounts.",
  author: "Plugin Host",
  homepage: "https://platform.stepfun.com/docs/zh/api-reference/accounts/get",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A StepFun API key." },
    baseUrl: {
      type: "string",
      default: DEFAULT_BASE_URL,
      description: "https://api.stepfun.com (China) or https://api.stepfun.ai (international).",
    },
    currency: {
      type: "string",
      description: "The balance's currency; default USD for api.stepfun.ai, CNY for api.stepfun.com (and any other).",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  const body = refusal(object(await ctx.fetchJson(`${base}/v1/accounts`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body"));
  return {
    balance: number(body.balance, "balance"),
    currency: config.currency || (hostOf(base).endsWith("stepfun.ai") ? "USD" : "CNY"),
    rawData: body,
  };
}

/** An OpenAI-style error answered with HTTP 200. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const error = body.error;
  if (error === undefined || error === null || error === false) return body;
  const e = (typeof error === "object" ? error : { message: String(error) }) as Record<string, unknown>;
  const message = String(e.message ?? e.type ?? "error").slice(0, 200);
  const type = AUTH.test(`${e.type ?? ""} ${e.code ?? ""} ${message}`) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: StepFun answered with an error: ${message}`);
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
