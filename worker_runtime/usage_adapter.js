// Plugin Host: runs a cc-switch usage script, unchanged, as a balance plugin.
//
// The host writes one module per script: four constants (SCRIPT_ID, SCRIPT_NAME, SCRIPT_SOURCE,
// SCRIPT, each a JSON string literal) and then this file. The script is an expression,
//   ({ request: { url, method, headers, body }, extractor: function (response) { ... } })
// evaluated once, as it is. Its {{apiKey}}, {{baseUrl}}, {{accessToken}} and {{userId}}
// placeholders are filled in the *values* it produced (the URL, each header, the body), never
// spliced into its code as text: a key holding quotes or backslashes stays a string. The
// network grant is the host of request.url (the configured baseUrl when the URL starts with
// {{baseUrl}}), so the request, and anything the extractor might try, reaches that host only.

const PLACEHOLDER = /\{\{\s*(apiKey|baseUrl|accessToken|userId)\s*\}\}/g;
const SECRET_FIELDS = ["apiKey", "accessToken"];

function fail(errorType, message, details) {
  return new PluginError(errorType, `usage script ${SCRIPT_ID}: ${message}`, details);
}

function evaluate(source) {
  const text = source.trim().replace(/;+\s*$/, "");
  // Indirect eval: global scope, no access to this module's bindings.
  const spec = (0, eval)(`(${text}\n)`);
  if (spec === null || typeof spec !== "object") throw new TypeError("the script must evaluate to an object");
  if (spec.request === null || typeof spec.request !== "object") throw new TypeError("request must be an object");
  if (typeof spec.request.url !== "string") throw new TypeError("request.url must be a string");
  if (typeof spec.extractor !== "function") throw new TypeError("extractor must be a function");
  return spec;
}

const spec = evaluate(SCRIPT);
const urlTemplate = spec.request.url.trim();
const viaBaseUrl = /^\{\{\s*baseUrl\s*\}\}/.test(urlTemplate);
const fixedHost = (() => {
  if (viaBaseUrl) return null;
  let url;
  try {
    url = new URL(urlTemplate);
  } catch {
    throw new TypeError(`request.url must start with {{baseUrl}} or be an absolute URL, got ${urlTemplate.slice(0, 80)}`);
  }
  if (/%7B%7B|\{\{/i.test(url.host)) throw new TypeError("request.url: a placeholder may not name the host");
  return url.host;
})();
const used = new Set([...JSON.stringify(spec.request).matchAll(PLACEHOLDER)].map((m) => m[1]));

export const metadata = {
  id: SCRIPT_ID,
  name: SCRIPT_NAME,
  version: "1.0.0",
  apiVersion: "1.0",
  description: `cc-switch usage script (${SCRIPT_SOURCE})`,
  capabilities: ["balance"],
  permissions: { net: [viaBaseUrl ? "{config.baseUrl}" : fixedHost] },
  configSchema: {
    apiKey: { type: "string", secret: true, description: "{{apiKey}}" },
    baseUrl: { type: "string", description: "{{baseUrl}}: the station's URL" },
    accessToken: { type: "string", secret: true, description: "{{accessToken}}" },
    userId: { type: "string", description: "{{userId}}" },
  },
};

function values(config) {
  const v = {};
  for (const name of ["apiKey", "baseUrl", "accessToken", "userId"]) {
    const value = config?.[name];
    v[name] = value == null ? "" : String(value);
  }
  v.baseUrl = v.baseUrl.trim().replace(/\/+$/, "");
  return v;
}

function missing(v) {
  return [...used].filter((name) => v[name] === "");
}

/** Each placeholder in `text` replaced by its value, passed through `encode`. */
function fill(text, v, encode = (s) => s) {
  return text.replace(PLACEHOLDER, (_, name) => encode(v[name]));
}

/** Placeholders filled inside every string of a JSON-like value, keys untouched. */
function fillDeep(value, v) {
  if (typeof value === "string") return fill(value, v);
  if (Array.isArray(value)) return value.map((x) => fillDeep(x, v));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, x]) => [k, fillDeep(x, v)]));
  }
  return value;
}

function buildRequest(v) {
  const r = spec.request;
  // The base URL goes in as given; any other value in a URL is percent-encoded, so that a key
  // holding "&", "#" or "/" stays one value.
  const url = viaBaseUrl
    ? v.baseUrl + fill(urlTemplate.replace(/^\{\{\s*baseUrl\s*\}\}/, ""), v, encodeURIComponent)
    : fill(urlTemplate, v, encodeURIComponent);
  const headers = {};
  for (const [name, value] of Object.entries(r.headers ?? {})) headers[name] = fill(String(value), v);
  let body = r.body;
  if (typeof body === "string") {
    let parsed;
    try {
      parsed = JSON.parse(body);
    } catch {
      parsed = undefined;
    }
    body = parsed === undefined ? fill(body, v) : JSON.stringify(fillDeep(parsed, v));
  } else if (body != null) {
    body = JSON.stringify(fillDeep(body, v));
  }
  return { url, init: { method: String(r.method ?? "GET").toUpperCase(), headers, body: body ?? undefined } };
}

function expectedHost(v) {
  if (!viaBaseUrl) return fixedHost;
  try {
    return new URL(v.baseUrl).host;
  } catch {
    throw fail("PROVIDER_ERROR", "baseUrl is not a URL");
  }
}

function number(value, field) {
  if (value == null || value === "") return undefined;
  const n = typeof value === "number" ? value : Number(String(value).replace(/[,\s]/g, ""));
  if (!Number.isFinite(n)) throw fail("PARSE_ERROR", `${field} is not a number: ${String(value).slice(0, 40)}`);
  return n;
}

/** The extractor's answer (one object, or a list of plans) as a balance result. */
function normalise(out) {
  const plans = (Array.isArray(out) ? out : [out]).filter((p) => p !== null && p !== undefined);
  if (plans.length === 0) throw fail("PARSE_ERROR", "the extractor returned nothing");
  for (const p of plans) {
    if (typeof p !== "object") throw fail("PARSE_ERROR", `the extractor returned ${typeof p}, not an object`);
  }
  const valid = plans.filter((p) => p.isValid !== false);
  if (valid.length === 0) {
    const why = plans.map((p) => p.invalidMessage).filter(Boolean).join("; ") || "the key is not valid";
    throw fail("AUTH_ERROR", String(why).slice(0, 300));
  }
  const unit = valid.find((p) => p.unit)?.unit ?? "USD";
  const same = valid.filter((p) => (p.unit ?? unit) === unit);
  const sum = (field) => {
    const xs = same.map((p, i) => number(p[field], `${field} of plan ${i + 1}`));
    return xs.every((x) => x === undefined) ? undefined : xs.reduce((a, x) => a + (x ?? 0), 0);
  };
  const balance = sum("remaining");
  if (balance === undefined) throw fail("PARSE_ERROR", "no plan has a remaining amount");
  const result = { balance, currency: String(unit), rawData: { plans } };
  const total = sum("total");
  const usedAmount = sum("used");
  if (total !== undefined) result.quota = total;
  if (usedAmount !== undefined) result.usedQuota = usedAmount;
  return result;
}

export async function queryBalance(config, ctx) {
  const v = values(config);
  const absent = missing(v);
  if (absent.length) {
    const type = absent.some((n) => SECRET_FIELDS.includes(n)) ? "AUTH_ERROR" : "PROVIDER_ERROR";
    throw fail(type, `${absent.join(", ")} not configured`);
  }
  const { url, init } = buildRequest(v);
  let target;
  try {
    target = new URL(url).host;
  } catch {
    throw fail("PROVIDER_ERROR", "request.url is not a URL once filled in");
  }
  const host = expectedHost(v);
  if (target !== host) throw fail("PROVIDER_ERROR", `request.url leads to ${target}, not ${host}`);
  const response = await ctx.fetchJson(url, init);
  let out;
  try {
    out = await spec.extractor(response);
  } catch (e) {
    throw fail("PARSE_ERROR", `the extractor threw: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  return normalise(out);
}

export function validateConfig(config) {
  const v = values(config);
  if (viaBaseUrl && v.baseUrl) {
    let url;
    try {
      url = new URL(v.baseUrl);
    } catch {
      return { valid: false, message: "baseUrl is not a URL" };
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      return { valid: false, message: "baseUrl must be an http(s) URL" };
    }
  }
  for (const name of SECRET_FIELDS) {
    if (/\s/.test(v[name])) return { valid: false, message: `${name} contains whitespace` };
  }
  return true;
}

export function healthCheck(config) {
  const absent = missing(values(config));
  return absent.length ? { healthy: false, message: `${absent.join(", ")} not configured` } : { healthy: true };
}
