/**
 * Novita AI account balance, with `Authorization: Bearer <apiKey>`:
 * https://novita.ai/docs/api-reference/basic-get-user-balance
 *
 *   GET /openapi/v1/billing/balance/detail
 *     {"availableBalance":"1000000","cashBalance":"800000","creditLimit":"200000",
 *      "pendingCharges":"0","outstandingInvoices":"0"}
 *
 *   Every amount is a string of an integer in units of 1/10,000 USD (10000 is $1.00).
 *   balance = availableBalance / 10000 (what can be spent now: the cash balance plus the
 *   credit line), currency USD. No quota: the account is a prepaid wallet. rawData is the
 *   answer as given (in 1/10,000 USD: cashBalance the cash left, creditLimit the credit line,
 *   outstandingInvoices what is owed).
 *
 * The balance needs a key of a team member with the Balance permission (Owner, Admin or
 * Billing): another member's key, good for inference, gets 401 or 403 here, AUTH_ERROR saying
 * so. An error answered with 200 ({"code":401,"reason":"INVALID_API_KEY","message":"invalid
 * api-key"}) is typed alike: AUTH_ERROR for the key, else PROVIDER_ERROR.
 *
 * `baseUrl` may be the OpenAI-style "https://api.novita.ai/v3/openai" (or ".../openai",
 * ".../v1"): that suffix is dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

const ID = "novita";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.novita.ai";
const UNITS_PER_USD = 10_000;
const AUTH = /INVALID_API_KEY|API.?KEY|UNAUTHORI[SZ]ED|UNAUTHENTICATED|FORBIDDEN|PERMISSION/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "Novita AI",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "Novita AI account balance from /openapi/v1/billing/balance/detail.",
  author: "Plugin Host",
  homepage: "https://novita.ai/docs/api-reference/basic-get-user-balance",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: {
      type: "string",
      secret: true,
      description: "A Novita API key (sk_...) of a member with the Balance permission (Owner, Admin or Billing).",
    },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/((v3\/)?openai|v1|v3)$/, "");
  let answer: unknown;
  try {
    answer = await ctx.fetchJson(`${base}/openapi/v1/billing/balance/detail`, {
      headers: { Authorization: `Bearer ${config.apiKey}`, "Content-Type": "application/json" },
    });
  } catch (e) {
    if (e instanceof PluginError && e.errorType === ErrorTypes.AUTH_ERROR) {
      throw new PluginError(ErrorTypes.AUTH_ERROR, `${e.message} (the balance needs a key of a member with ` +
        "the Balance permission: Owner, Admin or Billing)", e.details);
    }
    throw e;
  }
  const body = refusal(object(answer, "body"));
  return {
    balance: number(body.availableBalance, "availableBalance") / UNITS_PER_USD,
    currency: "USD",
    rawData: body,
  };
}

/** Novita's error envelope answered with 200: {"code":<status>,"reason":"...","message":"..."}. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const code = body.code;
  const failed = typeof body.reason === "string" ||
    (body.availableBalance === undefined && code !== undefined && code !== 0 && code !== 200);
  if (!failed) return body;
  const message = String(body.message ?? body.reason ?? "no message").slice(0, 200);
  const type = code === 401 || code === 403 || AUTH.test(`${body.reason ?? ""} ${message}`)
    ? ErrorTypes.AUTH_ERROR
    : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: code ${code}${body.reason ? ` ${body.reason}` : ""}: ${message}`);
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
