/**
 * What a plugin's exported function declares it takes, reported to the host at load (the
 * `signatures` of the ready message): `length` (JavaScript's count of parameters before the
 * first default or rest one), the parameter names read from the function's source (TypeScript
 * types are already stripped there), and whether it ends with a rest parameter. The host
 * decides from these whether a call gives enough arguments (host/arity.py); this only reports.
 */

import type { Signature } from "./protocol.ts";

const MAX_SOURCE = 64 * 1024; // a huge function's source is not worth parsing

export function signatureOf(fn: (...args: unknown[]) => unknown): Signature {
  const sig: Signature = { length: fn.length };
  let text: string;
  try {
    text = Function.prototype.toString.call(fn);
  } catch {
    return sig;
  }
  const params = parameterList(text.slice(0, MAX_SOURCE));
  if (params === null) return sig;
  const names = params.map((p) => p.trim()).filter((p) => p !== "");
  sig.rest = names.length > 0 && names[names.length - 1].startsWith("...");
  sig.params = names.map((p) => {
    const bare = p.replace(/^\.\.\./, "");
    if (bare.startsWith("{")) return "{}";
    if (bare.startsWith("[")) return "[]";
    return bare.split("=")[0].trim();
  });
  return sig;
}

/** The top-level, comma-separated parameters of a function's source, or null (a class, or
 * source this does not understand). */
function parameterList(text: string): string[] | null {
  if (/^class\b/.test(text)) return null;
  let i = text.indexOf("(");
  const arrow = text.indexOf("=>");
  if (arrow >= 0 && (i < 0 || arrow < i)) { // `x => ...`: one bare parameter
    const head = text.slice(0, arrow).replace(/^async\s+/, "").trim();
    return /^[\w$]+$/.test(head) ? [head] : null;
  }
  if (i < 0) return null;
  const out: string[] = [];
  let depth = 0;
  let quote = "";
  let start = ++i;
  for (; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = "";
      continue;
    }
    if (c === '"' || c === "'" || c === "`") quote = c;
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === "]" || c === "}") depth--;
    else if (c === ")") {
      if (depth === 0) {
        out.push(text.slice(start, i));
        return out;
      }
      depth--;
    } else if (c === "," && depth === 0) {
      out.push(text.slice(start, i));
      start = i + 1;
    } else if (c === "/" && (text[i + 1] === "/" || text[i + 1] === "*")) return null; // comments: give up
  }
  return null;
}
