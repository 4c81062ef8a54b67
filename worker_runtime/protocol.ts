/**
 * The wire protocol as the worker sees it: the TypeScript mirror of host/protocol.py. Every frame
 * is a 4-byte big-endian length and one MessagePack map whose `type` names the message.
 *
 * `MESSAGES` lists, for each message, its tag and its fields (required first, then optional) so
 * that tests/test_protocol_ts.py can check this file against msgspec's schema of protocol.py:
 * a field added on one side and not the other fails that test.
 */

export type Id = number | bigint;

/** A thrown JavaScript value, normalised (protocol.py ErrorInfo). */
export interface ErrorInfo {
  name: string;
  message: string;
  stack?: string;
  error_type?: string;
  details?: unknown;
}

/** Settings the host hands a worker at handshake (protocol.py Limits). */
export interface Limits {
  heartbeat_interval_ms: number;
  heartbeat_timeout_ms: number;
  max_frame: number;
  max_log_entries: number;
  max_log_bytes: number;
  max_inflight: number;
  max_result_bytes: number;
  max_web_workers: number;
  egress_proxy: number; // 1: fetch goes through the host's egress proxy
  max_host_calls: number;
  harden: number; // 1: executions of several callers share this worker: freeze the main realm
  max_exports: number; // functions the module may export: more fail its load
}

// worker -> host

export interface Hello { type: "hello"; cookie: string; protocol: number; token: string; pid?: number; runtime?: string }
/** What an exported function declares it takes (protocol.py Signature; signature.ts). */
export interface Signature { length: number; params?: string[]; rest?: boolean }
export interface Ready {
  type: "ready";
  metadata?: unknown;
  exports?: string[];
  signatures?: Record<string, Signature>;
  error?: ErrorInfo;
}
export interface Result { type: "result"; id: Id; value?: unknown }
export interface ErrorMsg { type: "error"; id: Id; error: ErrorInfo }
export interface Log {
  type: "log";
  level: string;
  message: string;
  id?: Id;
  ts?: number;
  name?: string;
  stack?: string;
}
export interface HostCall { type: "host_call"; id: Id; op: string; args?: unknown[]; call?: Id }

// host -> worker

export interface Welcome {
  type: "welcome";
  plugin_id: string;
  module?: string;
  config?: unknown;
  limits?: Partial<Limits>;
  tools?: Record<string, unknown>;
}
export interface Reject { type: "reject"; reason: string }
export interface Call {
  type: "call";
  id: Id;
  fn: string;
  args?: unknown[];
  timeout_ms?: number;
  context_at?: number; // the context's index: args padded with undefined up to it; -1: no context
}
export interface Execute {
  type: "execute";
  id: Id;
  code: string;
  entry?: string;
  input?: unknown;
  timeout_ms?: number;
  tools?: string[];
  language?: "javascript" | "typescript";
  /** Per tool, what the request narrowed (crypto: subtle, methods, max_bytes), as the host computed it. */
  tool_settings?: Record<string, unknown>;
}
export interface Cancel { type: "cancel"; id: Id; reason?: string }
export interface HostReply { type: "host_reply"; id: Id; value?: unknown; error?: ErrorInfo }
export interface Deliver { type: "deliver"; event: string; data?: unknown }
/** A lifecycle hook: "stop" runs onStop(context); "config_change" sets the config, then runs
 * onConfigChange(config, context). Answered by result (true: ran; false: not exported) or error. */
export interface Hook { type: "hook"; id: Id; name: string; config?: unknown; timeout_ms?: number }
export interface Shutdown { type: "shutdown"; reason?: string }

// both ways

export interface Ping { type: "ping"; seq: number }
export interface Pong { type: "pong"; seq: number }

export type FromWorker = Hello | Ready | Result | ErrorMsg | Log | HostCall | Ping | Pong;
export type FromHost = Welcome | Reject | Call | Execute | Cancel | HostReply | Deliver | Hook | Shutdown | Ping | Pong;

/** Each message's tag, required fields and optional fields, by its name in protocol.py. */
export const MESSAGES = {
  Hello: { tag: "hello", required: ["cookie", "protocol", "token"], optional: ["pid", "runtime"] },
  Ready: { tag: "ready", required: [], optional: ["metadata", "exports", "signatures", "error"] },
  Result: { tag: "result", required: ["id"], optional: ["value"] },
  Error: { tag: "error", required: ["id", "error"], optional: [] },
  Log: { tag: "log", required: ["level", "message"], optional: ["id", "ts", "name", "stack"] },
  HostCall: { tag: "host_call", required: ["id", "op"], optional: ["args", "call"] },
  Welcome: { tag: "welcome", required: ["plugin_id"], optional: ["module", "config", "limits", "tools"] },
  Reject: { tag: "reject", required: ["reason"], optional: [] },
  Call: { tag: "call", required: ["id", "fn"], optional: ["args", "timeout_ms", "context_at"] },
  Execute: {
    tag: "execute",
    required: ["id", "code"],
    optional: ["entry", "input", "timeout_ms", "tools", "language", "tool_settings"],
  },
  Cancel: { tag: "cancel", required: ["id"], optional: ["reason"] },
  HostReply: { tag: "host_reply", required: ["id"], optional: ["value", "error"] },
  Deliver: { tag: "deliver", required: ["event"], optional: ["data"] },
  Hook: { tag: "hook", required: ["id", "name"], optional: ["config", "timeout_ms"] },
  Shutdown: { tag: "shutdown", required: [], optional: ["reason"] },
  Ping: { tag: "ping", required: ["seq"], optional: [] },
  Pong: { tag: "pong", required: ["seq"], optional: [] },
} as const;

/** The fields of the structs messages carry (protocol.py ErrorInfo and Limits). */
export const STRUCTS = {
  ErrorInfo: ["name", "message", "stack", "error_type", "details"],
  Signature: ["length", "params", "rest"],
  Limits: [
    "heartbeat_interval_ms", "heartbeat_timeout_ms", "max_frame", "max_log_entries", "max_log_bytes",
    "max_inflight", "max_result_bytes", "max_web_workers", "egress_proxy", "max_host_calls", "harden",
    "max_exports",
  ],
} as const;

/** The handshake constants (protocol.py MAGIC_COOKIE, PROTOCOL_VERSION). */
export const MAGIC_COOKIE = "PLUGIN_HOST_7f3a9c2e";
export const PROTOCOL_VERSION = 1;

/** Lifecycle hooks (protocol.py HOOKS): a hook message's name -> the export it runs. */
export const HOOKS: Record<string, string> = { start: "onStart", stop: "onStop", config_change: "onConfigChange" };
