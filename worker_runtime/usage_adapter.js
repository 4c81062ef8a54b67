// Plugin Host: runs a cc-switch usage script, unchanged, as a balance plugin.
//
// The host writes one module per script: four constants (SCRIPT_ID, SCRIPT_NAME, SCRIPT_SOURCE,
// SCRIPT, each a JSON string literal) and then this file. The script is read as cc-switch reads
// it: the whole program is evaluated (statements, comments and "use strict" included) and its
// completion value is the object
//   { request: { url, method, headers, body }, extractor: function (response) { ... } }
// It is evaluated again for every query (a date it computes is today's), with its
// {{apiKey}}, {{baseUrl}}, {{accessToken}} and {{userId}} placeholders filled in first, anywhere
// in it, but only ever as string values: a placeholder inside a string literal becomes the value
// escaped for that literal (and, inside JSON text in a literal, for JSON; after the path of a URL
// literal, percent-encoded), one inside a regular expression literal (/{{apiKey}}/) the value
// escaped so that the expression matches it character for character, and one outside any literal
// becomes a string literal. A key holding quotes, backslashes, "/" or "${" stays one value;
// nothing of a value runs as code. (cc-switch splices the text in wherever it stands,
// usage_script.rs build_script_with_vars; a comment's is left alone, unseen either way.)
// The network grant is the host of request.url: the configured baseUrl's when the URL is built
// from it, else the fixed host the script names; a URL whose host would come from another value
// is refused. The request, and anything the extractor might try, reaches that host only.
//
// Answers are read as cc-switch shows them: the first plan is the headline (its remaining amount,
// used, total and unit; no unit when it gives none; `invalid` when its isValid is false), every
// plan is listed in rawData;
// a remaining of -1, or a total of -1 with no remaining (cc-switch shows that total as "∞"),
// means unlimited. What cc-switch would refuse but is accepted here (no method, an object body,
// amounts as numeric strings) is logged as a warning, so that a script written here works there
// too.

const NAMES = ["apiKey", "baseUrl", "accessToken", "userId"];
const PLACEHOLDER = /\{\{(apiKey|baseUrl|accessToken|userId)\}\}/y; // exactly as cc-switch: no spaces
const SECRET_FIELDS = ["apiKey", "accessToken"];
const UNLIMITED = -1;

function fail(errorType, message, details) {
  return new PluginError(errorType, `usage script ${SCRIPT_ID}: ${message}`, details);
}

/** What to write instead of a placeholder spelt another way ({{ apiKey }}, {{api_key}}, {{APIKEY}}),
 * which cc-switch sends as it is: "" when the script spells them all as cc-switch fills them in. */
const spelling = (() => {
  for (const m of SCRIPT.matchAll(/\{\{\s*([A-Za-z_]+)\s*\}\}/g)) {
    const name = NAMES.find((n) => n.toLowerCase() === m[1].replace(/_/g, "").toLowerCase());
    if (name !== undefined && m[0] !== `{{${name}}}`) {
      return ` (the script writes ${m[0]}: write {{${name}}}, the one spelling cc-switch fills in)`;
    }
  }
  return "";
})();

const warned = new Set();
/** Warn once per worker of what the script does that cc-switch would not (``refused``: what it
 * refuses; else the message says what it does). */
function warnOnce(message, refused = true) {
  if (warned.has(message)) return;
  warned.add(message);
  console.warn(`usage script ${SCRIPT_ID}: ${message}${refused ? " (cc-switch would refuse it)" : ""}`);
}

// ------------------------------------------------------------------ placeholders

const REGEX_AFTER = new Set(["(", ",", "=", ":", "[", "!", "&", "|", "?", "{", "}", ";", "+", "-", "*", "%", "<",
  ">", "~", "^", ""]);
const REGEX_KEYWORDS = new Set(["return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw",
  "yield", "await", "instanceof"]);

/** The value as it must be written where the placeholder stood. `literal`: the quote of the
 * string literal it is in ('"', "'" or "`"), or null in code; `before`: that literal's text
 * before it. */
function written(name, value, literal, before) {
  if (literal === null) return JSON.stringify(value); // a string value, never code
  let text = value;
  const head = before.trimStart();
  const quotes = (before.match(/"/g) ?? []).length;
  if ((head.startsWith("{") || head.startsWith("[")) && quotes % 2 === 1) {
    text = JSON.stringify(text).slice(1, -1); // inside a JSON string in the literal
  } else if (name !== "baseUrl" && /^(?:\{\{\s*baseUrl\s*\}\}|https?:\/\/)/i.test(head) && /[/?#=&]/.test(
    head.replace(/^(?:\{\{\s*baseUrl\s*\}\}|https?:\/\/[^/?#]*)/i, ""),
  )) {
    text = encodeURIComponent(text); // in a URL's path or query: one value, not more parameters
  }
  const escaped = JSON.stringify(text).slice(1, -1);
  if (literal === "'") return escaped.replace(/'/g, "\\'");
  if (literal === "`") return escaped.replace(/`/g, "\\`").replace(/\$\{/g, "\\${");
  return escaped;
}

/** A value as it is written inside a regular expression literal (`inClass`: within `[...]`): every
 * character matched as itself, none ending the literal or the line. */
function inRegex(value, inClass) {
  const text = value.replace(inClass ? /[\\^$.*+?()[\]{}|/-]/g : /[\\^$.*+?()[\]{}|/]/g, "\\$&");
  return text.replace(/[\n\r\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

/** The placeholder that starts at `source[i]`, or null. */
function placeholderAt(source, i) {
  if (source[i] !== "{") return null;
  PLACEHOLDER.lastIndex = i;
  return PLACEHOLDER.exec(source);
}

/** `source` with every placeholder filled in as a string value (see `written`), or inside a
 * regular expression literal as the text it matches (`inRegex`); comments are left as they are.
 * A small scanner: strings, template literals (and the code in their `${}`), comments and
 * regular expression literals. */
function fillScript(source, v) {
  let out = "";
  let i = 0;
  let last = ""; // the last significant character of code (regex or division?)
  let word = ""; // the identifier being read, for keywords before a regex
  const stack = []; // template literal nesting: brace depth of each `${`
  let depth = 0;
  let literal = null;
  let litStart = 0;
  const n = source.length;
  while (i < n) {
    const c = source[i];
    if (literal !== null) {
      const m = placeholderAt(source, i);
      if (m) {
        out += written(m[1], v[m[1]], literal, source.slice(litStart, i));
        i += m[0].length;
        continue;
      }
      if (c === "\\") {
        out += source.slice(i, i + 2);
        i += 2;
        continue;
      }
      if (literal === "`" && c === "$" && source[i + 1] === "{") {
        stack.push(depth);
        depth = 0;
        literal = null;
        out += "${";
        i += 2;
        last = "{";
        continue;
      }
      out += c;
      i++;
      if (c === literal) {
        literal = null;
        last = c;
      }
      continue;
    }
    // code
    const m = placeholderAt(source, i);
    if (m) {
      out += written(m[1], v[m[1]], null, "");
      i += m[0].length;
      last = "a";
      continue;
    }
    if (c === '"' || c === "'" || c === "`") {
      literal = c;
      litStart = i + 1;
      out += c;
      i++;
      continue;
    }
    if (c === "/" && source[i + 1] === "/") {
      const end = source.indexOf("\n", i);
      const stop = end === -1 ? n : end;
      out += source.slice(i, stop);
      i = stop;
      continue;
    }
    if (c === "/" && source[i + 1] === "*") {
      const end = source.indexOf("*/", i + 2);
      const stop = end === -1 ? n : end + 2;
      out += source.slice(i, stop);
      i = stop;
      continue;
    }
    if (c === "/" && REGEX_AFTER.has(last)) {
      let j = i + 1;
      let cls = false;
      out += c;
      while (j < n && source[j] !== "\n") {
        const d = source[j];
        const p = placeholderAt(source, j);
        if (p) {
          out += inRegex(v[p[1]], cls);
          j += p[0].length;
          continue;
        }
        if (d === "\\") {
          out += source.slice(j, j + 2);
          j += 2;
          continue;
        }
        if (d === "[") cls = true;
        else if (d === "]") cls = false;
        else if (d === "/" && !cls) break;
        out += d;
        j++;
      }
      const end = j;
      j++;
      while (j < n && /[a-z]/i.test(source[j])) j++;
      out += source.slice(end, j);
      i = j;
      last = "a";
      continue;
    }
    if (c === "{") depth++;
    if (c === "}") {
      if (depth === 0 && stack.length) { // the end of a template literal's `${}`
        depth = stack.pop();
        literal = "`";
        litStart = i + 1;
        out += c;
        i++;
        continue;
      }
      depth--;
    }
    out += c;
    i++;
    if (/[\w$]/.test(c)) {
      word += c;
      last = REGEX_KEYWORDS.has(word) ? "" : "a"; // after `return` a "/" starts a regex
    } else {
      word = "";
      if (!/\s/.test(c)) last = c;
    }
  }
  return out;
}

/** The script's completion value for the values `v`, checked for the shape cc-switch needs. */
function evaluate(v) {
  const filled = fillScript(SCRIPT, v);
  let spec;
  try {
    // Indirect eval: global scope, no access to this module's bindings; a program, as cc-switch
    // evaluates it, so its completion value is what it produced.
    spec = (0, eval)(filled);
  } catch (e) {
    if (!(e instanceof SyntaxError)) throw e;
    // An object literal written without parentheses is a block to a program: read it as the
    // expression it was meant to be.
    try {
      // (?<!;): one try per run of ";", not one at each (/;+\s*$/ took 10 s on "{" + ";" * 65536 + "x")
      spec = (0, eval)(`(${filled.trim().replace(/(?<!;);+\s*$/, "")}\n)`);
    } catch {
      throw e;
    }
  }
  if (spec === null || typeof spec !== "object") throw new TypeError("the script must evaluate to an object");
  if (spec.request === null || typeof spec.request !== "object") throw new TypeError("request must be an object");
  if (typeof spec.request.url !== "string") throw new TypeError("request.url must be a string");
  if (typeof spec.extractor !== "function") throw new TypeError("extractor must be a function");
  return spec;
}

/** Where a SyntaxError of the script is: V8's eval says what is wrong but not where, Deno's module
 * parser says where. The script, filled in as `filled`, is parsed as the body of a function a
 * data: module declares and never calls, so nothing of it runs. `{ line, column, what }` (what the
 * parser expected, or the code point of a character JavaScript cannot read there: a curly quote
 * or a fullwidth comma pasted from a page), or null when the parser finds nothing to say. */
async function syntaxPlace(filled) {
  const head = "function usageScript() {"; // on the script's first line: line numbers stay as they are
  let said;
  try {
    await import(`data:text/javascript,${encodeURIComponent(`${head}${filled}\n}`)}`);
    return null;
  } catch (parsed) {
    said = String(parsed?.message ?? parsed);
  }
  const at = said.split("\n").find((l) => l.trim().startsWith("at data:"));
  const m = at === undefined ? null : /:(\d+):(\d+)\s*$/.exec(at);
  if (m === null) return null;
  const line = Number(m[1]);
  const column = Number(m[2]) - (line === 1 ? head.length : 0);
  const char = [...(filled.split("\n")[line - 1] ?? "").slice(column - 1)][0] ?? "";
  const what = /[^\x00-\x7f]/.test(char)
    ? `'${char}' (U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}) cannot stand there outside a ` +
      "string: write the ASCII character it stands for (pasted from a page or a chat?)"
    : said.split("\n")[0].replace(/^(?:TypeError: )?SyntaxError: /, "");
  return { line, column, what };
}

/** A place in the script: its file:line:column when it is a file, else "line L, column C of ORIGIN". */
function place(line, column) {
  return SCRIPT_SOURCE.startsWith("/") ? `${SCRIPT_SOURCE}:${line}:${column}`
    : `line ${line}, column ${column} of ${SCRIPT_SOURCE}`;
}

/** The place in the script of the eval'd frame in `stack` (the script's own code threw), or null. */
function scriptFrame(stack) {
  const m = /<anonymous>:(\d+):(\d+)/.exec(stack);
  return m === null ? null : place(Number(m[1]), Number(m[2]));
}

/** `err` (what the host reports) placed where the script's own code threw `thrown`, when it did:
 * its message and its stack (the host's `where`) name the script's line, not this module's. */
function inScript(err, thrown) {
  const where = scriptFrame(thrown instanceof Error ? thrown.stack ?? "" : "");
  if (where === null) return err;
  err.message = `${err.message} at ${where}`;
  err.stack = `${err.name}: ${err.message}${SCRIPT_SOURCE.startsWith("/") ? `\n    at ${where}` : ""}`;
  return err;
}

const NOT_A_MODULE = /\b(?:module|exports|require) is not defined|Illegal return statement|'(?:import|export)'/;
const SHAPE = "a usage script is not a module: cc-switch evaluates it as one expression, ({ request: { ... }, " +
  "extractor: function (response) { ... } }), with no export, module.exports or return";
const DECLARED = "end it with the object itself, its completion value (({ ... }), or the name of the variable " +
  "that holds it), as cc-switch reads it";

/** An error of the script at load, as its user can act on it: where in the script (the parser's
 * place for a SyntaxError, the eval's frame for a throw), never a line of this generated module;
 * and the shape cc-switch evaluates when the script was written as a module or ends in a
 * declaration (`export default`, `module.exports =`, `return`, `const config = {...};`). */
async function explained(e, filled) {
  if (!(e instanceof Error)) return e;
  let where = null;
  let said = "";
  if (e instanceof SyntaxError) {
    const found = await syntaxPlace(filled);
    if (found !== null) [where, said] = [place(found.line, found.column), found.what];
  } else {
    where = scriptFrame(e.stack ?? ""); // a throw in the script: its own line
  }
  const hint = NOT_A_MODULE.test(e.message) ? SHAPE
    : e.message === "the script must evaluate to an object" ? DECLARED : "";
  const out = new Error(`${e.message}${where === null ? ` (in ${SCRIPT_SOURCE})` : ` at ${where}`}${
    said ? `: ${said}` : ""}${hint ? `; ${hint}` : ""}`);
  out.name = e.name;
  out.stack = `${out.name}: ${out.message}`; // no frame of this module: it is not where the mistake is
  return out;
}

// ------------------------------------------------------------------ the grant

/** Stand-ins evaluated at load: two sets, so that a host that follows a value shows. */
const PROBES = [0, 1].map((k) => ({
  apiKey: `api-key-${k}`, baseUrl: `https://base-url-${k}.invalid`, accessToken: `access-token-${k}`,
  userId: `user-id-${k}`,
}));

function hostOf(url) {
  try {
    return new URL(url.trim()).host;
  } catch {
    return null;
  }
}

/** The script's grant, from its request.url under two sets of stand-in values: the configured
 * baseUrl's host, or the one fixed host it names. */
function grantOf() {
  const [hostA, hostB] = PROBES.map((v) => hostOf(evaluate(v).request.url));
  if (hostA === "base-url-0.invalid" && hostB === "base-url-1.invalid") return { viaBaseUrl: true, fixedHost: null };
  if (hostA === null) {
    throw new TypeError(`request.url must be built from {{baseUrl}} or be an absolute URL, got ${
      evaluate(PROBES[0]).request.url.slice(0, 80)}${spelling}`);
  }
  if (hostA !== hostB || /invalid$|api-key|access-token|user-id/.test(hostA)) {
    throw new TypeError("request.url: a placeholder may not name the host (only {{baseUrl}} may)");
  }
  return { viaBaseUrl: false, fixedHost: hostA };
}

const { viaBaseUrl, fixedHost } = await (async () => {
  try {
    return grantOf();
  } catch (e) {
    throw await explained(e, fillScript(SCRIPT, PROBES[0]));
  }
})();
// The values the script uses (a missing one is "not configured", never sent empty): those
// fillScript fills in, so not one in a comment, which cc-switch's plain replace fills to no effect.
const used = new Set();
fillScript(SCRIPT, Object.defineProperties({}, Object.fromEntries(NAMES.map((name) => [name, {
  get: () => (used.add(name), PROBES[0][name]),
}]))));

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
  for (const name of NAMES) {
    const value = config?.[name];
    v[name] = value == null ? "" : String(value);
  }
  v.baseUrl = v.baseUrl.trim().replace(/(?<!\/)\/+$/, ""); // (?<!\/): one try per run of "/" (4 s at 64 K)
  return v;
}

function missing(v) {
  return [...used].filter((name) => v[name] === "");
}

function buildRequest(spec) {
  const r = spec.request;
  const method = r.method ?? (r.body == null ? "GET" : "POST");
  if (r.method == null) warnOnce(`request.method is missing (${method} is used)`);
  const headers = {};
  for (const [name, value] of Object.entries(r.headers ?? {})) headers[name] = String(value);
  let body = r.body;
  if (body != null && /^(GET|HEAD)$/i.test(String(method))) {
    // fetch cannot send one
    warnOnce(`request.body on a ${String(method).toUpperCase()} request is not sent (cc-switch sends it)`, false);
    body = undefined;
  }
  if (body != null && typeof body !== "string") {
    warnOnce("request.body is not a string (sent as JSON)");
    body = JSON.stringify(body);
  }
  return {
    url: r.url.trim(),
    init: { method: String(method).toUpperCase(), headers, body: body ?? undefined },
  };
}

const HEADER_TEXT = /^[\t\x20-\x7e]*$/; // what a configured value may put in a header
// What cc-switch's reqwest sends of the script's own text: any but control characters, as UTF-8
// bytes (http's HeaderValue::from_bytes refuses bytes below 32 but tab, and 127)
const SCRIPT_HEADER_TEXT = /^[^\x00-\x08\x0a-\x1f\x7f]*$/;

/** Why the request's headers cannot be sent, naming the header and the config value that holds
 * what it cannot carry (a user id in a Chinese IME's fullwidth digits, which the relay would
 * take for another user, a token with a line break), or null. A secret's character is never
 * shown. The script's own text outside ASCII is sent (utf8Headers). */
function headerProblem(headers, v) {
  for (const [name, value] of Object.entries(headers)) {
    if (HEADER_TEXT.test(value)) continue;
    const field = NAMES.find((n) => v[n] !== "" && value.includes(v[n]) && !HEADER_TEXT.test(v[n]));
    if (field === undefined && SCRIPT_HEADER_TEXT.test(value)) continue;
    const bad = [...value].find((c) => !(field === undefined ? SCRIPT_HEADER_TEXT : HEADER_TEXT).test(c));
    const secret = field !== undefined && SECRET_FIELDS.includes(field);
    const what = `${secret ? "a character" : `'${bad.trim() ? bad : " "}'`} (U+${
      bad.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")})`;
    return field === undefined
      ? `request.headers["${name}"] holds ${what}, which an HTTP header cannot carry: change the script`
      : `${field} holds ${what}, which the ${name} header cannot carry: type it again in ASCII`;
  }
  return null;
}

/** ``headers`` with each value outside ASCII as its UTF-8 bytes, one Latin-1 character a byte
 * (fetch takes a ByteString and sends its bytes: what reqwest sends of a Rust string). */
function utf8Headers(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    out[name] = HEADER_TEXT.test(value) ? value : Array.from(new TextEncoder().encode(value), (b) => String.fromCharCode(b)).join("");
  }
  return out;
}

function expectedHost(v) {
  if (!viaBaseUrl) return fixedHost;
  const host = hostOf(v.baseUrl);
  if (host === null) throw fail("PROVIDER_ERROR", "baseUrl is not a URL");
  return host;
}

function number(value, field) {
  if (value == null) return undefined;
  if (typeof value === "number") {
    if (Number.isFinite(value)) return value;
    warnOnce(`${field} is ${value}: shown as no amount, as cc-switch's JSON makes it null`, false);
    return undefined;
  }
  const n = value === "" ? NaN : Number(String(value).replace(/[,\s]/g, ""));
  if (!Number.isFinite(n)) throw fail("PARSE_ERROR", `${field} is not a number: ${String(value).slice(0, 40)}`);
  warnOnce(`${field} is a string, not a number`);
  return n;
}

/** The extractor's answer (one object, or a list of plans) as a balance result: the first plan
 * is the headline, as cc-switch's card shows `usageDataList[0]` (UsageFooter.tsx), valid or not;
 * every plan is in rawData.plans. A headline with `isValid: false` and an amount is still an
 * answer, marked `invalid` (cc-switch shows its amount in red); with no amount it is AUTH_ERROR. */
function normalise(out) {
  const plans = Array.isArray(out) ? out : [out];
  if (plans.length === 0) throw fail("PARSE_ERROR", "the extractor returned an empty list");
  for (const [i, p] of plans.entries()) {
    if (p === null || typeof p !== "object") {
      throw fail("PARSE_ERROR", `the extractor returned ${p === null ? "null" : typeof p}${
        plans.length > 1 ? ` at [${i}]` : ""}, not an object`);
    }
  }
  const at = plans.length > 1 ? " of plan 1" : "";
  for (const [i, p] of plans.entries()) { // cc-switch's validate_single_usage refuses any other
    if (p.isValid == null || typeof p.isValid === "boolean") continue;
    const shown = typeof p.isValid === "string" ? `'${p.isValid.slice(0, 20)}'` : typeof p.isValid;
    if (i === 0) throw fail("PARSE_ERROR", `isValid${at} must be true, false or null, got ${shown}`);
    warnOnce(`isValid of plan ${i + 1} is ${shown}, not true, false or null`);
  }
  const head = plans[0];
  const invalid = head.isValid === false;
  const why = () => String(head.invalidMessage || "the key is not valid").slice(0, 300);
  const remaining = number(head.remaining, `remaining${at}`);
  const used = number(head.used, `used${at}`);
  const total = number(head.total, `total${at}`);
  if (remaining === undefined && used === undefined) {
    if (invalid) throw fail("AUTH_ERROR", why());
    throw fail("PARSE_ERROR", `the plan${at} has neither a remaining nor a used amount`);
  }
  // -1 is "no limit": as the remaining amount, or as the total of a plan that gives no remaining
  // (cc-switch's first New API template reports an unlimited key as { total: -1, used }).
  const unlimited = remaining === UNLIMITED || (remaining === undefined && total === UNLIMITED);
  const result = {
    balance: remaining === undefined || unlimited ? null : remaining,
    currency: head.unit == null || head.unit === "" ? null : String(head.unit),
    rawData: { plans, headline: 0 },
  };
  if (unlimited) result.unlimited = true;
  if (invalid) {
    result.invalid = true;
    result.invalidMessage = why();
  }
  if (total !== undefined && total !== UNLIMITED) result.quota = total;
  if (used !== undefined) result.usedQuota = used;
  if (head.planName != null) result.planName = String(head.planName);
  if (head.extra != null) result.extra = String(head.extra);
  return result;
}

export async function queryBalance(config, ctx) {
  const v = values(config);
  const absent = missing(v);
  if (absent.length) {
    throw fail("NOT_CONFIGURED", `${absent.join(", ")} not configured`);
  }
  let spec;
  try {
    spec = evaluate(v);
  } catch (e) {
    throw inScript(fail("PARSE_ERROR", `the script failed: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`), e);
  }
  const { url, init } = buildRequest(spec);
  const unsendable = headerProblem(init.headers, v);
  if (unsendable !== null) throw fail("NOT_CONFIGURED", unsendable);
  const target = hostOf(url);
  if (target === null) throw fail("PROVIDER_ERROR", "request.url is not a URL once filled in");
  const host = expectedHost(v);
  if (target !== host) throw fail("PROVIDER_ERROR", `request.url leads to ${target}, not ${host}`);
  let response;
  try {
    response = await ctx.fetchJson(url, { ...init, headers: utf8Headers(init.headers) });
  } catch (e) {
    if (spelling && e instanceof PluginError) throw fail(e.errorType, `${e.message}${spelling}`, e.details);
    throw e;
  }
  let out;
  try {
    out = spec.extractor(response);
    if (out !== null && typeof out === "object" && typeof out.then === "function") {
      // cc-switch calls it synchronously: the Promise serialises as {}, a card with nothing on it
      warnOnce("the extractor is async (returns a Promise), which cc-switch does not await: its card would be empty",
        false);
      out = await out;
    }
  } catch (e) {
    throw inScript(fail("PARSE_ERROR", `the extractor threw: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`), e);
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
  let request;
  try {
    request = buildRequest(evaluate(v)); // the headers these values make (a script that fails says so at query)
  } catch {
    return true;
  }
  const unsendable = headerProblem(request.init.headers, v);
  return unsendable === null ? true : { valid: false, message: unsendable };
}

export function healthCheck(config) {
  const absent = missing(values(config));
  return absent.length ? { healthy: false, message: `${absent.join(", ")} not configured` } : { healthy: true };
}
