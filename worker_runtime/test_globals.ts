/**
 * Preloaded by `python -m host test` (`deno test --preload`): what the worker defines before a
 * plugin loads, `PluginError` and `ErrorTypes` as globals, so plugin code that throws them runs
 * under its tests as it does in the host, and their types (plugin.d.ts's `declare global`): a
 * plugin using them failed its own tests with "TS2304 Cannot find name 'PluginError'".
 */

import type {} from "./plugin.d.ts";
import { ErrorTypes, PluginError } from "./errors.ts";

for (const [name, value] of [["PluginError", PluginError], ["ErrorTypes", ErrorTypes]] as const) {
  if (!(name in globalThis)) {
    Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
  }
}
