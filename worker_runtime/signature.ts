/**
 * What a plugin's exported function declares it takes, reported to the host at load (the
 * `signatures` of the ready message): `length` (JavaScript's count of parameters before the
 * first default or rest one), the parameter names read from the function's source (TypeScript
 * types are already stripped there), and whether it ends with a rest parameter. The host
 * decides from these whether a call gives enough arguments (host/arity.py); this only reports.
 */

import type { Signature } from "./protocol.ts";

const MAX_SOURCE = 64 * 1024; // a huge function's source is not worth parsing

/** What `fn` declares it takes; null when it is a class: calling it without `new` throws ("Class
 * constructor X cannot be invoked without 'new'"), so it is no function a caller can call. Its
 * source is read once (this runs for every export at every worker's start). */
export function signatureOf(fn: (...args: unknown[]) => unknown): Signature | null {
  let text: string | undefined;
  try {
    text = Function.prototype.toString.call(fn);
  } catch {
    // no source to read: its length only
  }
  if (text !== undefined && text.startsWith("class") && !isWord(text.charCodeAt(5))) return null;
  const sig: Signature = { length: fn.length };
  if (text === undefined) return sig;
  const params = parameterList(text.length > MAX_SOURCE ? text.slice(0, MAX_SOURCE) : text);
  if (params === null) return sig;
  const names: string[] = [];
  for (const p of params) {
    const name = trimmed(p);
    if (name !== "") names.push(name);
  }
  sig.rest = names.length > 0 && names[names.length - 1].startsWith("...");
  sig.params = names.map(paramName);
  return sig;
}

// Scanned by hand, character codes only, no regular expression: this runs at every worker's
// start, and each JavaScript feature it touches (the regexp compiler, string builtins) maps
// more of the deno binary into the idle worker (bench/RESULTS.md, idle RSS).

/** A parameter's name, without "..." or a default: for an object pattern its top-level keys
 * (`{query, limit}`: the host tells the context's `{log, signal}` from an options object by
 * them), "[]" for an array pattern. */
function paramName(p: string): string {
  const bare = p.startsWith("...") ? p.slice(3) : p;
  if (bare.startsWith("{")) return patternKeys(bare);
  if (bare.startsWith("[")) return "[]";
  const eq = bare.indexOf("=");
  return trimmed(eq < 0 ? bare : bare.slice(0, eq));
}

/** `{a, b: {c}, d = 1, ...e}` as "{a, b, d, e}"; a key that is no plain name (quoted, computed) as "?". */
function patternKeys(text: string): string {
  const keys: string[] = [];
  let depth = 0;
  let quote = 0;
  let expectKey = true;
  for (let i = 1; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (quote) {
      if (c === 92) i++;
      else if (c === quote) quote = 0;
      continue;
    }
    if (expectKey && depth === 0) {
      if (isSpace(c)) continue;
      if (c === 125) break; // } of an empty pattern or after a trailing comma
      if (c === 46 && text.charCodeAt(i + 1) === 46 && text.charCodeAt(i + 2) === 46) i += 3;
      let j = i;
      while (j < text.length && isWord(text.charCodeAt(j))) j++;
      keys.push(j > i ? text.slice(i, j) : "?");
      expectKey = false;
      if (j > i) {
        i = j - 1;
        continue;
      }
    }
    if (c === 34 || c === 39 || c === 96) quote = c;
    else if (c === 40 || c === 91 || c === 123) depth++;
    else if (c === 41 || c === 93) depth--;
    else if (c === 125) {
      if (depth === 0) break;
      depth--;
    } else if (c === 44 && depth === 0) expectKey = true;
  }
  return `{${keys.join(", ")}}`;
}

/** Whitespace as String.prototype.trim (and /\s/) sees it. */
function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
    c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

/** A character of /[\w$]/. */
function isWord(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95 || c === 36;
}

function trimmed(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isSpace(s.charCodeAt(a))) a++;
  while (b > a && isSpace(s.charCodeAt(b - 1))) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/** The top-level, comma-separated parameters of a function's source (not a class's), or null
 * (source this does not understand). */
function parameterList(text: string): string[] | null {
  let i = text.indexOf("(");
  const arrow = text.indexOf("=>");
  if (arrow >= 0 && (i < 0 || arrow < i)) { // `x => ...`: one bare parameter
    let head = trimmed(text.slice(0, arrow));
    if (head.startsWith("async") && isSpace(head.charCodeAt(5))) head = trimmed(head.slice(5));
    if (head === "") return null;
    for (let k = 0; k < head.length; k++) if (!isWord(head.charCodeAt(k))) return null;
    return [head];
  }
  if (i < 0) return null;
  const out: string[] = [];
  let depth = 0;
  let quote = 0;
  let start = ++i;
  for (; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (quote) {
      if (c === 92) i++; // backslash
      else if (c === quote) quote = 0;
      continue;
    }
    if (c === 34 || c === 39 || c === 96) quote = c; // " ' `
    else if (c === 40 || c === 91 || c === 123) depth++; // ( [ {
    else if (c === 93 || c === 125) depth--; // ] }
    else if (c === 41) { // )
      if (depth === 0) {
        out.push(text.slice(start, i));
        return out;
      }
      depth--;
    } else if (c === 44 && depth === 0) { // ,
      out.push(text.slice(start, i));
      start = i + 1;
    } else if (c === 47) { // comments: give up
      const d = text.charCodeAt(i + 1);
      if (d === 47 || d === 42) return null;
    }
  }
  return null;
}
