/**
 * The tools of an execution (as in Isolate): crypto, with only the allowed methods a bounded
 * number of times, db, queries (and, when allowed, writes) the host runs, and the operator's
 * host-function tools, functions the host runs.
 */

import type { CallState } from "./calls.ts";
import { hostCall } from "./context.ts";
import { ResourceLimitExceeded } from "./errors.ts";
import type { Execution } from "./isolate.ts";
import { toJavaScript } from "./typescript.ts";

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
/** The operator's host-function tools ([execute.tools.NAME]), from the welcome. */
export let hostToolNames: Set<string> = new Set();

/** An execute worker's tool settings, from the welcome. */
export function readToolSettings(tools: Record<string, unknown>): void {
  const s = (tools.crypto ?? {}) as Record<string, unknown>;
  cryptoSettings = {
    subtle: s.subtle !== false,
    methods: Array.isArray(s.methods) ? s.methods.filter((m) => typeof m === "string") : [],
    max_bytes: typeof s.max_bytes === "number" ? s.max_bytes : 65536,
    max_ops: typeof s.max_ops === "number" ? s.max_ops : 1000,
  };
  hostToolNames = new Set(Array.isArray(tools.host) ? tools.host.filter((n) => typeof n === "string") : []);
  moduleTools = new Map();
  const modules = tools.modules;
  if (modules !== null && typeof modules === "object") {
    for (const [name, t] of Object.entries(modules as Record<string, Record<string, unknown>>)) {
      if (typeof t?.source !== "string") continue;
      moduleTools.set(name, { source: t.source, config: t.config ?? {}, typescript: t.language === "typescript" });
    }
  }
}

interface ModuleTool {
  source: string;
  config: unknown;
  typescript: boolean;
}
/** The operator's module tools ([execute.tools.NAME] kind = "module"), from the welcome. */
export let moduleTools: Map<string, ModuleTool> = new Map();

/** Run module tool `name` in the execution's context and bind what its `setup(ctx)` returns
 * as the global `name`, before the execution's code runs. */
export async function setupModuleTool(execution: Execution, name: string, tool: ModuleTool): Promise<void> {
  if (tool.typescript) {
    tool.source = toJavaScript(tool.source);  // once per worker
    tool.typescript = false;
  }
  const setup = await execution.load(tool.source, "setup", `<tool:${name}>`);
  if (typeof setup !== "function") {
    throw new TypeError(`tool ${name}: its module exports no setup(ctx) function ([execute.tools.${name}] module)`);
  }
  const api = await setup(execution.adopt({ name, config: tool.config }));
  if (api === undefined) throw new TypeError(`tool ${name}: setup(ctx) returned nothing; it returns what code sees`);
  execution.bind(name, api);
}

/** An operator's tool for one execution: a function whose calls the host runs (the host call
 * `tool.call`, checked there against what the execution asked for); dead once it settled. */
export function makeHostTool(name: string, state: CallState): unknown {
  return Object.freeze((...args: unknown[]): Promise<unknown> => {
    if (state.settled) return Promise.reject(new TypeError(`${name}: the execution that owned this tool has ended`));
    return hostCall("tool.call", [name, args], state.id);
  });
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

// The db tool (the Isolate engine's db): `await db.users.select().where(eq(db.users.id, 1)).limit(10)`,
// `db.users.insert({...}).returning()`, `db.users.update({...}).where(...)`, `db.users.delete()
// .where(...)`, `db.transaction(async (tx) => ...)`, `db.users.findMany({ where, limit })`. The worker
// sends the host a structured query; the host, which alone can open the database, checks every
// name against the schema, binds every value and decides whether a write is allowed.

type Cond = unknown[];
type DbQuery = {
  table: string;
  op?: "select" | "insert" | "update" | "delete";
  columns?: string[];
  where?: Cond;
  order_by?: [string, string][];
  limit?: number;
  offset?: number;
  values?: unknown;
  returning?: string[] | boolean;
  tx?: number;
};

const COLUMN = Symbol("db.column");
type ColumnRef = { readonly [COLUMN]: string };

function columnName(c: unknown): unknown {
  return c !== null && typeof c === "object" && COLUMN in c ? (c as ColumnRef)[COLUMN] : c;
}
/** A Date as ISO text: one made by execute code is its own realm's Date, which `instanceof`
 * the runtime's Date does not see (it was refused as "not a string, number, boolean or null");
 * toISOString reads the internal date value whatever the realm, and throws for anything else. */
function dbValue(v: unknown): unknown {
  if (v === null || typeof v !== "object") return v;
  try {
    return Date.prototype.toISOString.call(v);
  } catch {
    return v;
  }
}
function fromObject(where: Record<string, unknown>): Cond {
  return ["and", ...Object.entries(where).map(([k, v]) => ["eq", k, dbValue(v)])];
}
function condition(c: unknown): Cond {
  if (Array.isArray(c)) return c;
  if (c !== null && typeof c === "object") return fromObject(c as Record<string, unknown>);
  throw new TypeError("db: where() takes a condition (db.operators) or an object of column values");
}

const compare = (op: string) => (column: unknown, value: unknown): Cond => [op, columnName(column), dbValue(value)];
/** The conditions `where()` takes: each is a plain array the host checks and binds. */
const OPERATORS = Object.freeze({
  eq: compare("eq"), ne: compare("ne"), lt: compare("lt"), lte: compare("lte"), gt: compare("gt"),
  gte: compare("gte"), like: compare("like"),
  inArray: (column: unknown, values: unknown[]): Cond => ["in", columnName(column), [...values].map(dbValue)],
  notInArray: (column: unknown, values: unknown[]): Cond => ["notIn", columnName(column), [...values].map(dbValue)],
  isNull: (column: unknown): Cond => ["isNull", columnName(column)],
  isNotNull: (column: unknown): Cond => ["isNotNull", columnName(column)],
  and: (...conds: unknown[]): Cond => ["and", ...conds.filter((c) => c !== undefined).map(condition)],
  or: (...conds: unknown[]): Cond => ["or", ...conds.filter((c) => c !== undefined).map(condition)],
  not: (cond: unknown): Cond => ["not", condition(cond)],
});

function runDb(state: CallState, op: string, args: unknown[]): Promise<unknown> {
  if (state.settled) return Promise.reject(new TypeError(`db: the execution that owned this tool has ended`));
  return hostCall(op, args, state.id);
}

/** A statement being built; awaiting it runs it (once per await, as a query builder does). */
class DbStatement implements PromiseLike<unknown> {
  #query: DbQuery;
  #state: CallState;
  constructor(state: CallState, query: DbQuery) {
    this.#state = state;
    this.#query = query;
  }
  #with(extra: Partial<DbQuery>): DbStatement {
    return new DbStatement(this.#state, { ...this.#query, ...extra });
  }
  where(cond: unknown): DbStatement {
    const c = condition(cond);
    return this.#with({ where: this.#query.where ? ["and", this.#query.where, c] : c });
  }
  orderBy(column: unknown, direction: "asc" | "desc" = "asc"): DbStatement {
    return this.#with({ order_by: [...(this.#query.order_by ?? []), [columnName(column) as string, direction]] });
  }
  limit(n: number): DbStatement {
    return this.#with({ limit: n });
  }
  offset(n: number): DbStatement {
    return this.#with({ offset: n });
  }
  returning(...columns: unknown[]): DbStatement {
    return this.#with({ returning: columns.length ? columns.flat().map(columnName) as string[] : true });
  }
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return runDb(this.#state, "db.query", [this.#query]).then(onFulfilled, onRejected);
  }
}

interface FindOptions {
  where?: unknown;
  columns?: string[];
  orderBy?: Record<string, "asc" | "desc">;
  limit?: number;
  offset?: number;
}

const TABLE_METHODS = new Set(["select", "insert", "update", "delete", "findMany", "findFirst", "findUnique"]);

function tableApi(state: CallState, table: string, tx: number | undefined) {
  const base: DbQuery = tx === undefined ? { table } : { table, tx };
  const find = (o: FindOptions = {}): DbQuery => ({
    ...base,
    columns: o.columns,
    where: o.where === undefined ? undefined : condition(o.where),
    order_by: o.orderBy ? Object.entries(o.orderBy) : undefined,
    limit: o.limit,
    offset: o.offset,
  });
  const first = async (o?: FindOptions) => ((await runDb(state, "db.query", [{ ...find(o), limit: 1 }])) as unknown[])[0];
  const api: Record<string, unknown> = {
    select: (...columns: unknown[]) =>
      new DbStatement(state, { ...base, columns: columns.length ? columns.flat().map(columnName) as string[] : undefined }),
    insert: (values: unknown) =>
      new DbStatement(state, { ...base, op: "insert", values: Array.isArray(values) ? values : [values] }),
    update: (values: unknown) => new DbStatement(state, { ...base, op: "update", values }),
    delete: () => new DbStatement(state, { ...base, op: "delete" }),
    findMany: (o?: FindOptions) => runDb(state, "db.query", [find(o)]),
    findFirst: first,
    findUnique: first,
  };
  // Any other name is a column of the table: `eq(db.users.id, 1)`.
  return new Proxy(Object.freeze(api), {
    get: (target, key) =>
      typeof key !== "string" || key === "then" ? undefined
      : TABLE_METHODS.has(key) ? target[key] : Object.freeze({ [COLUMN]: key }),
  });
}

class TransactionRollbackError extends Error {
  override name = "TransactionRollbackError";
}

function makeDb(state: CallState, tx: number | undefined): unknown {
  const transaction = async (fn: (tx: unknown) => unknown): Promise<unknown> => {
    if (tx !== undefined) throw new TypeError("db.transaction: transactions do not nest");
    if (typeof fn !== "function") throw new TypeError("db.transaction takes an async function (tx) => ...");
    const id = (await runDb(state, "db.begin", [])) as number;
    let out: unknown;
    try {
      out = await fn(makeDb(state, id));
    } catch (e) {
      await runDb(state, "db.rollback", [id]).catch(() => {});
      throw e;
    }
    await runDb(state, "db.commit", [id]);
    return out;
  };
  const rollback = () => {
    throw new TransactionRollbackError("db.transaction: rolled back");
  };
  const own: Record<string, unknown> = { operators: OPERATORS };
  if (tx === undefined) own.transaction = transaction;
  else own.rollback = rollback;
  return new Proxy(Object.freeze(own), {
    get: (target, key) =>
      typeof key !== "string" || key === "then" ? undefined
      : key in target ? target[key] : tableApi(state, key, tx),
  });
}

/** The db tool of one execution. */
export function makeDbTool(state: CallState): unknown {
  return makeDb(state, undefined);
}
