/**
 * Balance of a New API (or One API) account, read from the user's own record with the system
 * access token from the settings page (not an sk- API key) and the user's numeric id:
 * https://docs.newapi.pro
 *
 *   GET /api/user/self     Authorization: Bearer <accessToken>, New-Api-User: <userId>
 *     {"success":true,"message":"","data":{"id":1,"username":"alice","quota":500000000,
 *      "used_quota":1250000,"request_count":42,"group":"default"}}
 *
 *   Quota is counted in units of 500,000 per USD (the servers' default QuotaPerUnit):
 *   balance = quota / 500000, usedQuota = used_quota / 500000,
 *   quota = (quota + used_quota) / 500000, currency USD. rawData is `data`.
 *
 * These servers answer a bad token with 200 and {"success":false,"message":"..."}: a message
 * about the token, logging in or permissions (English or Chinese) is AUTH_ERROR, any other
 * PROVIDER_ERROR. One API ignores New-Api-User and takes the token with or without "Bearer ".
 *
 * There is no public default server, so `baseUrl` (the site's root; a trailing "/v1", the
 * OpenAI base URL, is dropped) must be configured, like the token and the user id; until
 * they are, queryBalance fails with AUTH_ERROR and sends nothing.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";

interface Config {
  accessToken?: string;
  userId?: string;
  baseUrl?: string;
}

const ID = "newapi";
const QUOTA_PER_USD = 500_000;
const AUTH_MESSAGE = /token|log ?in|logged|permission|unauthori[sz]ed|forbidden|New-Api-User|无权|未登录|权限|令牌/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "New API",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "Balance of a New API / One API account from /api/user/self.",
  author: "Plugin Host",
  homepage: "https://docs.newapi.pro",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    accessToken: {
      type: "string",
      secret: true,
      description: "The system access token from the user's settings page (not an sk- key).",
    },
    userId: { type: "string", description: "The user's numeric id (sent as New-Api-User)." },
    baseUrl: { type: "string", description: "The server's root URL, e.g. https://relay.example." },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  const missing = (["accessToken", "userId", "baseUrl"] as const).find((k) => !config[k]);
  if (missing) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: ${missing} is not configured`);
  const url = config.baseUrl!.replace(/\/+$/, "").replace(/\/v1$/, "") + "/api/user/self";
  const body = object(await ctx.fetchJson(url, {
    headers: { Authorization: `Bearer ${config.accessToken}`, "New-Api-User": config.userId! },
  }), "body");
  if (body.success === false) {
    const message = typeof body.message === "string" && body.message ? body.message.slice(0, 200) : "no message";
    const type = AUTH_MESSAGE.test(message) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
    throw new PluginError(type, `${ID}: the server refused: ${message}`);
  }
  const data = object(body.data, "data");
  const remaining = number(data.quota, "data.quota");
  const used = number(data.used_quota, "data.used_quota");
  // A user record carries no secret, but never pass one on should a server include it.
  const { access_token: _, ...rawData } = data;
  return {
    balance: remaining / QUOTA_PER_USD,
    currency: "USD",
    quota: (remaining + used) / QUOTA_PER_USD,
    usedQuota: used / QUOTA_PER_USD,
    rawData,
  };
}

/** Cheap and offline: the host runs it every health interval, and the balance query is the
 * real probe of the token and the server. */
export function healthCheck(config: Config): { healthy: boolean; message?: string } {
  const problem = configProblem(config);
  return problem ? { healthy: false, message: problem } : { healthy: true };
}

export function validateConfig(config: Config): true | { valid: false; message: string } {
  const problem = configProblem(config);
  return problem ? { valid: false, message: problem } : true;
}

function configProblem(config: Config): string | undefined {
  if (!config.accessToken) return "accessToken is not configured";
  if (/\s/.test(config.accessToken)) return "accessToken must not contain whitespace";
  if (!config.userId) return "userId is not configured";
  if (!/^\d+$/.test(config.userId)) return "userId must be the user's numeric id";
  if (!config.baseUrl) return "baseUrl is not configured";
  try {
    if (!/^https?:$/.test(new URL(config.baseUrl).protocol)) return "baseUrl must be an http(s) URL";
  } catch {
    return "baseUrl is not a URL";
  }
}

function object(value: unknown, field: string): Record<string, unknown> {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) return value as Record<string, unknown>;
  throw new PluginError(ErrorTypes.PARSE_ERROR, `${ID}: ${field} is not an object`);
}

function number(value: unknown, field: string): number {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n === "number" && Number.isFinite(n)) return n;
  throw new PluginError(ErrorTypes.PARSE_ERROR, `${ID}: ${field} is missing or not a number`);
}
