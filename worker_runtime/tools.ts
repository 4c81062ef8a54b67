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

/** The crypto settings of one execution: the operator's, narrowed by what its request said
 * (the host computes them, `execute.tool_settings.crypto`; applied here only ever narrowing). */
export function narrowedCrypto(given: unknown): CryptoToolSettings {
  if (given === null || typeof given !== "object") return cryptoSettings;
  const g = given as Record<string, unknown>;
  const methods = Array.isArray(g.methods) ? g.methods : cryptoSettings.methods;
  return {
    subtle: cryptoSettings.subtle && g.subtle !== false,
    methods: cryptoSettings.methods.filter((m) => methods.includes(m)),
    max_bytes: typeof g.max_bytes === "number" ? Math.min(g.max_bytes, cryptoSettings.max_bytes) : cryptoSettings.max_bytes,
    max_ops: cryptoSettings.max_ops,
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
  for (const fn of Object.values(tool)) if (typeof fn === "function") Object.freeze(fn);
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
const TABLE = Symbol("db.table");
const ORDER = Symbol("db.order");
type ColumnRef = { readonly [COLUMN]: string };
type Ordering = { readonly [ORDER]: [string, "asc" | "desc"] };
/** Result keys to rename (Drizzle's `select({ alias: db.users.id })`): [alias, column] pairs. */
type Rename = [string, string][];

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
  between: (column: unknown, low: unknown, high: unknown): Cond =>
    ["and", ["gte", columnName(column), dbValue(low)], ["lte", columnName(column), dbValue(high)]],
  notBetween: (column: unknown, low: unknown, high: unknown): Cond =>
    ["or", ["lt", columnName(column), dbValue(low)], ["gt", columnName(column), dbValue(high)]],
  asc: (column: unknown): Ordering => Object.freeze({ [ORDER]: [columnName(column) as string, "asc"] }),
  desc: (column: unknown): Ordering => Object.freeze({ [ORDER]: [columnName(column) as string, "desc"] }),
});

function tableName(t: unknown): string {
  const name = t !== null && (typeof t === "object" || typeof t === "function") ? (t as Record<symbol, unknown>)[TABLE] : undefined;
  if (typeof name !== "string") throw new TypeError("db.query: from(), insert(), update() and delete() take a table (db.users)");
  return name;
}

/** Drizzle's fields (`{ alias: db.users.id }`) as columns, and how to rename them in each row. */
function fieldsOf(fields: unknown): { columns?: string[]; rename?: Rename } {
  if (fields === undefined) return {};
  if (fields === null || typeof fields !== "object" || Array.isArray(fields)) {
    throw new TypeError("db.query: select() and returning() take nothing or an object of fields ({ id: db.users.id })");
  }
  const rename: Rename = Object.entries(fields).map(([alias, c]) => [alias, columnName(c) as string]);
  return { columns: rename.map(([, c]) => c), rename: rename.some(([a, c]) => a !== c) ? rename : undefined };
}

function renamed(rows: unknown, rename: Rename | undefined): unknown {
  if (!rename || !Array.isArray(rows)) return rows;
  return rows.map((row) => Object.fromEntries(rename.map(([alias, c]) => [alias, (row as Record<string, unknown>)[c]])));
}

function runDb(state: CallState, op: string, args: unknown[]): Promise<unknown> {
  if (state.settled) return Promise.reject(new TypeError(`db: the execution that owned this tool has ended`));
  return hostCall(op, args, state.id);
}

/** A statement being built; awaiting it runs it (once per await, as a query builder does). */
class DbStatement implements PromiseLike<unknown> {
  #query: DbQuery;
  #state: CallState;
  #rename: Rename | undefined;
  constructor(state: CallState, query: DbQuery, rename?: Rename) {
    this.#state = state;
    this.#query = query;
    this.#rename = rename;
  }
  #with(extra: Partial<DbQuery>, rename = this.#rename): DbStatement {
    return new DbStatement(this.#state, { ...this.#query, ...extra }, rename);
  }
  /** A condition; `undefined` adds none (as Drizzle's `where(ok ? eq(...) : undefined)`). */
  where(cond: unknown): DbStatement {
    if (cond === undefined) return this;
    const c = condition(cond);
    return this.#with({ where: this.#query.where ? ["and", this.#query.where, c] : c });
  }
  /** `orderBy("id", "desc")`, or Drizzle's `orderBy(desc(db.users.id), db.users.name)`. */
  orderBy(...by: unknown[]): DbStatement {
    const order: [string, string][] = by.length === 2 && typeof by[1] === "string"  // Drizzle takes no strings
      ? [[columnName(by[0]) as string, by[1]]]
      : by.map((o) => o !== null && typeof o === "object" && ORDER in o ? (o as Ordering)[ORDER] : [columnName(o) as string, "asc"]);
    return this.#with({ order_by: [...(this.#query.order_by ?? []), ...order] });
  }
  limit(n: number): DbStatement {
    return this.#with({ limit: n });
  }
  offset(n: number): DbStatement {
    return this.#with({ offset: n });
  }
  returning(...columns: unknown[]): DbStatement {
    if (columns.length === 1 && columns[0] !== null && typeof columns[0] === "object" && !Array.isArray(columns[0]) &&
      !(COLUMN in columns[0])) {
      const { columns: cols, rename } = fieldsOf(columns[0]);  // Drizzle's returning({ id: db.users.id })
      return this.#with({ returning: cols }, rename);
    }
    return this.#with({ returning: columns.length ? columns.flat().map(columnName) as string[] : true });
  }
  then<A = unknown, B = never>(
    onFulfilled?: ((value: unknown) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    const rename = this.#rename;
    return runDb(this.#state, "db.query", [this.#query]).then((rows) => renamed(rows, rename)).then(onFulfilled, onRejected);
  }
  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<unknown> {
    return this.then(undefined, onRejected);
  }
  finally(onFinally?: (() => void) | null): Promise<unknown> {
    return this.then().finally(onFinally);
  }
  /** Drizzle's `execute()`: runs it, as awaiting does. */
  execute(): Promise<unknown> {
    return this.then();
  }
}
// Drizzle's methods the db tool does not have: a clear refusal, not "is not a function".
for (const name of ["leftJoin", "rightJoin", "innerJoin", "fullJoin", "groupBy", "having", "onConflictDoNothing",
  "onConflictDoUpdate", "prepare", "toSQL", "$dynamic"]) {
  Object.defineProperty(DbStatement.prototype, name, {
    value() {
      throw new TypeError(`db: ${name}() is not supported; one table per query, with where, orderBy, limit, ` +
        "offset and returning (docs/execute.md)");
    },
  });
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
      key === TABLE ? table
      : typeof key !== "string" || key === "then" ? undefined
      : TABLE_METHODS.has(key) ? target[key] : Object.freeze({ [COLUMN]: key }),
  });
}

/** `db.query`: the seed's Drizzle instance, its core query builder over the same statements
 * (`db.query.select().from(db.users).where(eq(db.users.id, 1))`, `db.query.insert(db.users)
 * .values(row).returning()`, `update(t).set({...}).where(...)`, `delete(t).where(...)`) and its
 * relational queries (`db.query.query.users.findMany({...})`). */
/** A step of a Drizzle statement that is not one yet: awaited, a TypeError saying what is missing
 * (it was "value is not serializable: function", code of before reading a table named query). */
function unfinished(what: string, next: string, step: Record<string, unknown>): unknown {
  return Object.freeze({
    ...step,
    then: (_ok: unknown, failed?: (e: unknown) => unknown) =>
      failed?.(new TypeError(`db.query.${what} is awaited without .${next}: db.query is the seed's Drizzle ` +
        "instance (db.query.select().from(db.users)); a table named query is db.query.query.query")),
  });
}

function queryBuilder(state: CallState, tx: number | undefined, transaction: unknown, rollback: unknown): unknown {
  const on = (table: unknown): DbQuery => tx === undefined ? { table: tableName(table) } : { table: tableName(table), tx };
  const own: Record<string, unknown> = {
    select: (fields?: unknown) => {
      const { columns, rename } = fieldsOf(fields);
      return unfinished("select()", "from(table)", {
        from: (table: unknown) => new DbStatement(state, { ...on(table), columns }, rename),
      });
    },
    insert: (table: unknown) => {
      const q = on(table);
      return unfinished("insert(table)", "values(row)", {
        values: (v: unknown) => new DbStatement(state, { ...q, op: "insert", values: Array.isArray(v) ? v : [v] }),
      });
    },
    update: (table: unknown) => {
      const q = on(table);
      return unfinished("update(table)", "set({...})", {
        set: (v: unknown) => new DbStatement(state, { ...q, op: "update", values: v }),
      });
    },
    delete: (table: unknown) => new DbStatement(state, { ...on(table), op: "delete" }),
    query: new Proxy(Object.freeze({}), {
      get: (_t, key) => typeof key !== "string" || key === "then" ? undefined : tableApi(state, key, tx),
    }),
    execute: () => {
      throw new TypeError("db.query.execute: execute code sends no SQL; build the query (docs/execute.md)");
    },
  };
  if (transaction) own.transaction = transaction;
  if (rollback) own.rollback = rollback;
  return Object.freeze(own);
}

class TransactionRollbackError extends Error {
  override name = "TransactionRollbackError";
}

function makeDb(state: CallState, tx: number | undefined, drizzle = false): unknown {
  // db.transaction's tx is a db; db.query.transaction's (Drizzle's) is a db.query
  const transaction = (asQuery: boolean) => async (fn: (tx: unknown) => unknown): Promise<unknown> => {
    if (tx !== undefined) throw new TypeError("db.transaction: transactions do not nest");
    if (typeof fn !== "function") throw new TypeError("db.transaction takes an async function (tx) => ...");
    const id = (await runDb(state, "db.begin", [])) as number;
    let out: unknown;
    try {
      out = await fn(makeDb(state, id, asQuery));
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
  const query = queryBuilder(state, tx, tx === undefined && transaction(true), tx !== undefined && rollback);
  if (drizzle) return query;
  const own: Record<string, unknown> = { operators: OPERATORS, query };
  if (tx === undefined) own.transaction = transaction(false);
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

/**
 * What the tools hand every execution that is one object for the whole worker: the process's
 * crypto and its SubtleCrypto (behind each tool's proxy), the statement class and its prototype,
 * the operators, the error classes. Not reachable from the lent globals, so `harden` froze none of
 * them: one execution gave crypto.subtle a prototype of its own and forged the next caller's
 * digests, and replaced DbStatement.prototype.then and read (and replayed, with the next
 * caller's write grant) its rows (helper-105). `harden` freezes these too.
 */
export function toolSurfaces(): unknown[] {
  return [realCrypto, realCrypto.subtle, DbStatement, OPERATORS, TransactionRollbackError, ResourceLimitExceeded];
}
