/**
 * Ad-hoc code (POST /execute): the execute frame, each execution in a context of its own
 * (isolate.ts) with the tools it asked for (tools.ts), TypeScript stripped first (typescript.ts).
 * Only an execute worker loads this module, at its welcome (worker.ts): a plugin's worker never
 * pays for node:vm, the hardening or these modules (bench/RESULTS.md, idle RSS).
 */

import { calls, executor, fail, invoke, newCall, tracker } from "./calls.ts";
import { makeContext } from "./context.ts";
import { makeConsole } from "./console.ts";
import { importError } from "./errors.ts";
import { compileErrors, harden, loadVm, nextExecution, prepareSpare } from "./isolate.ts";
import { ownerOf, setRunning } from "./lockdown.ts";
import {
  hostToolNames,
  makeCryptoTool,
  makeDbTool,
  makeHostTool,
  moduleTools,
  narrowedCrypto,
  readToolSettings,
  setupModuleTool,
  toolSurfaces,
} from "./tools.ts";
import { loadTypeScript, toJavaScript, TypeScriptSyntaxError } from "./typescript.ts";
import { limits, type Msg, optionalArray, optionalNumber, protocolError, requireId, requireString } from "./wire.ts";

/** Makes this worker an execute worker: the tools' settings, node:vm, the TypeScript stripper,
 * the hardened main realm when limits.harden is 1, then execute frames and escaped errors. */
export async function startExecuting(tools: unknown): Promise<void> {
  if (tools != null) readToolSettings(tools as Record<string, unknown>);
  await loadVm();
  await loadTypeScript();
  if (limits.harden === 1) await harden(toolSurfaces());
  executor.onExecute = onExecute;
  executor.ownerOf = ownerOf;
  setRunning(() => tracker.getStore());
}

export function onExecute(msg: Msg): void {
  const id = requireId(msg.id, "execute.id");
  const code = requireString(msg.code, "execute.code");
  const entry = msg.entry == null ? "default" : requireString(msg.entry, "execute.entry");
  const timeoutMs = optionalNumber(msg.timeout_ms, "execute.timeout_ms");
  const tools = optionalArray(msg.tools, "execute.tools");
  const language = msg.language == null ? "javascript" : requireString(msg.language, "execute.language");
  if (language !== "javascript" && language !== "typescript") protocolError(`unknown execute.language ${language}`);
  if (calls.has(id)) protocolError(`call id ${id} is already in flight`);
  const state = newCall(id);
  let source = code;
  if (language === "typescript") {
    try {
      source = toJavaScript(code);
    } catch (e) {
      fail(state, e);
      return;
    }
  }
  state.tools = new Set(tools as string[]);
  // Code run by execute is gone when the call settles, and so are its channel handlers. Its
  // context has no cache or storage (executions share nothing), and a channel only with the
  // tool; the host refuses these host calls from execute code all the same.
  const { cache: _cache, storage: _storage, channel: _channel, ...context } = makeContext(state, timeoutMs, state);
  if (state.tools.has("channel")) (context as Record<string, unknown>).channel = _channel;
  // Its own context: its own globals and intrinsics, console, timers and tools (isolate.ts).
  // crypto and db are bindings for every execution, undefined unless it asked for the tool.
  const globals: Record<string, unknown> = { console: makeConsole(state), crypto: undefined, db: undefined };
  const settings = (msg.tool_settings ?? {}) as Record<string, unknown>;
  if (state.tools.has("crypto")) globals.crypto = makeCryptoTool(narrowedCrypto(settings.crypto), state);
  if (state.tools.has("db") || state.tools.has("db:write")) globals.db = makeDbTool(state);
  if (state.tools.has("channel")) globals.channel = _channel;
  for (const name of state.tools) if (hostToolNames.has(name)) globals[name] = makeHostTool(name, state);
  try {
    state.execution = nextExecution().claim(state, globals, (e) => fail(state, e));
  } catch (e) {
    fail(state, e);
    return;
  }
  const execution = state.execution;
  if (limits.harden === 1) prepareSpare();  // the next execution's context, made while idle
  tracker.run(state, invoke, state, async () => {
    for (const name of state.tools!) {
      const tool = moduleTools.get(name);
      if (tool) await setupModuleTool(execution, name, tool);
    }
    let fn;
    try {
      fn = await execution.load(source, entry);
    } catch (e) {
      // stripped TypeScript V8 does not parse (an unclosed block the stripper let through,
      // helper-111): InvalidCode as the stripper's own refusals, not an execution that failed
      if (language === "typescript" && compileErrors.has(e as object)) throw compileError(e as Error);
      throw importError(e);
    }
    if (typeof fn !== "function") {
      const err = new Error(`Entry "${entry}" is not a function`);
      err.name = "EntryError";
      throw err;
    }
    const input = msg.input === undefined ? undefined : execution.adopt(msg.input);
    // Isolate calls entry(input): the context goes only to a function declaring a second
    // parameter without a default, so that `(x, factor = 3) => ...` keeps its default
    return await (fn.length >= 2 ? fn(input, context) : fn(input));
  });
}

/** A compile error of stripped TypeScript, as the stripper words its own: the place first. */
function compileError(e: Error): TypeScriptSyntaxError {
  const m = /^(.*) \(at (<execute>:\d+:\d+)\)$/s.exec(String(e.message));
  return new TypeScriptSyntaxError(m ? `TypeScript syntax error at ${m[2]}: ${m[1]}` : `TypeScript syntax error: ${e.message}`);
}
