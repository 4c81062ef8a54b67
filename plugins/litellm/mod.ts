/**
 * The budget of one LiteLLM proxy virtual key, with `Authorization: Bearer <apiKey>`:
 * https://docs.litellm.ai/docs/proxy/virtual_keys (route /key/info, `info_key_fn`)
 *
 *   GET /key/info            no ?key=: the key of the Authorization header itself
 *     {"key":"88dc28d0...","info":{"key_alias":"my-laptop","spend":3.2145,"max_budget":10.0,
 *      "budget_duration":"30d","budget_reset_at":"2026-10-01T00:00:00+00:00",
 *      "expires":"2026-12-31T00:00:00+00:00","blocked":null,"team_id":null,
 *      "litellm_budget_table":null, ...}}
 *
 *   Amounts are USD floats; LiteLLM names no currency. usedQuota = info.spend (since the last
 *   budget reset, budget_reset_at, when the key has a budget_duration); quota = info.max_budget,
 *   else the max_budget of the key's budget (info.litellm_budget_table); balance = quota -
 *   spend, negative when overspent (spend is checked after the fact). A key with no budget
 *   (null) is `unlimited`: no balance, its spend as usedQuota. expiresAt = info.expires (null:
 *   never). rawData = info ("key", a hash of the key, is left out). A key of a team is also
 *   held to the team's budget, which /key/info does not give.
 *
 * Errors come with their HTTP status (401 {"error":{"message":"Authentication Error, ...",
 * "type":"token_not_found_in_db","code":"401"}}). One answered with 200 (a proxy in front)
 * is typed the same: AUTH_ERROR when its code is 401/403 or its type or message is about the
 * key, else PROVIDER_ERROR. A blocked key (info.blocked true) is AUTH_ERROR.
 *
 * LiteLLM is self-hosted: `baseUrl` (the proxy's root, e.g. http://litellm.lan:4000; a
 * trailing "/v1", the OpenAI base URL, is dropped) must be configured, like the key; until
 * both are, queryBalance fails with NOT_CONFIGURED and sends nothing.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { configChecks, parsers, type Problem, secretProblem, urlProblem } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

const ID = "litellm";
const { object, number } = parsers(ID);
const AUTH = /token_not_found|auth|invalid.*key|key.*(invalid|expired|blocked)|unauthori[sz]ed|forbidden|not allowed/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "LiteLLM",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "The budget of a LiteLLM proxy virtual key from /key/info.",
  author: "Plugin Host",
  homepage: "https://docs.litellm.ai/docs/proxy/virtual_keys",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A LiteLLM virtual key (sk-...), or the master key." },
    baseUrl: { type: "string", description: "The proxy's root URL, e.g. http://litellm.lan:4000." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  const missing = (["apiKey", "baseUrl"] as const).find((k) => !config[k]);
  if (missing) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: ${missing} is not configured`);
  const root = config.baseUrl!.replace(/\/+$/, "").replace(/\/v1$/, "");
  const body = refusal(object(await ctx.fetchJson(`${root}/key/info`, {
    headers: { Authorization: `Bearer ${config.apiKey}` },
  }), "body"));
  const { token: _, ...info } = object(body.info, "info");
  if (info.blocked === true) throw new PluginError(ErrorTypes.AUTH_ERROR, `${ID}: this key is blocked`);
  const spend = number(info.spend, "info.spend");
  const table = info.litellm_budget_table;
  const tableBudget = table !== null && typeof table === "object" ? (table as Record<string, unknown>).max_budget : null;
  const budget = info.max_budget != null
    ? number(info.max_budget, "info.max_budget")
    : tableBudget != null
    ? number(tableBudget, "info.litellm_budget_table.max_budget")
    : null;
  const expiresAt = typeof info.expires === "string" && info.expires ? info.expires : null;
  if (budget === null) {
    return { balance: null, currency: "USD", unlimited: true, usedQuota: spend, expiresAt, rawData: info };
  }
  return { balance: budget - spend, currency: "USD", quota: budget, usedQuota: spend, expiresAt, rawData: info };
}

/** An error answered with HTTP 200: {"error":{"message","type","code"}} or FastAPI's {"detail"}. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const error = body.error ?? (body.info === undefined ? body.detail : undefined);
  if (error === undefined || error === null || error === false) return body;
  const e = (typeof error === "object" ? error : { message: String(error) }) as Record<string, unknown>;
  const message = String(e.message ?? e.type ?? "error").slice(0, 200);
  const type = /^(401|403)$/.test(String(e.code ?? "")) || AUTH.test(`${e.type ?? ""} ${message}`)
    ? ErrorTypes.AUTH_ERROR
    : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: the proxy answered with an error: ${message}`);
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = configChecks(configProblem);

function configProblem(config: Config): Problem {
  return secretProblem(config.apiKey, "apiKey") ?? urlProblem(config.baseUrl, "baseUrl");
}
