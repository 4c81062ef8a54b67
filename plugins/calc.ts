/**
 * Example plugin: a calculator. Shows sync and async exports, logging, the call context and
 * typed errors. Try it: `python -m host call calc add 1 2`.
 */
import type { Context, PluginMetadata } from "../worker_runtime/plugin.d.ts";

export const metadata: PluginMetadata = {
  id: "calc",
  name: "Calculator",
  version: "1.0.0",
  apiVersion: "1.0",
  description: "Arithmetic over the plugin protocol (an example).",
  author: "Plugin Host",
  capabilities: [],
};

export function add(a: number, b: number): number {
  return a + b;
}

export async function sum(values: number[], ctx: Context): Promise<number> {
  console.log(`summing ${values.length} values`);
  let total = 0;
  for (const v of values) {
    if (ctx.signal.aborted) throw new PluginError(ErrorTypes.TIMEOUT, "cancelled");
    if (typeof v !== "number") throw new PluginError(ErrorTypes.PARSE_ERROR, `not a number: ${v}`);
    total += v;
  }
  return total;
}

export function divide(a: number, b: number): number {
  if (b === 0) throw new RangeError("division by zero");
  return a / b;
}
