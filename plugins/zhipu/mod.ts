/**
 * Zhipu GLM Coding Plan quota (open.bigmodel.cn, and Z.ai internationally), asked as the
 * vendor's own plugin asks it (plugins/glm-plan-usage of
 * https://github.com/zai-org/zai-coding-plugins; the console API has no public reference),
 * with the key as it is: `Authorization: <apiKey>`, no "Bearer ", and
 * `Accept-Language: en-US,en` (else the China host answers in Chinese).
 *
 *   GET /api/monitor/usage/quota/limit
 *     {"code":200,"msg":"Operation successful","success":true,"data":{"level":"max","limits":[
 *      {"type":"TOKENS_LIMIT","unit":3,"number":5,"percentage":1,"nextResetTime":1787771961795},
 *      {"type":"TOKENS_LIMIT","unit":6,"number":1,"percentage":23,"nextResetTime":1788142864978},
 *      {"type":"TIME_LIMIT","unit":5,"number":1,"usage":4000,"currentValue":1,"remaining":3999,
 *       "percentage":1,"nextResetTime":1789611664999,"usageDetails":[...]}]}}
 *
 *   Each entry of `limits` is a window of `number` × `unit` (3 hours, 4 days, 5 months, 6
 *   weeks): TOKENS_LIMIT (or CREDIT_LIMIT on newer plans) the prompt windows, TIME_LIMIT the
 *   monthly MCP tool calls. `percentage` is the percent USED; on TIME_LIMIT `usage` is the
 *   limit (not the use), `currentValue` the use. nextResetTime is epoch milliseconds.
 *
 *   The headline is the shortest token window (the 5-hour one; old plans have only it), in
 *   percent: balance = 100 - percentage (percent left), quota = 100, usedQuota = percentage,
 *   currency "%". expiresAt is null: a reset is not an expiry. rawData = { plan: data.level,
 *   windows: every window as {name ("5 hours", "1 week", "1 month"), type, headline,
 *   usedPercent, remainingPercent, limit, used, remaining (the counts, TIME_LIMIT only),
 *   resetsAt (ISO 8601 or null)}, answer: data }.
 *
 * Refusals come as HTTP 200 with success false: {"code":1001,"success":false,"msg":
 * "Authorization Token Missing"} (codes 1000-1004 and 401, or a message about the token, are
 * AUTH_ERROR); a key with no coding plan ("coding plan" in msg) and anything else are
 * PROVIDER_ERROR. A real 401/403 is AUTH_ERROR too.
 *
 * `baseUrl`: https://open.bigmodel.cn (China, the default) or https://api.z.ai (Z.ai); keys
 * work on their own platform only. The coding base URL may be given as it is configured for a
 * coding tool (https://open.bigmodel.cn/api/anthropic, https://api.z.ai/api/coding/paas/v4):
 * the path from "/api" on is dropped.
 */
import type { BalanceResult, Context, PluginMetadata } from "../../worker_runtime/plugin.d.ts";
import { instant, keyAndUrlChecks, optionalNumber, parsers } from "@plugin-host/kit";

interface Config {
  apiKey?: string;
  baseUrl?: string;
}

interface WindowInfo {
  name: string | null;
  type: string;
  headline: boolean;
  usedPercent: number | null;
  remainingPercent: number | null;
  limit?: number;
  used?: number;
  remaining?: number;
  resetsAt: string | null;
}

const ID = "zhipu";
const { object, number, array } = parsers(ID);
const DEFAULT_BASE_URL = "https://open.bigmodel.cn";
const TOKEN_WINDOW = /^(TOKENS_LIMIT|CREDIT_LIMIT)$/i;
/** unit code -> [its name, its length in hours] */
const UNITS: Record<number, [string, number]> = { 3: ["hour", 1], 4: ["day", 24], 5: ["month", 720], 6: ["week", 168] };
const AUTH_CODES = new Set([401, 1000, 1001, 1002, 1003, 1004]);
const AUTH_MESSAGE = /token|unauthori[sz]ed|authenticat|api ?key|令牌|鉴权|认证|身份验证/i;

export const metadata: PluginMetadata = {
  id: ID,
  name: "Zhipu GLM Coding Plan",
  version: "1.0.1",
  apiVersion: "1.0",
  description: "Zhipu / Z.ai GLM Coding Plan quota (percent of the 5-hour window left) from /api/monitor/usage/quota/limit.",
  author: "Plugin Host",
  homepage: "https://github.com/zai-org/zai-coding-plugins",
  capabilities: ["balance"],
  permissions: { net: ["{config.baseUrl}"] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "The API key the coding plan runs with." },
    baseUrl: {
      type: "string",
      default: DEFAULT_BASE_URL,
      description: "https://open.bigmodel.cn (China) or https://api.z.ai (Z.ai, international); " +
        "a coding base URL such as https://api.z.ai/api/anthropic is accepted.",
    },
  },
};

export async function queryBalance(config: Config, ctx: Context): Promise<BalanceResult> {
  if (!config.apiKey) throw new PluginError(ErrorTypes.NOT_CONFIGURED, `${ID}: apiKey is not configured`);
  const root = (config.baseUrl ?? DEFAULT_BASE_URL).replace(/\/+$/, "").replace(/\/api(\/.*)?$/, "");
  const body = refusal(object(await ctx.fetchJson(`${root}/api/monitor/usage/quota/limit`, {
    headers: { Authorization: config.apiKey, "Accept-Language": "en-US,en", "Content-Type": "application/json" },
  }), "body"));
  const data = object(body.data, "data");
  const rows = array(data.limits, "data.limits").map((row, i) => object(row, `data.limits[${i}]`));
  const tokens = rows.map((row, i) => ({ row, i })).filter(({ row }) => TOKEN_WINDOW.test(String(row.type ?? "")));
  if (tokens.length === 0) {
    throw new PluginError(ErrorTypes.PROVIDER_ERROR,
      `${ID}: the answer lists no token window (data.limits has no TOKENS_LIMIT): is there a coding plan on this key?`);
  }
  const head = tokens.reduce((a, b) => (hours(b.row) < hours(a.row) ? b : a));
  // a window with no percentage is unused so far, as Zhipu's own quota HUD and cc-switch read it
  const used = head.row.percentage == null ? 0 : number(head.row.percentage, `data.limits[${head.i}].percentage`);
  const windows = rows.map((row, i): WindowInfo => {
    const usedPercent = optionalNumber(row.percentage);
    const w: WindowInfo = {
      name: windowName(row),
      type: String(row.type ?? ""),
      headline: i === head.i,
      usedPercent,
      remainingPercent: usedPercent === null ? null : 100 - usedPercent,
      resetsAt: instant(row.nextResetTime),
    };
    const limit = optionalNumber(row.usage); // the limit, despite its name
    const current = optionalNumber(row.currentValue);
    if (limit !== null) w.limit = limit;
    if (current !== null) w.used = current;
    const left = optionalNumber(row.remaining) ?? (limit !== null && current !== null ? limit - current : null);
    if (left !== null) w.remaining = left;
    return w;
  });
  const plan = typeof data.level === "string"
    ? data.level
    : typeof (data.level as { name?: unknown } | null)?.name === "string"
    ? (data.level as { name: string }).name
    : null;
  return {
    balance: 100 - used,
    currency: "%",
    quota: 100,
    usedQuota: used,
    expiresAt: null,
    rawData: { plan, windows, answer: data },
  };
}

/** success false (or a code other than 200 without success true): the answer is a refusal. */
function refusal(body: Record<string, unknown>): Record<string, unknown> {
  const code = body.code;
  if (body.success === true || (body.success === undefined && (code === undefined || code === 200 || code === 0))) {
    return body;
  }
  const message = String(body.msg ?? body.message ?? "no message").slice(0, 200);
  if (/coding.?plan|套餐/i.test(message)) {
    throw new PluginError(ErrorTypes.PROVIDER_ERROR, `${ID}: no GLM Coding Plan on this key (code ${code}): ${message}`);
  }
  const type = AUTH_CODES.has(Number(code)) || AUTH_MESSAGE.test(message) ? ErrorTypes.AUTH_ERROR : ErrorTypes.PROVIDER_ERROR;
  throw new PluginError(type, `${ID}: code ${code}: ${message}`);
}

/** A window's length in hours; unknown lengths sort last. */
function hours(row: Record<string, unknown>): number {
  const unit = UNITS[Number(row.unit)];
  const n = optionalNumber(row.number);
  return unit && n !== null ? unit[1] * n : Infinity;
}

function windowName(row: Record<string, unknown>): string | null {
  const unit = UNITS[Number(row.unit)];
  const n = optionalNumber(row.number);
  return unit && n !== null ? `${n} ${unit[0]}${n === 1 ? "" : "s"}` : null;
}

/** Cheap and offline: the host runs healthCheck every health interval, and the balance query
 * is the real probe of the key. */
export const { healthCheck, validateConfig } = keyAndUrlChecks(DEFAULT_BASE_URL);
