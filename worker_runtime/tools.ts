/**
 * The tools of an execution (as in Isolate): crypto, with only the allowed methods a bounded
 * number of times, and db, read-only queries the host runs.
 */

import type { CallState } from "./calls.ts";
import { hostCall } from "./context.ts";
import { ResourceLimitExceeded } from "./errors.ts";

// The crypto tool (as in Isolate): in an execute worker, the global `crypto` is only there for code
// that asked for the tool, and then only the allowed methods, a bounded number of times.

interface CryptoToolSettings {
  subtle: boolean;
  methods: string[];
  max_bytes: number;
  max_ops: number;
}

const realCrypto = globalThis.crypto;
export let cryptoSettings: CryptoToolSettings = { subtle: true, methods: [], max_bytes: 65536, max_ops: 1000 };

/** An execute worker's tool settings, from the welcome. */
export function readToolSettings(tools: Record<string, unknown>): void {
  const s = (tools.crypto ?? {}) as Record<string, unknown>;
  cryptoSettings = {
    subtle: s.subtle !== false,
    methods: Array.isArray(s.methods) ? s.methods.filter((m) => typeof m === "string") : [],
    max_bytes: typeof s.max_bytes === "number" ? s.max_bytes : 65536,
    max_ops: typeof s.max_ops === "number" ? s.max_ops : 1000,
  };
}

/** The crypto tool of one execution: only the allowed methods, each use counted against it;
 * dead once it settled. */
export function makeCryptoTool(settings: CryptoToolSettings, state: CallState): unknown {
  const count = (what: string) => {
    if (state.settled) throw new TypeError(`crypto.${what}: the execution that owned this tool has ended`);
    state.cryptoOps = (state.cryptoOps ?? 0) + 1;
    if (state.cryptoOps > settings.max_ops) {
      throw new ResourceLimitExceeded(`crypto: more than ${settings.max_ops} operations (${what})`);
    }
  };
  const tool: Record<string, unknown> = {};
  if (settings.methods.includes("getRandomValues")) {
    tool.getRandomValues = <T extends ArrayBufferView | null>(array: T): T => {
      count("getRandomValues");
      if (array && array.byteLength > settings.max_bytes) {
        throw new ResourceLimitExceeded(
          `crypto.getRandomValues: ${array.byteLength} bytes is over the ${settings.max_bytes}-byte limit`,
        );
      }
      return realCrypto.getRandomValues(array as never) as T;
    };
  }
  if (settings.methods.includes("randomUUID")) {
    tool.randomUUID = () => {
      count("randomUUID");
      return realCrypto.randomUUID();
    };
  }
  if (settings.subtle) {
    const subtle = realCrypto.subtle;
    tool.subtle = new Proxy(subtle, {
      get(target, key) {
        const value = Reflect.get(target, key);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          count(`subtle.${String(key)}`);
          return Reflect.apply(value, target, args);
        };
      },
      set: () => false, // code may not change what other executions use
      defineProperty: () => false,
      deleteProperty: () => false,
    });
  }
  return Object.freeze(tool);
}

// The db tool (the Isolate engine's db examples): `await db.users.select().limit(10)`,
// `await db.users.findMany({ where: { active: true }, limit: 10 })`. Read-only: the worker sends
// the host a structured query and the host, which alone can open the database, builds the SQL.

type DbQuery = {
  table: string;
  columns?: string[];
  where?: Record<string, unknown>;
  order_by?: [string, string][];
  limit?: number;
  offset?: number;
};

function runDbQuery(state: CallState, query: DbQuery): Promise<unknown> {
  if (state.settled) return Promise.reject(new TypeError(`db.${query.table}: the execution that owned this tool has ended`));
  return hostCall("db.select", [query], state.id);
}

/** A query being built; awaiting it runs it. */
class DbSelect implements PromiseLike<unknown> {
  #query: DbQuery;
  #state: CallState;
  constructor(state: CallState, query: DbQuery) {
    this.#state = state;
    this.#query = query;
  }
  where(conditions: Record<string, unknown>): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, where: { ...this.#query.where, ...conditions } });
  }
  orderBy(column: string, direction: "asc" | "desc" = "asc"): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, order_by: [...(this.#query.order_by ?? []), [column, direction]] });
  }
  limit(n: number): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, limit: n });
  }
  offset(n: number): DbSelect {
    return new DbSelect(this.#state, { ...this.#query, offset: n });
  }
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return runDbQuery(this.#state, this.#query).then(onFulfilled, onRejected);
  }
}

interface FindOptions {
  where?: Record<string, unknown>;
  columns?: string[];
  orderBy?: Record<string, "asc" | "desc">;
  limit?: number;
  offset?: number;
}

function tableApi(state: CallState, table: string) {
  const find = (o: FindOptions = {}): DbQuery => ({
    table,
    columns: o.columns,
    where: o.where,
    order_by: o.orderBy ? Object.entries(o.orderBy) : undefined,
    limit: o.limit,
    offset: o.offset,
  });
  return Object.freeze({
    select: (...columns: (string | string[])[]) =>
      new DbSelect(state, { table, columns: columns.length ? columns.flat() : undefined }),
    findMany: (o?: FindOptions) => runDbQuery(state, find(o)),
    findFirst: async (o?: FindOptions) => ((await runDbQuery(state, { ...find(o), limit: 1 })) as unknown[])[0],
  });
}

/** The db tool of one execution. */
export function makeDbTool(state: CallState): unknown {
  return new Proxy(Object.freeze({}), {
    get: (_target, key) => (typeof key === "string" && key !== "then" ? tableApi(state, key) : undefined),
  });
}
