/**
 * What hardening changes in an execute worker's main realm, so that code of one execution can
 * neither reach nor leave behind anything that acts in another (isolate.ts `harden` applies it):
 * its function constructors throw, its RegExp keeps no last match, listeners made in an
 * execution's context run only while it runs, and frozen prototypes still let instances take
 * their own properties. Also which execution a value belongs to (`ownerOf`).
 */

// deno-lint-ignore-file no-explicit-any

/** Loads node:util's proxy test (execute workers only). */
export async function loadLockdown(): Promise<void> {
  isProxy = (await import("node:util")).types.isProxy;
}

let isProxy: (v: unknown) => boolean = () => false;

/** The execution running now, if any (execute.ts: the only call in flight). */
let running: () => { settled: boolean } | undefined = () => undefined;

export function setRunning(fn: () => { settled: boolean } | undefined): void {
  running = fn;
}

const NOBODY = { settled: true }; // the owner of what no running execution can answer for

/**
 * The main realm's function constructors, reached from any function it lends
 * (`fetch.constructor("return this")()`), would give an execution the main realm's global
 * object: its `process`, its timers and console (credited to whichever execution runs next),
 * its socket. As SES's lockdown does, `constructor` on the four function prototypes becomes a
 * constructor that throws (same name and prototype, so `instanceof` and name checks still work);
 * the runtime and Deno keep the global bindings, which no execution can reach.
 */
export function tameFunctionConstructors(): void {
  const protos: Array<[object, string]> = [
    [Function.prototype, "Function"],
    [Object.getPrototypeOf(async function () {}), "AsyncFunction"],
    [Object.getPrototypeOf(function* () {}), "GeneratorFunction"],
    [Object.getPrototypeOf(async function* () {}), "AsyncGeneratorFunction"],
  ];
  for (const [proto, name] of protos) {
    const tamed = {
      [name]: function () {
        throw new TypeError(`${name} constructor is not available to execute code`);
      },
    }[name];
    Object.defineProperty(tamed, "prototype", { value: proto, writable: false, configurable: false });
    Object.defineProperty(proto, "constructor", { value: tamed, writable: true, configurable: true });
  }
}

/**
 * The main realm's RegExp constructor is reachable (`structuredClone(/x/).constructor`), and its
 * legacy statics (`RegExp.input`, `lastMatch`, `$1`..`$9`, `leftContext`, ...) hold what Deno's
 * own code last matched for whichever execution ran: a Blob's type, a header's name. As SES's
 * lockdown does, they are removed (every string-keyed accessor of the constructor); nothing in
 * Deno or the runtime reads them, and each context keeps its own RegExp with its own.
 */
export function tameRegExpStatics(): void {
  for (const key of Object.getOwnPropertyNames(RegExp)) {
    const d = Reflect.getOwnPropertyDescriptor(RegExp, key);
    if (d && "get" in d && d.configurable) delete (RegExp as any)[key];
  }
}

/**
 * Code an execution leaves on the main realm's event targets (a listener on a lent
 * `AbortSignal.timeout`, a `MessagePort`'s `onmessage`) would run after it settled, during
 * another caller's execution on this worker, and could spin there. A listener (a function, a
 * `handleEvent` object, an `on*` handler) made in an execution's context is registered wrapped,
 * and the wrapper calls it only while that execution runs (the same listener gets the same
 * wrapper, so adding it twice and removing it behave as before). What no context made but may
 * call one (a proxy, a bound main-realm function, a main-realm object with a handleEvent) is
 * the running execution's. Plain main-realm functions (Deno's, the runtime's) are registered as
 * they are.
 */
export function guardListeners(lent: readonly string[]): void {
  const fnToString = Function.prototype.toString;
  const NATIVE = /\{\s*\[native code\]\s*\}$/;
  // A plain function of the main realm (Deno's, the runtime's) has one of its four prototypes; one
  // given another (null: helper-105's listener ran during the next caller's execution) is no such.
  const MAIN_FUNCTIONS = new Set<unknown>([Function.prototype, Object.getPrototypeOf(async function () {}),
    Object.getPrototypeOf(function* () {}), Object.getPrototypeOf(async function* () {})]);
  const wrappers = new WeakMap<object, (ev: unknown) => unknown>();
  const originals = new WeakMap<object, unknown>();
  const guarded = (listener: unknown): unknown => {
    if (listener === null || (typeof listener !== "object" && typeof listener !== "function")) return listener;
    // What no context made may still call one: a proxy (its getPrototypeOf may lie), a main-realm
    // function bound to a context's (native code, as bound functions print), a main-realm object
    // given a handleEvent. It is the running execution's, or, registered between executions,
    // nobody's. The runtime's own listeners are plain functions of the main realm.
    let owner = ownerOf(listener);
    if (!owner && (isProxy(listener) || typeof listener !== "function" ||
        !MAIN_FUNCTIONS.has(Object.getPrototypeOf(listener)) || NATIVE.test(fnToString.call(listener)))) {
      owner = running() ?? NOBODY;
    }
    if (!owner) return listener;
    let wrapper = wrappers.get(listener as object);
    if (!wrapper) {
      wrapper = function (this: unknown, ev: unknown): unknown {
        if (owner.settled) return undefined;
        if (typeof listener === "function") return Reflect.apply(listener, this, [ev]);
        const handle = (listener as { handleEvent?: unknown }).handleEvent;
        return typeof handle === "function" ? Reflect.apply(handle, listener, [ev]) : undefined;
      };
      wrappers.set(listener as object, wrapper);
      originals.set(wrapper, listener);
    }
    return wrapper;
  };
  const proto = (globalThis as any).EventTarget.prototype;
  const add = proto.addEventListener, remove = proto.removeEventListener;
  Object.defineProperty(proto, "addEventListener", {
    value: function addEventListener(this: unknown, type: unknown, listener: unknown, options?: unknown) {
      return Reflect.apply(add, this, [type, guarded(listener), options]);
    },
    writable: true, configurable: true,
  });
  Object.defineProperty(proto, "removeEventListener", {
    value: function removeEventListener(this: unknown, type: unknown, listener: unknown, options?: unknown) {
      const wrapper = listener !== null && (typeof listener === "object" || typeof listener === "function")
        ? wrappers.get(listener as object) : undefined;
      return Reflect.apply(remove, this, [type, wrapper ?? listener, options]);
    },
    writable: true, configurable: true,
  });
  // Node's EventEmitter methods of the global MessageChannel's ports (node:vm's NodeMessageChannel
  // gives each port its own on/once/addListener/...): they register a wrapper of Deno's, so a
  // listener added with port.on ran on after its execution settled, during the next caller's.
  // The lent MessageChannel guards each port it makes (and is the only constructor reachable).
  const Channel = (globalThis as any).MessageChannel;
  if (typeof Channel === "function") {
    const guardPort = (port: any): void => {
      for (const name of ["on", "once", "addListener", "prependListener", "prependOnceListener"]) {
        const fn = port?.[name];
        if (typeof fn === "function") {
          port[name] = function (this: unknown, type: unknown, listener: unknown) {
            return Reflect.apply(fn, this, [type, guarded(listener)]);
          };
        }
      }
      for (const name of ["off", "removeListener"]) {
        const fn = port?.[name];
        if (typeof fn === "function") {
          port[name] = function (this: unknown, type: unknown, listener: unknown) {
            const wrapper = listener !== null && (typeof listener === "object" || typeof listener === "function")
              ? wrappers.get(listener as object) : undefined;
            return Reflect.apply(fn, this, [type, wrapper ?? listener]);
          };
        }
      }
    };
    const MessageChannel = function MessageChannel(this: unknown) {
      if (!new.target) throw new TypeError("Class constructor MessageChannel cannot be invoked without 'new'");
      const channel = Reflect.construct(Channel, [], new.target); // a subclass's instance stays one
      guardPort(channel.port1);
      guardPort(channel.port2);
      return channel;
    };
    MessageChannel.prototype = Channel.prototype;
    Object.defineProperty(Channel.prototype, "constructor", { value: MessageChannel, writable: true, configurable: true });
    Object.defineProperty(globalThis, "MessageChannel", { value: MessageChannel, writable: true, configurable: true });
  }
  // on* handlers: every event handler attribute of what is lent (AbortSignal, MessagePort, ...)
  const seen = new Set<object>();
  for (const name of lent) {
    let p = (globalThis as any)[name]?.prototype;
    for (; p && p !== Object.prototype && !seen.has(p); p = Object.getPrototypeOf(p)) {
      seen.add(p);
      for (const key of Object.getOwnPropertyNames(p)) {
        const d = Reflect.getOwnPropertyDescriptor(p, key)!;
        if (!key.startsWith("on") || !d.set || !d.get || !d.configurable) continue;
        const { get, set } = d;
        Object.defineProperty(p, key, {
          get(this: unknown) {
            const v = Reflect.apply(get, this, []);
            return v !== null && typeof v === "function" && originals.has(v) ? originals.get(v) : v;
          },
          set(this: unknown, v: unknown) {
            Reflect.apply(set, this, [typeof v === "function" ? guarded(v) : v]);
          },
          enumerable: d.enumerable, configurable: true,
        });
      }
    }
  }
}

/**
 * The "override mistake": once a prototype is frozen, `err.name = "X"` on an instance throws
 * (the inherited property is read-only), and much code, Deno's and ours, names its errors that
 * way. As SES does, the properties code commonly overrides become accessors whose setter makes
 * an own property on the instance (and refuses a change to the prototype itself). Returns the
 * values now behind the accessors, for `harden` to freeze: a getter's answer is no property its
 * walk meets, and an execution gave the function behind Object.prototype.toString its own `call`,
 * which the runtime's encoder runs on every later caller's result.
 */
export function tameOverrides(): unknown[] {
  const tamed: unknown[] = [];
  const g = globalThis as any;
  const errors = ["Error", "TypeError", "RangeError", "SyntaxError", "ReferenceError", "EvalError",
    "URIError", "AggregateError"].map((n) => g[n]?.prototype).filter(Boolean);
  const plan: Array<[object, string[]]> = [
    [Object.prototype, ["constructor", "hasOwnProperty", "isPrototypeOf", "propertyIsEnumerable",
      "toLocaleString", "toString", "valueOf"]],
    [Function.prototype, ["constructor", "bind", "name", "toString", "apply", "call"]],
    [Array.prototype, ["toString", "constructor"]],
    [Promise.prototype, ["constructor"]],
    [Object.getPrototypeOf(async function () {}), ["constructor"]],
    [Object.getPrototypeOf(function* () {}), ["constructor"]],
    [Object.getPrototypeOf(async function* () {}), ["constructor"]],
    ...errors.map((proto): [object, string[]] => [proto, ["constructor", "message", "name", "toString"]]),
  ];
  // Node's MessageChannel (the global one once node:vm is loaded) gives each port its own
  // ref/unref/on/... by assignment: with MessagePort.prototype frozen, new MessageChannel() threw.
  const port = g.MessagePort?.prototype;
  if (port) {
    plan.push([port, Object.getOwnPropertyNames(port).filter((k) => typeof Reflect.getOwnPropertyDescriptor(port, k)?.value === "function")]);
  }
  for (const [proto, keys] of plan) {
    for (const key of keys) {
      const d = Reflect.getOwnPropertyDescriptor(proto, key);
      if (!d || !("value" in d) || !d.configurable) continue;
      const value = d.value;
      tamed.push(value);
      Object.defineProperty(proto, key, {
        get() {
          return value;
        },
        set(this: object, v: unknown) {
          if (this === proto) throw new TypeError(`Cannot assign to read only property '${key}' of a frozen prototype`);
          Object.defineProperty(this, key, { value: v, writable: true, enumerable: true, configurable: true });
        },
        enumerable: d.enumerable,
        configurable: false,
      });
    }
  }
  return tamed;
}

/** The Promise and Object prototypes of live contexts, to tell which execution a rejected
 * promise or a thrown value belongs to. */
export const owners = new WeakMap<object, { settled: boolean }>();

/** The execution (not yet collected) whose context made `value` (a promise, an error, any
 * object: found through its prototype chain), if any. */
export function ownerOf(value: unknown): { settled: boolean } | undefined {
  let o = value;
  try {
    for (let i = 0; i < 32 && o !== null && (typeof o === "object" || typeof o === "function"); i++) {
      o = Object.getPrototypeOf(o); // a proxy's trap may throw or lie: it can only name its own realm
      const owner = owners.get(o as object);
      if (owner) return owner;
    }
  } catch {
    // no owner found
  }
  return undefined;
}
