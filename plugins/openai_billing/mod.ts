/**
 * Balance of an OpenAI-compatible relay (one-api, new-api and others) through the legacy
 * OpenAI billing endpoints, with `Authorization: Bearer <apiKey>`. (api.openai.com itself no
 * longer answers them for API keys.) Endpoints, as one-api documents and implements them:
 * https://github.com/songquanpeng/one-api
 *
 *   GET /v1/dashboard/billing/subscription
 *     {"object":"billing_subscription","has_payment_method":true,"hard_limit_usd":120.0,
 *      "soft_limit_usd":100.0,"system_hard_limit_usd":120.0,"access_until":1735689600}
 *   GET /v1/dashboard/billing/usage?start_date=YYYY-MM-DD&end_date=YYYY-MM-DD
 *     {"object":"list","total_usage":1234.5}                    total_usage is in cents
 *
 *   balance = hard_limit_usd - total_usage / 100, quota = hard_limit_usd,
 *   usedQuota = total_usage / 100, expiresAt = access_until (unix seconds) as ISO 8601 when
 *   non-zero, currency USD. The usage window is the 100 days up to tomorrow (UTC), the widest
 *   OpenAI allowed: relays compute usage from it, and "tomorrow" includes all of today.
 *
 *   The *_usd fields are in the site's display unit: new-api converts them with its quota
 *   display type (controller/billing.go: USD, CNY at the site's exchange rate, or raw TOKENS),
 *   which the answer does not name. currency = the `currency` config field, else USD.
 *
 *   A key with unlimited quota is answered with hard_limit_usd = 100000000 by one-api and
 *   new-api alike (controller/billing.go, GetSubscription: `if token.UnlimitedQuota { amount =
 *   100000000 }`): not a hundred million dollars but no limit, so `unlimited`, no balance and no
 *   quota, usedQuota still what was spent.
 *
 * When the subscription endpoint answers 404, the older endpoint:
 *
 *   GET /v1/dashboard/billing/credit_grants
 *     {"object":"credit_summary","total_granted":18.0,"total_used":2.5,"total_available":15.5}
 *
 *   balance = total_available, quota = total_granted, usedQuota = total_used.
 *
 * `baseUrl` is the relay's root ("https://relay.example") or its OpenAI base URL
 * ("https://relay.example/v1", as configured for an OpenAI SDK): a trailing "/v1" is not
 * repeated. Any other path prefix is kept ("https://relay.example/openai" asks
 * "https://relay.example/openai/v1/dashboard/..."). http URLs are accepted (relays on a LAN).
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "openai_billing";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.openai.com";
const DAY_MS = 86_400_000;
const USAGE_WINDOW_DAYS = 100;
/** What one-api and new-api answer as hard_limit_usd for a key with unlimited quota: exactly
 * this (a site showing quota as TOKENS answers its raw token count, 150,000,000 a real one). */
const UNLIMITED_USD = 100_000_000;

export const metadata: PluginMetadata = {
  id: ID,
  name: "OpenAI-compatible billing",
  version: "1.1.1",
  apiVersion: "1.0",
  description: "Balance of an OpenAI-compatible relay from its /v1/dashboard/billing endpoints.",
  author: "Plugin Host",
  homepage: "https://github.com/songquanpeng/one-api",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "The relay's API key (sk-...)." },
    currency: {
      type: "string",
      description: "The relay's display unit when it is not USD: CNY (or TOKENS) for a new-api site that shows quota so.",
    },
    baseUrl: {
      type: "string",
      default: DEFAULT_BASE_URL,
      description: "The relay's root or OpenAI base URL, e.g. https://relay.example/v1.",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const init = { headers: { Authorization: `Bearer ${config.apiKey}` } };
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  let subscription: Record<string, unknown>;
  try {
    subscription = answered(object(await ctx.fetchJson(`${base}/v1/dashboard/billing/subscription`, init), "body"));
  } catch (e) {
    if (!isNotFound(e)) throw e;
    return await creditGrants(base, init, ctx, config.currency || "USD");
  }
  const quota = number(subscription.hard_limit_usd, "hard_limit_usd");
  const tomorrow = Date.now() + DAY_MS;
  const window = `start_date=${day(tomorrow - USAGE_WINDOW_DAYS * DAY_MS)}&end_date=${day(tomorrow)}`;
  const usage = answered(object(await ctx.fetchJson(`${base}/v1/dashboard/billing/usage?${window}`, init), "body"));
  const used = number(usage.total_usage, "total_usage") / 100;
  const until = subscription.access_until;
  const expiresAt = typeof until === "number" && until > 0 ? new Date(until * 1000).toISOString() : null;
  if (quota === UNLIMITED_USD) {
    return { balance: null, unlimited: true, currency: config.currency || "USD", usedQuota: used, expiresAt, rawData: { subscription, usage } };
  }
  return { balance: quota - used, currency: config.currency || "USD", quota, usedQuota: used, expiresAt, rawData: { subscription, usage } };
}

async function creditGrants(base: string, init: RequestInit, ctx: Context, currency: string): Promise<BalanceResult> {
  const body = answered(object(await ctx.fetchJson(`${base}/v1/dashboard/billing/credit_grants`, init), "body"));
  return {
    balance: number(body.total_available, "total_available"),
    currency,
    quota: number(body.total_granted, "total_granted"),
    usedQuota: number(body.total_used, "total_used"),
    rawData: { creditGrants: body },
  };
}

/** Cheap and offline: the host runs it every health interval, and the balance query is the
 * real probe of the key and the relay. */
/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);

/** OpenAI-compatible relays often answer a failure with HTTP 200 and an `error` object
 * ({"error":{"message":"Incorrect API key provided","type":"invalid_request_error",
 * "code":"invalid_api_key"}}): typed like the same failure with its HTTP status. */
function answered(body: Record<string, unknown>): Record<string, unknown> {
  const error = body.error;
  if (error === null || error === undefined || error === false) return body;
  const e = (typeof error === "object" ? error : { message: String(error) }) as Record<string, unknown>;
  const message = String(e.message ?? e.code ?? "error").slice(0, 200);
  const kind = `${e.code ?? ""} ${e.type ?? ""} ${message}`;
  const type = /invalid_api_key|unauthori[sz]ed|authentication|permission|incorrect api key|令牌|无效/i.test(kind)
    ? ErrorTypes.AUTH_ERROR
    : /rate.?limit|too many requests/i.test(kind)
    ? ErrorTypes.RATE_LIMIT
    : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: the relay answered with an error: ${message}`);
}

function isNotFound(e: unknown): boolean {
  return e instanceof PluginError && e.errorType === ErrorTypes.PROVIDER_ERROR &&
    (e.details as { status?: number } | undefined)?.status === 404;
}

function day(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}
