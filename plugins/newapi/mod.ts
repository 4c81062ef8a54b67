/**
 * Balance of a New API (or One API) station, by either of its two documented paths
 * (https://docs.newapi.pro):
 *
 * - the account, with the system access token from the settings page and the user's id:
 *     GET /api/user/self     Authorization: Bearer <accessToken>, New-Api-User: <userId>
 *     {"success":true,"message":"","data":{"id":1,"username":"alice","quota":500000000,
 *      "used_quota":1250000,"request_count":42,"group":"default"}}
 *   balance = quota / 500000, usedQuota = used_quota / 500000, quota = their sum;
 * - one relay key (an sk- key, what most users of a station have):
 *     GET /api/usage/token   Authorization: Bearer <apiKey>
 *     {"code":true,"message":"ok","data":{"object":"token_usage","name":"Default Token",
 *      "total_granted":1000000,"total_used":12345,"total_available":987655,
 *      "unlimited_quota":false,"expires_at":0}}
 *   balance = total_available / 500000 (none, and `unlimited`, for an unlimited key),
 *   usedQuota = total_used / 500000, quota = total_granted / 500000, expiresAt from expires_at
 *   (seconds; 0 is never).
 *
 * The account path is used when accessToken and userId are set, else the key path. Quota is
 * counted in units of 500,000 per USD (the servers' default QuotaPerUnit), currency USD; a site
 * whose admin set another QuotaPerUnit, or reckons in CNY, is configured with quotaPerUnit and
 * currency.
 * These servers answer a bad token with 200 and {"success":false,"message":"..."} (or 401): a
 * message about the token, logging in or permissions (English or Chinese) is AUTH_ERROR, any
 * other PROVIDER_ERROR. One API ignores New-Api-User and takes the token with or without "Bearer ".
 *
 * There is no public default server, so `baseUrl` (the site's root; a trailing "/v1", the
 * OpenAI base URL, is dropped) must be configured, like a key; until they are, queryBalance
 * fails with NOT_CONFIGURED and sends nothing.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { configChecks, parsers, type Problem, secretProblem, urlProblem } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  accessToken?: string;
  userId?: string;
  baseUrl?: string;
  quotaPerUnit?: number;
  currency?: string;
}

const ID = "newapi";
const { object, number } = parsers(ID);
const QUOTA_PER_USD = 500_000;
const AUTH_MESSAGE = /token|log ?in|logged|permission|unauthori[sz]ed|forbidden|New-Api-User|无权|未登录|权限|令牌/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "New API",
  version: "1.2.0",
  apiVersion: "1.0",
  description: "Balance of a New API / One API station: an account (/api/user/self) or one sk- key (/api/usage/token).",
  author: "Plugin Host",
  homepage: "https://docs.newapi.pro",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: {
      type: "string",
      secret: true,
      description: "A relay key (sk-...): its own quota, from /api/usage/token. Or give accessToken and userId.",
    },
    accessToken: {
      type: "string",
      secret: true,
      description: "The system access token from the user's settings page, for the whole account.",
    },
    userId: { type: "string", description: "The user's numeric id (sent as New-Api-User)." },
    baseUrl: { type: "string", description: "The server's root URL, e.g. https://relay.example." },
    quotaPerUnit: {
      type: "number", default: QUOTA_PER_USD, minimum: 1,
      description: "The site's QuotaPerUnit: quota units to one unit of its currency (500000 unless its admin changed it).",
    },
    currency: { type: "string", default: "USD", description: "The currency the site reckons its quota in (USD, CNY)." },
  },
};

const ACCOUNT = (config: Config) => Boolean(config.accessToken || config.userId);

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  const needed = ACCOUNT(config) ? (["accessToken", "userId", "baseUrl"] as const) : (["apiKey", "baseUrl"] as const);
  const missing = needed.find((k) => !config[k]);
  if (missing) {
    const what = missing === "apiKey" ? "apiKey (an sk- key; or accessToken and userId)" : missing;
    throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: ${what} is not configured`);
  }
  const root = config.baseUrl!.replace(/\/+$/, "").replace(/\/v1$/, "");
  const site = { perUnit: config.quotaPerUnit || QUOTA_PER_USD, currency: config.currency || "USD" };
  if (!ACCOUNT(config)) return await byKey(root, config.apiKey!, site, ctx);
  const body = refusal(object(await ctx.fetchJson(root + "/api/user/self", {
    headers: { Authorization: `Bearer ${config.accessToken}`, "New-Api-User": config.userId! },
  }), "body"));
  const data = object(body.data, "data");
  const remaining = number(data.quota, "data.quota");
  const used = number(data.used_quota, "data.used_quota");
  // A user record carries no secret, but never pass one on should a server include it.
  const { access_token: _, ...rawData } = data;
  return {
    balance: remaining / site.perUnit,
    currency: site.currency,
    quota: (remaining + used) / site.perUnit,
    usedQuota: used / site.perUnit,
    rawData,
  };
}

/** One key's own quota (GET /api/usage/token). */
async function byKey(root: string, apiKey: string, site: { perUnit: number; currency: string },
                     ctx: Context): Promise<BalanceResult> {
  const body = refusal(object(await ctx.fetchJson(root + "/api/usage/token", {
    headers: { Authorization: `Bearer ${apiKey}` },
  }), "body"));
  const data = object(body.data, "data");
  const used = number(data.total_used, "data.total_used");
  const unlimited = data.unlimited_quota === true;
  const expires = typeof data.expires_at === "number" && data.expires_at > 0 ? data.expires_at * 1000 : null;
  const result: BalanceResult = {
    balance: unlimited ? null : number(data.total_available, "data.total_available") / site.perUnit,
    currency: site.currency,
    usedQuota: used / site.perUnit,
    expiresAt: expires,
    rawData: data,
  };
  if (unlimited) result.unlimited = true;
  else if (data.total_granted != null) result.quota = number(data.total_granted, "data.total_granted") / site.perUnit;
  return result;
}

/** A body that says the server refused (200 with success: false, or code: false). */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  if (body.success === false || body.code === false) {
    const message = typeof body.message === "string" && body.message ? body.message.slice(0, 200) : "no message";
    const type = AUTH_MESSAGE.test(message) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
    throw new PluginError(type, `${ID}: the server refused: ${message}`);
  }
  return body;
}

/** Cheap and offline: the host runs it every health interval, and the balance query is the
 * real probe of the token and the server. */
/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = configChecks(configProblem);

function configProblem(config: Config): Problem {
  const who = ACCOUNT(config)
    ? secretProblem(config.accessToken, "accessToken") ?? secretProblem(config.userId, "userId") ??
      (/^\d+$/.test(config.userId!) ? undefined : "userId must be the user's numeric id")
    : secretProblem(config.apiKey, "apiKey")?.replace("apiKey is", "apiKey (an sk- key; or accessToken and userId) is");
  return who ?? urlProblem(config.baseUrl, "baseUrl");
}
