/**
 * What the worker changes in the global scope before any plugin code runs: PluginError and
 * ErrorTypes as globals, Worker capped at limits.max_web_workers (and none nested), and fetch
 * turning the egress proxy's verdicts into typed errors when the proxy is on.
 */

import { cap, ErrorTypes, PluginError, ResourceLimitExceeded } from "./errors.ts";
import { limits } from "./wire.ts";

export function defineGlobal(name: string, value: unknown): void {
  Object.defineProperty(globalThis, name, { value, writable: true, configurable: true, enumerable: false });
}

// Web Workers: each is a V8 isolate with a heap of its own (the heap cap is per isolate), so a
// plugin may keep at most limits.max_web_workers alive, and a Worker may start none: every
// Worker first runs NO_NESTED, which replaces its Worker constructor before the plugin's code.
//
// The native constructor must not be reachable from plugin code: CappedWorker is a plain
// function (a class extending Worker would have it as its prototype), and the prototype's
// `constructor` names CappedWorker. (RLIMIT_DATA, set by the host, bounds Workers anyway:
// each isolate reserves its code range against it.)
const NativeWorker = globalThis.Worker;
const NativeTerminate = NativeWorker.prototype.terminate;
const NO_NESTED = `Object.defineProperty(globalThis, "Worker", { configurable: false, writable: false,
  value: class Worker { constructor() { const e = new Error("a Worker may not start Workers");
    e.name = "ResourceLimitExceeded"; throw e; } } });\n`;
let liveWebWorkers = 0;
const aliveWorkers = new WeakSet<object>();

function CappedWorker(this: unknown, specifier: string | URL, options?: WorkerOptions): Worker {
  if (!new.target) throw new TypeError("Worker must be called with new");
  if (liveWebWorkers >= limits.max_web_workers) {
    throw new ResourceLimitExceeded(
      `a plugin may run at most ${limits.max_web_workers} Workers at once (limits.max_web_workers)`,
    );
  }
  const url = new URL(String(specifier), globalThis.location?.href).href;
  const boot = `${NO_NESTED}await import(${JSON.stringify(url)});\n`;
  const w = Reflect.construct(NativeWorker, [`data:application/javascript;base64,${btoa(boot)}`, options], new.target);
  liveWebWorkers++;
  aliveWorkers.add(w);
  return w;
}

CappedWorker.prototype = Object.create(NativeWorker.prototype, {
  constructor: { value: CappedWorker, writable: true, configurable: true },
  terminate: {
    value: function terminate(this: Worker): void {
      if (aliveWorkers.delete(this)) liveWebWorkers--;
      NativeTerminate.call(this);
    },
    writable: true,
    configurable: true,
  },
});
Object.defineProperty(NativeWorker.prototype, "constructor", { value: CappedWorker, configurable: false, writable: false });


// With the host's egress proxy on, its verdicts become typed errors: "refused" (a private
// address, a host not granted) is a sandbox refusal, "too-large" a resource cap.
const nativeFetch = globalThis.fetch;

async function egressFetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const r = await nativeFetch(input, init);
  const verdict = r.headers.get("x-plugin-host-egress");
  if (verdict === "refused" || verdict === "too-large") {
    const why = cap(await r.text().catch(() => ""), 1000);
    if (verdict === "refused") throw new Deno.errors.NotCapable(`egress proxy refused the request: ${why}`);
    throw new ResourceLimitExceeded(`egress proxy: ${why}`);
  }
  return r;
}

/** Installs the globals above; called once, before the plugin is imported. */
export function installGlobals(): void {
  defineGlobal("PluginError", PluginError);
  defineGlobal("ErrorTypes", ErrorTypes);
  defineGlobal("Worker", CappedWorker);
}

/** With the host's egress proxy on, fetch is egressFetch. */
export function useEgressProxy(): void {
  defineGlobal("fetch", egressFetch);
}
