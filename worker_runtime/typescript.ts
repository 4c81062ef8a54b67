/**
 * TypeScript for execute code (`language: "typescript"`). Executions run in node:vm contexts,
 * which take JavaScript only, so the types go first, in the worker, through the type stripper
 * built into the deno binary (`node:module` stripTypeScriptTypes, swc): nothing vendored,
 * nothing fetched, and the stripping runs on the code as a string: none of it runs before its
 * own context does. Strip mode blanks the types in place, so every line and column stays where
 * the caller wrote it; what strip mode cannot erase (enum, namespace, parameter properties) is
 * transformed instead, and its lines may move. Types are not checked.
 */

import { firstDecorator, MAX_STRIPPED_NESTING, nestingOf } from "./nesting.ts";

type Strip = (code: string, options?: { mode?: "strip" | "transform" }) => string;
let strip: Strip | undefined;

/** Loads the stripper (before the main realm is frozen: node:module defines as it loads). */
export async function loadTypeScript(): Promise<void> {
  strip ??= (await import("node:module")).stripTypeScriptTypes as unknown as Strip;
}

/** Marks the answer to an execution whose TypeScript does not parse: the host makes it a 400
 * (InvalidCode) instead of a failed execution. Code could throw this type itself; it would
 * only turn its own answer into that 400. */
export const INVALID_CODE = "INVALID_CODE";

/** Its code is not TypeScript that parses: message names the line and column. */
export class TypeScriptSyntaxError extends SyntaxError {
  errorType = INVALID_CODE;
  constructor(message: string) {
    super(message);
    this.name = "SyntaxError";
    this.stack = `SyntaxError: ${message}`;
  }
}

// (?<!\s): one try per run of white space, not one at each (3.7 s on a message quoting 64 K spaces)
const WHERE = /(?<!\s)\s+at file:\/\/\/stripTypeScriptTypes\.ts:(\d+):(\d+)\s*$/;

/** `code` with its types removed; TypeScriptSyntaxError when it does not parse. */
export function toJavaScript(code: string): string {
  if (!strip) throw new Error("the TypeScript stripper is not loaded (loadTypeScript)");
  if (nestingOf(code, true) > MAX_STRIPPED_NESTING) {
    throw new TypeScriptSyntaxError(`TypeScript nested deeper than ${MAX_STRIPPED_NESTING} levels (brackets, type ` +
      "arguments, arrows and chains of operators or prefix words counted together, nesting.ts): the type " +
      "stripper would overflow its stack");
  }
  try {
    return strip(code, { mode: "strip" });
  } catch {
    // strip mode names no place for a syntax error, and refuses enums and namespaces
  }
  let out: string;
  try {
    out = strip(code, { mode: "transform" });
  } catch (e) {
    const text = String((e as Error)?.message ?? e).replace(/^SyntaxError: /, "");
    const at = WHERE.exec(text);
    const first = text.split("\n")[0].replace(/ at file:\/\/\/stripTypeScriptTypes\.ts:\d+:\d+$/, "");
    throw new TypeScriptSyntaxError(at
      ? `TypeScript syntax error at <execute>:${at[1]}:${at[2]}: ${first}`
      : `TypeScript syntax error: ${first}`);
  }
  const decorated = firstDecorator(out) && firstDecorator(code);
  if (decorated) { // kept as written by the transform, and V8 runs no decorator: a SyntaxError lines away
    const before = code.slice(0, decorated.index);
    const line = before.split("\n").length;
    const column = before.length - before.lastIndexOf("\n");
    throw new TypeScriptSyntaxError(`TypeScript decorator at <execute>:${line}:${column} (${decorated.name}): ` +
      "decorators are not supported in /execute code (V8 does not run them); call the function on what it decorates");
  }
  return out;
}
