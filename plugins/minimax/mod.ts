/**
 * MiniMax Coding Plan / Token Plan quota, with `Authorization: Bearer <apiKey>` (the plan's
 * own key, sk-cp-...; a pay-as-you-go key does not work):
 * https://platform.minimax.io/docs/coding-plan/faq
 *
 *   GET /v1/api/openplatform/coding_plan/remains
 *     {"model_remains":[{"model_name":"general","start_time":1785164400000,"end_time":1785182400000,
 *       "current_interval_total_count":0,"current_interval_usage_count":0,
 *       "current_interval_status":1,"current_interval_remaining_percent":99,
 *       "weekly_start_time":1785110400000,"weekly_end_time":1785715200000,
 *       "current_weekly_total_count":0,"current_weekly_usage_count":0,
 *       "current_weekly_status":1,"current_weekly_remaining_percent":99}, {"model_name":"video",...}],
 *      "base_resp":{"status_code":0,"status_msg":"success"}}
 *
 *   One row per bucket; the plan's is "general" (older plans named rows after models, e.g.
 *   "MiniMax-M2": then the first row with a count). Each row has a window of a few hours
 *   (start_time..end_time, epoch ms) and a weekly one (weekly_*). A window's status 3 means the
 *   plan sets no such limit; 1 (or none, on older plans) that it does.
 *
 *   The headline is the row's short window, else (status 3) its weekly one, else `unlimited`:
 *   - current plans give `*_remaining_percent`, the percent LEFT: balance = it, quota = 100,
 *     usedQuota = 100 - it, currency "%";
 *   - older plans give counts only: `current_interval_total_count` the prompts of the window
 *     and `current_interval_usage_count` the prompts REMAINING, despite its name: balance =
 *     usage_count, quota = total_count, usedQuota = their difference, currency "prompts".
 *     (Where a percent is given, the counts are not read: current plans use them otherwise.)
 *   expiresAt is null: a reset is not an expiry. rawData = { plan: the row's model_name,
 *   windows: every row's windows as {model, name ("interval" or "weekly"), headline, active,
 *   remainingPercent, usedPercent, limit, used, remaining (counts, older plans only),
 *   resetsAt (ISO 8601 or null)}, answer: the whole answer }.
 *
 * Refusals come as HTTP 200 with base_resp.status_code other than 0: 1004 ("login fail") and
 * 2049 ("invalid api key"), or a message about the key, are AUTH_ERROR; 1002 and 1039 (rate
 * limits) RATE_LIMIT; others PROVIDER_ERROR. A real 401 is AUTH_ERROR too.
 *
 * `baseUrl`: https://api.minimaxi.com (China, minimaxi.com, the default) or
 * https://api.minimax.io (international, minimax.io); keys work in their own region only.
 * The coding base URL (…/anthropic) or the OpenAI one (…/v1) may be given: that suffix is
 * dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { instant, keyAndUrlChecks, optionalNumber, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

interface WindowInfo {
  model: string | null;
  name: "interval" | "weekly";
  headline: boolean;
  active: boolean;
  remainingPercent: number | null;
  usedPercent: number | null;
  limit?: number;
  used?: number;
  remaining?: number;
  resetsAt: string | null;
}

const ID = "minimax";
const { object, number, array } = parsers(ID);
const DEFAULT_BASE_URL = "https://api.minimaxi.com";
const AUTH_CODES = new Set([1004, 2049]);
const RATE_CODES = new Set([1002, 1039]);
const AUTH_MESSAGE = /api ?key|login fail|unauthori[sz]ed|authenticat|token/i;
/** The fields of each window of a row. */
const FIELDS = {
  interval: { total: "current_interval_total_count", count: "current_interval_usage_count",
    percent: "current_interval_remaining_percent", status: "current_interval_status", end: "end_time" },
  weekly: { total: "current_weekly_total_count", count: "current_weekly_usage_count",
    percent: "current_weekly_remaining_percent", status: "current_weekly_status", end: "weekly_end_time" },
} as const;

export const metadata: PluginMetadata = {
  id: ID,
  name: "MiniMax Coding Plan",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "MiniMax Coding / Token Plan quota (the short window's percent or prompts left) from " +
    "/v1/api/openplatform/coding_plan/remains.",
  author: "Plugin Host",
  homepage: "https://platform.minimax.io/docs/coding-plan/faq",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "The Coding / Token Plan API key (sk-cp-...)." },
    baseUrl: {
      type: "string",
      default: DEFAULT_BASE_URL,
      description: "https://api.minimaxi.com (China, minimaxi.com) or https://api.minimax.io (international, minimax.io).",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const root = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/(anthropic(\/v1)?|v1)$/, "");
  const body = refusal(object(await ctx.fetchJson(`${root}/v1/api/openplatform/coding_plan/remains`, {
    headers: { Authorization: `Bearer ${config.apiKey}`, "Content-Type": "application/json" },
  }), "body"));
  const rows = array(body.model_remains, "model_remains").map((row, i) => object(row, `model_remains[${i}]`));
  if (rows.length === 0) {
    throw new PluginError(ErrorTypes.PROVIDER_ERROR,
      `${ID}: the answer lists no plan (model_remains is empty): is this a Coding / Token Plan key?`);
  }
  let index = rows.findIndex((row) => row.model_name === "general");
  if (index < 0) index = rows.findIndex((row) => (optionalNumber(row.current_interval_total_count) ?? 0) > 0);
  if (index < 0) index = 0;
  const row = rows[index];
  const at = `model_remains[${index}]`;

  const given = (["interval", "weekly"] as const).filter((name) => present(row, name));
  if (given.length === 0) number(row[FIELDS.interval.percent], `${at}.${FIELDS.interval.percent}`); // PARSE_ERROR
  const which = given.find((name) => active(row, name));
  let result: BalanceResult;
  if (which === undefined) {
    result = { balance: null, currency: null, unlimited: true, expiresAt: null };
  } else {
    const f = FIELDS[which];
    const total = optionalNumber(row[f.total]) ?? 0;
    if (row[f.percent] == null && total > 0) {
      const remaining = number(row[f.count], `${at}.${f.count}`); // the prompts LEFT
      result = { balance: remaining, currency: "prompts", quota: total, usedQuota: total - remaining, expiresAt: null };
    } else {
      const left = number(row[f.percent], `${at}.${f.percent}`);
      result = { balance: left, currency: "%", quota: 100, usedQuota: 100 - left, expiresAt: null };
    }
  }
  const windows = rows.flatMap((r, i) =>
    (["interval", "weekly"] as const).filter((name) => present(r, name)).map((name) =>
      windowOf(r, name, i === index && name === which)
    )
  );
  const plan = typeof row.model_name === "string" ? row.model_name : null;
  return { ...result, rawData: { plan, windows, answer: body } };
}

/** Whether a row has this window at all (older plans have no weekly fields). */
function present(row: Record<string, unknown>, name: "interval" | "weekly"): boolean {
  const f = FIELDS[name];
  return row[f.percent] != null || row[f.status] != null || (optionalNumber(row[f.total]) ?? 0) > 0;
}

/** Status 3: the plan sets no such limit. Any other (or none, on older plans) is a limit. */
function active(row: Record<string, unknown>, name: "interval" | "weekly"): boolean {
  return Number(row[FIELDS[name].status]) !== 3;
}

function windowOf(row: Record<string, unknown>, name: "interval" | "weekly", headline: boolean): WindowInfo {
  const f = FIELDS[name];
  const left = optionalNumber(row[f.percent]);
  const w: WindowInfo = {
    model: typeof row.model_name === "string" ? row.model_name : null,
    name,
    headline,
    active: active(row, name),
    remainingPercent: left,
    usedPercent: left === null ? null : 100 - left,
    resetsAt: instant(row[f.end]),
  };
  const total = optionalNumber(row[f.total]) ?? 0;
  const remaining = optionalNumber(row[f.count]);
  if (left === null && total > 0 && remaining !== null) {
    Object.assign(w, { limit: total, used: total - remaining, remaining });
  }
  return w;
}

/** base_resp.status_code other than 0: the answer is a refusal. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const base = body.base_resp;
  if (base === undefined || base === null || typeof base !== "object") return body;
  const { status_code: code, status_msg: msg } = base as Record<string, unknown>;
  if (code === undefined || code === null || Number(code) === 0) return body;
  const message = String(msg ?? "no message").slice(0, 200);
  const type = AUTH_CODES.has(Number(code)) || AUTH_MESSAGE.test(message)
    ? ErrorTypes.AUTH_ERROR
    : RATE_CODES.has(Number(code))
    ? ErrorTypes.RATE_LIMIT
    : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: status ${code}: ${message}`);
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
