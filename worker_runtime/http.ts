/**
 * `context.fetchJson(url, init?)`: one HTTP request whose failures arrive as typed PluginErrors,
 * the mapping every provider plugin needs:
 *
 *   402, 403, 429 whose body's code says the balance or quota is used up
 *                       PROVIDER_ERROR   details { status, code }
 *   401, 403            AUTH_ERROR       details { status }
 *   429                 RATE_LIMIT       details { status, retryAfter } (seconds, from Retry-After)
 *   5xx, other non-2xx  PROVIDER_ERROR   details { status }
 *   a body not JSON     PARSE_ERROR      details { status }
 *   no answer           NETWORK_ERROR    (refused, reset, DNS, TLS)
 *   cancelled/deadline  TIMEOUT
 *
 * A permission refusal (NotCapable, the egress proxy's PermissionDenied) is rethrown as it is:
 * it is the sandbox speaking, not the provider. Messages quote at most 200 characters of a body.
 */

type ErrorFactory = (errorType: string, message: string, details?: unknown) => Error;

const SNIPPET = 200;

function snippet(text: string): string {
  // deno-lint-ignore no-control-regex
  const flat = text.replace(/[\x00-\x08\x0e-\x1f\x7f]/g, "\ufffd").replace(/\s+/g, " ").trim(); // no NUL in a message
  return flat.length > SNIPPET ? flat.slice(0, SNIPPET) + "…" : flat;
}

/** The body as text, decoded as reqwest's `text()` decodes it (cc-switch reads usage answers so): a
 * BOM's encoding, else the Content-Type's charset, else UTF-8. `Response.text()` assumes UTF-8
 * always: a `charset=gbk` answer lost its Chinese to U+FFFD and a UTF-16 one was "not JSON". */
async function bodyText(response: Response): Promise<string> {
  const bytes = new Uint8Array(await response.arrayBuffer());
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? "utf-8"
    : bytes[0] === 0xff && bytes[1] === 0xfe ? "utf-16le" : bytes[0] === 0xfe && bytes[1] === 0xff ? "utf-16be"
    : undefined;
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)/i.exec(response.headers.get("content-type") ?? "")?.[1];
  for (const label of [bom, charset, "utf-8"]) {
    if (label === undefined) continue;
    try {
      return new TextDecoder(label).decode(bytes); // a label no decoder knows: the next one
    } catch {
      continue;
    }
  }
  return new TextDecoder().decode(bytes);
}

/** Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; undefined if absent. */
export function retryAfterSeconds(value: string | null, now = Date.now()): number | undefined {
  if (value == null || value.trim() === "") return undefined;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, (at - now) / 1000);
}

function isSandboxRefusal(e: unknown): boolean {
  const name = (e as { name?: unknown })?.name;
  return name === "NotCapable" || name === "PermissionDenied" || name === "ResourceLimitExceeded";
}

/** The URL as a debug line shows it: every query value masked (keys travel there too). */
function shown(url: string | URL): string {
  try {
    const u = new URL(String(url));
    for (const k of [...u.searchParams.keys()]) u.searchParams.set(k, "***");
    u.username = u.password = "";
    return u.href.replace(/%2A%2A%2A/g, "***");
  } catch {
    return snippet(String(url));
  }
}

// The codes relays and providers answer when the account's balance or quota is used up, whatever
// the status (sub2api: 403 INSUFFICIENT_BALANCE, 429 USAGE_LIMIT_EXCEEDED; OpenAI: 429
// insufficient_quota; new-api/one-api: insufficient_user_quota): read as a bad key or a rate
// limit, a station with an empty wallet raised a "failing: AUTH_ERROR" alert, or was retried.
const BILLING = /^(insufficient_balance|insufficient_quota|insufficient_user_quota|usage_limit_exceeded|quota_exceeded|billing_hard_limit_reached)$/i;

function billingCode(text: string): string | undefined {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = body !== null && typeof body === "object" ? body as Record<string, unknown> : {};
  const e = o.error !== null && typeof o.error === "object" ? o.error as Record<string, unknown> : {};
  for (const v of [o.code, e.code, e.type, o.type]) {
    if (typeof v === "string" && BILLING.test(v)) return v;
  }
  return undefined;
}

/** `init` with a plain object or array `body` sent as JSON (`content-type: application/json`
 * unless the caller set one), as ky, ofetch and axios send it: fetch itself would send the
 * text "[object Object]". */
function jsonBody(init: RequestInit): RequestInit {
  const body = init.body as unknown;
  if (body === null || typeof body !== "object") return init;
  // of any realm: /execute code's objects are its own context's, whose Object.prototype is not ours
  const proto = Object.getPrototypeOf(body);
  const plain = Object.prototype.toString.call(body) === "[object Object]" &&
    (proto === null || Object.getPrototypeOf(proto) === null);
  if (!Array.isArray(body) && !plain) return init;
  const headers = new Headers(init.headers ?? undefined);
  if (!headers.has("content-type")) headers.set("content-type", "application/json");
  return { ...init, headers, body: JSON.stringify(body) };
}

export async function fetchJson(
  fail: ErrorFactory,
  signal: AbortSignal,
  url: string | URL,
  init: RequestInit = {},
  trace: (line: string) => void = () => {},
): Promise<unknown> {
  const where = (() => {
    try {
      return new URL(String(url)).host;
    } catch {
      throw fail("PROVIDER_ERROR", `not a URL: ${snippet(String(url))}`);
    }
  })();
  const aborted = () => signal.aborted || init.signal?.aborted;
  const request = `${String(init.method ?? "GET").toUpperCase()} ${shown(url)}`;
  const started = Date.now();
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, { ...jsonBody(init), signal: init.signal ?? signal });
    text = await bodyText(response);
    trace(`fetchJson ${request} -> ${response.status}, ${text.length} characters, ${Date.now() - started} ms`);
  } catch (e) {
    trace(`fetchJson ${request} -> failed after ${Date.now() - started} ms`);
    if (isSandboxRefusal(e)) throw e;
    if (aborted()) throw fail("TIMEOUT", `${where}: the request was cancelled (${String(signal.reason ?? "deadline")})`);
    const why = e instanceof Error ? e.message : String(e);
    const cause = e instanceof Error && e.cause instanceof Error ? e.cause.message : "";
    const refused = /Requires net access to "([^"]+)"/.exec(cause);
    if (refused) { // the name resolved to an address the host denies every plugin by default
      throw fail("NETWORK_ERROR", `${where} resolves to ${refused[1]}, a private, loopback or local address ` +
        "that plugins may not reach; an operator allows it with allow_private_network = true under " +
        "[plugins.<id>] in host.toml", { refusedAddress: refused[1], setting: "allow_private_network" });
    }
    // fetch says only "fetch failed"; why (refused, reset, DNS, TLS) is in its cause (helper-113),
    // which quotes the whole URL: its path and query (a key in it) stay out, as they do above
    const said = cause.replace(/\bhttps?:\/\/[^\s)]*/g, (u) => {
      try {
        return new URL(u).host;
      } catch {
        return "the URL";
      }
    });
    throw fail("NETWORK_ERROR", `${where}: ${snippet(said && !why.includes(said) ? `${why}: ${said}` : why)}`);
  }
  const status = response.status;
  const billing = status === 402 || status === 403 || status === 429 ? billingCode(text) : undefined;
  if (billing) { // the account's money or quota is used up: the key itself is good, waiting will not help
    throw fail("PROVIDER_ERROR", `${where} answered ${status} (${billing}: the balance or quota is used up): ` +
      `${snippet(text)}`, { status, code: billing });
  }
  if (status === 401 || status === 403) {
    throw fail("AUTH_ERROR", `${where} answered ${status}: ${snippet(text) || response.statusText}`, { status });
  }
  if (status === 429) {
    const retryAfter = retryAfterSeconds(response.headers.get("retry-after"));
    throw fail("RATE_LIMIT", `${where} answered 429: ${snippet(text) || "too many requests"}`,
      retryAfter === undefined ? { status } : { status, retryAfter });
  }
  if (status < 200 || status >= 300) {
    throw fail("PROVIDER_ERROR", `${where} answered ${status}: ${snippet(text) || response.statusText}`, { status });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw fail("PARSE_ERROR", `${where} answered ${status} with a body that is not JSON: ${snippet(text)}`, { status });
  }
}
