/**
 * SiliconFlow account balance, with `Authorization: Bearer <apiKey>`:
 * https://docs.siliconflow.cn/cn/api-reference/userinfo/get-user-info
 *
 *   GET /v1/user/info
 *     {"code":20000,"message":"OK","status":true,"data":{"id":"userid","name":"username",
 *      "email":"a@b.c","balance":"0.88","chargeBalance":"88.00","totalBalance":"88.88",
 *      "status":"normal"}}
 *
 *   The amounts are strings: balance = data.totalBalance (the granted balance plus the
 *   charged one); rawData is `data`. The answer names no currency: an international account
 *   (api.siliconflow.com) is billed in USD, a China one (api.siliconflow.cn) in CNY, as
 *   cc-switch (src-tauri/src/services/balance.rs, query_siliconflow) and CodexBar
 *   (docs/siliconflow.md) read them. currency = the `currency` config field, else USD when
 *   baseUrl is on siliconflow.com, else CNY. An answer with a code other than 20000 or status
 *   false is PROVIDER_ERROR with its message.
 *
 * `baseUrl` may be the OpenAI-style "https://api.siliconflow.cn/v1": it is not repeated.
 *
 * SiliconFlow retired the China (api.siliconflow.cn) balance API on 2026-08-14
 * (https://docs.siliconflow.cn/docs/release-notes/overview); the international
 * api.siliconflow.com keeps it. A 404 or 410 for it says so, and what to set instead.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { hostOf, keyAndUrlChecks, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
  currency?: string;
}

const ID = "siliconflow";
const { object, number } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.siliconflow.cn";
const OK = 20000;

export const metadata: PluginMetadata = {
  id: ID,
  name: "SiliconFlow",
  version: "1.1.0",
  apiVersion: "1.0",
  description: "SiliconFlow account balance from /v1/user/info.",
  author: "Plugin Host",
  homepage: "https://docs.siliconflow.cn/cn/api-reference/userinfo/get-user-info",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "A SiliconFlow API key (sk-...)." },
    baseUrl: { type: "string", default: DEFAULT_BASE_URL },
    currency: {
      type: "string",
      description: "The balance's currency; default USD for api.siliconflow.com, CNY for api.siliconflow.cn (and any other).",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const base = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/v1$/, "");
  let answer: unknown;
  try {
    answer = await ctx.fetchJson(`${base}/v1/user/info`, { headers: { Authorization: `Bearer ${config.apiKey}` } });
  } catch (e) {
    const status = (e as { details?: { status?: number } })?.details?.status;
    if (e instanceof PluginError && (status === 404 || status === 410)) {
      throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: ${base} no longer answers /v1/user/info (${status}): ` +
        "SiliconFlow retired the China balance API on 2026-08-14, so a China (CNY) account's balance is only " +
        "shown in the console at cloud.siliconflow.cn; an international account reads it with " +
        "baseUrl = https://api.siliconflow.com and currency = USD", { status });
    }
    throw e;
  }
  const body = object(answer, "body");
  if (body.status === false || (body.code !== undefined && body.code !== OK)) {
    throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: code ${body.code}: ${String(body.message ?? "").slice(0, 200)}`);
  }
  const data = object(body.data, "data");
  return {
    balance: number(data.totalBalance, "data.totalBalance"),
    currency: config.currency || (hostOf(base).endsWith("siliconflow.com") ? "USD" : "CNY"),
    rawData: data,
  };
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
