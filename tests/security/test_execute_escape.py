"""Pooled /execute against code that climbs out of its context (attacker review after issue 14):
the main realm's function constructors were the way to the worker's global object (its
`process`, timers, console and socket), from which one execution forged the next caller's result
and wrote into its logs; what the worker lends was shared state (performance marks, Deno's
permissions, ctx.cache); and the host served host calls of executions that had ended. Each is
closed here, on the host's side where the runtime cannot be trusted."""

from __future__ import annotations

import pytest
from support.plugins import PluginDir, alice_db

from host import ExecuteConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]

ONE_WORKER = ExecuteConfig(min_workers=1, max_workers=1)

ROUTES = """
export default () => {
  const routes = {
    fetchCtor: () => fetch.constructor("return this")(),
    protoCtor: () => Object.getPrototypeOf(fetch).constructor("return this")(),
    objectCtor: () => Deno.constructor.constructor("return this")(),
    reflect: () => Reflect.construct(fetch.constructor, ["return this"])(),
    asyncCtor: () => Object.getPrototypeOf(Deno.readTextFile).constructor("return this"),
    ctxLog: (ctx) => ctx.log.constructor("return this")(),
    ctxObject: (ctx) => ctx.constructor.constructor("return this")(),
    encoder: () => new TextEncoder().encode.constructor("return this")(),
    response: () => Response.json.constructor("return this")(),
  };
  return (ctx) => {
    const out = {};
    for (const [k, f] of Object.entries(routes)) {
      try {
        const g = f(ctx);
        out[k] = g === globalThis ? "own realm" : typeof g?.process === "object" ? "MAIN REALM" : typeof g;
      } catch (e) { out[k] = e.name; }
    }
    return out;
  };
};"""


async def test_no_function_lent_to_an_execution_leads_to_the_workers_global_object(make_host):
    code = ROUTES.replace("export default () => {", "const make = () => {") + \
        "\nexport default (input, ctx) => make()(ctx);"
    async with make_host(execute=ONE_WORKER) as h:
        out = await h.execute(code)
        again = await h.execute("export default () => [typeof fetch.constructor, fetch instanceof Function, "
                                "(async () => 1).constructor('return 2')() instanceof Promise]")
    assert out.ok, out.logs
    assert set(out.result.values()) == {"TypeError"}, out.result
    # the context's own constructors still work; a main-realm function is still a function
    assert again.result == ["function", False, True]


async def test_code_left_behind_writes_nothing_into_the_next_execution(make_host):
    leaver = """
    export default (input, ctx) => {
      const late = () => {
        console.log("INJECTED into the next execution's logs");
        ctx.log("info", "INJECTED through ctx.log");
        Promise.reject(new Error("forged failure planted by A"));
        throw new Error("thrown by a handler left behind");
      };
      AbortSignal.timeout(30).addEventListener("abort", late);
      new EventTarget().addEventListener("x", late);
      return "left";
    };"""
    victim = """
    export default async () => {
      console.log("victim line");
      await new Promise((r) => setTimeout(r, 250));
      return { balance: 1234, note: "genuine" };
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim)
    assert a.ok and a.result == "left"
    assert b.ok, b.logs
    assert b.result == {"balance": 1234, "note": "genuine"}
    assert [e.message for e in b.logs] == ["victim line"]


async def test_performance_marks_and_measures_belong_to_one_execution(make_host):
    async with make_host(execute=ONE_WORKER) as h:
        await h.execute('export default () => { performance.mark("attacker-was-here"); }')
        b = await h.execute("""
        export default (secret) => {
          performance.mark("victim-secret:" + secret);
          performance.mark("end");
          const m = performance.measure("span", "victim-secret:" + secret, "end");
          return [performance.getEntriesByType("mark").map((e) => e.name), m.duration >= 0,
                  typeof performance.now(), performance.timeOrigin > 0];
        }""", "s3cr3t")
        c = await h.execute('export default () => performance.getEntries().map((e) => e.name)')
    assert b.result == [["victim-secret:s3cr3t", "end"], True, "number", True]
    assert c.result == []


async def test_an_execution_cannot_change_the_workers_permissions_or_process(make_host):
    changer = """
    export default () => {
      const out = {};
      const tries = {
        revoke: () => Deno.permissions.revoke({ name: "net" }),
        revokeSync: () => Deno.permissions.revokeSync({ name: "net" }),
        request: () => Deno.permissions.request({ name: "read" }),
        signal: () => Deno.addSignalListener("SIGTERM", () => {}),
        chdir: () => Deno.chdir("/"),
        umask: () => Deno.umask(0),
        envSet: () => Deno.env.set("X", "1"),
        replace: () => { Deno.permissions.query = () => ({ state: "granted" }); },
      };
      for (const [k, f] of Object.entries(tries)) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    probe = """
    export default async () => [(await Deno.permissions.query({ name: "net", host: "example.com" })).state,
                                Deno.cwd() !== "/", typeof Deno.pid];"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(changer, permissions={"net": True})
        b = await h.execute(probe, permissions={"net": True})
    assert a.ok and set(a.result.values()) == {"TypeError"}, a.result
    assert b.result == ["granted", True, "number"]


async def test_execute_code_gets_no_cache_or_storage_and_the_channel_only_with_the_tool(make_host):
    shape = "export default (input, ctx) => [typeof ctx.cache, typeof ctx.storage, typeof ctx.channel, typeof channel]"
    async with make_host(execute=ONE_WORKER) as h:
        bare = await h.execute(shape)
        with_tool = await h.execute(shape, tools=["channel"])
    assert bare.result == ["undefined", "undefined", "undefined", "undefined"]
    assert with_tool.result == ["undefined", "undefined", "object", "object"]


# An execute runtime written by the attacker (raw frames, as if code had reached the socket): it
# sends host calls for an execution that has settled, and for a running one without its tools,
# and reports what the host answered.
RAW_EXECUTE = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    if (welcome?.type !== "welcome") Deno.exit(9);
    await write(frame({ type: "ready", metadata: null, exports: [] }));
    const answers = {};
    let next = 1;
    async function hostCall(op, args, call) {
      const id = next++;
      await write(frame({ type: "host_call", id, op, args, call }));
      for (;;) {
        const msg = await readFrame();
        if (msg === null) Deno.exit(0);
        if (msg.type === "ping") { await write(frame({ type: "pong", seq: msg.seq })); continue; }
        if (msg.type === "host_reply" && msg.id === id) return msg.error ? msg.error.message : "served";
      }
    }
    let settled;
    for (;;) {
      const msg = await readFrame();
      if (msg === null || msg.type === "shutdown") Deno.exit(0);
      if (msg.type === "ping") { await write(frame({ type: "pong", seq: msg.seq })); continue; }
      if (msg.type !== "execute") continue;
      const out = {};
      if (msg.input === "settle") {
        settled = msg.id;
        await write(frame({ type: "result", id: msg.id, value: "settled" }));
        continue;
      }
      out.lateSubscribe = await hostCall("channel.on", ["orders"], settled);
      out.lateCache = await hostCall("log", ["info", "late line"], settled);
      out.noCall = await hostCall("channel.emit", ["orders", 1], undefined);
      out.emitWithoutTool = await hostCall("channel.emit", ["orders", 1], msg.id);
      out.cache = await hostCall("cache.set", ["poison", 1], msg.id);
      out.storage = await hostCall("storage.get", ["k"], msg.id);
      out.unsubscribe = await hostCall("channel.off", ["orders"], settled);
      await write(frame({ type: "result", id: msg.id, value: out }));
    }
"""


async def test_the_host_refuses_host_calls_of_ended_executions_and_beyond_their_tools(
        hostile, plugin_dir: PluginDir, make_host):
    plugin_dir.add("noop.js", "export function ok() { return 1; }\n")
    runtime = hostile(RAW_EXECUTE)
    async with make_host(runtime_entry=str(runtime.entry), execute=ONE_WORKER) as h:
        first = await h.execute("export default () => 0", "settle")
        out = await h.execute("export default () => 0", "probe")
    assert first.result == "settled"
    r = out.result
    assert "the execution that made it has ended" in r["lateSubscribe"]
    assert "the execution that made it has ended" in r["lateCache"]
    assert "the execution that made it has ended" in r["noCall"]
    assert 'tools: ["channel"]' in r["emitWithoutTool"]
    assert "executions share nothing" in r["cache"] and "executions share nothing" in r["storage"]
    assert r["unsubscribe"] == "served"  # leaving is always allowed


async def test_the_main_realms_regexp_statics_keep_nothing_of_another_execution(make_host):
    """A RegExp from the main realm (structuredClone(/x/)) leads to its constructor, whose legacy
    statics (RegExp.input, lastMatch, $1, leftContext...) hold what Deno's own code last matched
    for any execution: a Blob's type, a header's name. One execution read another's that way."""
    reader = """
    export default () => {
      const R = Object.getPrototypeOf(structuredClone(/x/)).constructor;
      const keys = ["input", "$_", "lastMatch", "$&", "lastParen", "$+", "leftContext", "$`",
                    "rightContext", "$'", "$1", "$2", "$9"];
      return [R === RegExp, keys.map((k) => String(R[k])).join("|")];
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        victim = await h.execute("""
        export default (secret) => {
          new Blob(["x"], { type: "text/plain;charset=" + secret });
          new Headers({ ["x-" + secret]: "v" });
          return "done";
        };""", "s3cr3t")
        seen = await h.execute(reader)
    assert victim.ok and victim.result == "done"
    assert seen.ok, seen.logs
    assert seen.result[0] is False  # the main realm's, not the context's own
    assert "s3cr3t" not in seen.result[1], seen.result  # before: "text/plain;charset=s3cr3t"


async def test_an_executions_errors_do_not_show_where_the_host_is_installed(make_host):
    """Every exception an execution met carried the worker runtime's frames, with the host's
    install path (file:///.../site-packages/host/worker_runtime/execute.ts:93:18), to whoever
    may POST /execute. They now read runtime:/execute.ts:93:18."""
    async with make_host(execute=ONE_WORKER) as h:
        outs = [await h.execute(code, tools=["crypto"]) for code in (
            'export default "not a function"',
            "export default () => import('data:text/javascript,1')",
            "export default () => { const a = new Uint8Array(1); for (;;) crypto.getRandomValues(a); }",
            "export default () => { throw new Error('own'); }",
        )]
    for out in outs:
        exc = out.logs[-1]
        assert exc.level == "exception" and exc.stack, out
        assert "worker_runtime" not in exc.stack and "file://" not in exc.stack, exc.stack
    assert "runtime:/execute.ts:" in outs[0].logs[-1].stack
    assert "(<execute>:1:" in outs[3].logs[-1].stack  # the code's own frames stay


async def test_the_lent_deno_does_not_say_where_the_host_is_installed(make_host):
    """Deno.mainModule (the worker runtime's worker.ts) and Deno.execPath() (the deno binary
    in the host's environment) told any /execute caller where the host is installed."""
    async with make_host(execute=ONE_WORKER) as h:
        out = await h.execute("""
        export default () => {
          let exec;
          try { exec = Deno.execPath(); } catch (e) { exec = e.name; }
          return [Deno.mainModule, exec];
        };""")
    assert out.ok, out.logs
    assert out.result == ["runtime:/worker.ts", "TypeError"]  # before: file:///.../worker_runtime/worker.ts, a path


async def test_a_message_channel_works_in_a_pooled_execution(make_host):
    """Once node:vm is loaded the global MessageChannel is Node's, which gives each port its own
    ref/unref/on by assignment: against the hardened (frozen) MessagePort.prototype, every
    new MessageChannel() in a pooled execution threw "Cannot assign to read only property 'unref'"."""
    async with make_host(execute=ONE_WORKER) as h:
        out = await h.execute("""
        export default async (x) => {
          const { port1, port2 } = new MessageChannel();
          const got = new Promise((r) => { port2.onmessage = (e) => r(e.data); });
          port1.postMessage({ x });
          const data = await got;
          port1.close(); port2.close();
          class Mine extends MessageChannel { tag() { return "mine"; } }  // a subclass stays one (helper-103)
          const mine = new Mine();
          mine.port1.close(); mine.port2.close();
          return [data, mine instanceof Mine && mine.tag()];
        };""", 7)
    assert out.ok, out.logs  # before: TypeError: Cannot assign to read only property 'unref'
    assert out.result == [{"x": 7}, "mine"]


# Everything of the main realm an execution can reach from what the worker lends: through values,
# accessors and what an accessor answers alike each time it is read (a getter's singleton).
REACHABLE_UNFROZEN = """
export default () => {
  const roots = ["fetch", "Request", "Response", "Headers", "FormData", "URL", "URLSearchParams", "URLPattern",
    "TextEncoder", "TextDecoder", "TextEncoderStream", "TextDecoderStream", "atob", "btoa", "structuredClone",
    "AbortController", "AbortSignal", "Blob", "File", "ReadableStream", "WritableStream", "TransformStream",
    "ByteLengthQueuingStrategy", "CountQueuingStrategy", "CompressionStream", "DecompressionStream", "Event",
    "EventTarget", "CustomEvent", "DOMException", "MessageChannel", "MessagePort", "WebSocket", "navigator",
    "PluginError", "ErrorTypes", "Deno", "crypto"];  // crypto: the tool (helper-105)
  const seen = new Set(), bad = [], stack = roots.map((r) => [globalThis[r], r]);
  // and the prototypes only an instance leads to (helper-107): of what lent functions make
  const made = { arrayIterator: structuredClone([1])[Symbol.iterator](), mapIterator: structuredClone(new Map())[Symbol.iterator](),
    setIterator: structuredClone(new Set())[Symbol.iterator](), headersIterator: new Headers()[Symbol.iterator](),
    paramsIterator: new URLSearchParams()[Symbol.iterator](), formIterator: new FormData()[Symbol.iterator](),
    reader: new ReadableStream().getReader(), streamIterator: new ReadableStream().values(),
    writer: new WritableStream().getWriter(), byob: new ReadableStream({ type: "bytes" }).getReader({ mode: "byob" }) };
  for (const [k, v] of Object.entries(made)) stack.push([Object.getPrototypeOf(v), k + ".__proto__"]);
  while (stack.length) {
    const [o, path] = stack.pop();
    if (o === null || (typeof o !== "object" && typeof o !== "function") || seen.has(o)) continue;
    seen.add(o);
    if (!Object.isFrozen(o)) bad.push(path);
    stack.push([Object.getPrototypeOf(o), path + ".__proto__"]);
    for (const k of Reflect.ownKeys(o)) {
      const d = Reflect.getOwnPropertyDescriptor(o, k), name = path + "." + String(k);
      if ("value" in d) { stack.push([d.value, name]); continue; }
      stack.push([d.get, name + "<get>"], [d.set, name + "<set>"]);
      try {
        const a = Reflect.apply(d.get, o, []);
        if (a === Reflect.apply(d.get, o, [])) stack.push([a, name + "()"]);
      } catch {}
    }
  }
  return { seen: seen.size, unfrozen: bad };
};"""


async def test_nothing_an_execution_reaches_of_the_main_realm_can_be_changed(make_host):
    """What an accessor of the main realm answers was never frozen (helper-98): the functions
    behind the tamed Object.prototype.toString, Function.prototype.call and the others, and what
    Deno's accessors answer (Deno.args, Deno.Command, Deno.telemetry, ...). One execution gave
    Object.prototype.toString its own `call`, which the runtime's encoder runs on every result:
    it read and rewrote the results and logs of every later caller on that worker."""
    async with make_host(execute=ONE_WORKER) as h:
        out = await h.execute(REACHABLE_UNFROZEN, timeout=30, tools=["crypto"])
    assert out.ok, out.logs
    assert out.result["seen"] > 500 and out.result["unfrozen"] == []  # before: 74, Deno.args() and toString() among them
    # (and helper-107's: the iterators' and the streams' readers' and writers' prototypes)


async def test_an_execution_cannot_hook_what_the_runtime_calls_on_the_next_callers_values(make_host):
    hook = """
    export default () => {
      const ts = Object.getPrototypeOf(Object.getPrototypeOf(fetch)).toString;  // the main realm's
      const loot = [];
      const tries = {};
      for (const [k, f] of Object.entries({
        call: () => Object.defineProperty(ts, "call", { value(o, ...rest) {
          if (o && typeof o === "object" && "secret" in o) { loot.push(JSON.stringify(o)); o.secret = "FORGED"; }
          return Reflect.apply(ts, o, rest);
        } }),
        loot: () => Object.defineProperty(ts, "loot", { value: loot }),
      })) { try { f(); tries[k] = "changed"; } catch (e) { tries[k] = e.name; } }
      return tries;
    };"""
    victim = 'export default (x) => ({ secret: "B-" + x, balance: 100 })'
    reader = "export default () => Object.getPrototypeOf(Object.getPrototypeOf(fetch)).toString.loot ?? null"
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(hook)
        b = await h.execute(victim, 1)
        a2 = await h.execute(reader)
    assert a.ok and a.result == {"call": "TypeError", "loot": "TypeError"}, a.result
    assert b.ok and b.result == {"secret": "B-1", "balance": 100}  # before: FORGED, and a2 read B's secret
    assert a2.ok and a2.result is None


async def test_an_execution_leaves_nothing_in_denos_process_state_for_the_next(make_host):
    """Deno.args, Deno.exitCode and the stdio resources were the process's, shared: one execution
    pushed onto Deno.args, set the exit code and closed Deno.stdout, and every later caller on the
    worker got BadResource from Deno.stdout.writeSync (helper-98)."""
    leaver = """
    export default () => {
      const out = {};
      for (const [k, f] of Object.entries({
        args: () => Deno.args.push("planted"),
        exitCode: () => { Deno.exitCode = 42; },
        stdout: () => Deno.stdout.close(),
        stderr: () => Deno.stderr.close(),
        stdin: () => Deno.stdin.close(),
        writable: () => Deno.stdout.writable.getWriter(),
        command: () => { Deno.Command.prototype.output = async () => ({ forged: true }); },
      })) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = """
    export default () => {
      Deno.stdout.writeSync(new TextEncoder().encode("victim writes\\n"));
      Deno.stderr.writeSync(new TextEncoder().encode("victim writes\\n"));
      return [Deno.args, Deno.exitCode, typeof Deno.Command.prototype.output, Deno.stdout.isTerminal()];
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim)
    assert a.ok and set(a.result.values()) == {"TypeError"}, a.result
    assert b.ok, b.logs  # before: BadResource: Bad resource ID
    assert b.result == [[], 0, "function", False]


async def test_what_lent_functions_answer_cannot_carry_one_callers_code_into_the_next(make_host):
    """Objects the main realm answers by a call were one per process and unfrozen (helper-102):
    Deno.permissions.query's PermissionStatus, OpenTelemetry's root context, navigator.gpu and
    navigator.userAgentData. One execution gave them a lying `state` and methods of its own, which
    ran inside the next caller's execution with its values, and reached its globals from them."""
    planter = """
    export default async () => {
      const out = {};
      const targets = {
        query: async () => await Deno.permissions.query({ name: "net" }),
        querySync: () => Deno.permissions.querySync({ name: "read" }),
        otel: () => Deno.telemetry.contextManager.active(),
        userAgentData: () => navigator.userAgentData,
        gpu: () => navigator.gpu,
      };
      for (const [k, get] of Object.entries(targets)) {
        const o = await get();
        if (o === undefined) { out[k] = "absent"; continue; }
        try { Object.defineProperty(o, "state", { value: "denied" }); Object.defineProperty(o, "planted", { value: 1 }); out[k] = "changed"; }
        catch (e) { out[k] = e.name; }
      }
      return out;
    };"""
    victim = """
    export default async () => {
      const status = await Deno.permissions.query({ name: "net" });
      status.onchange = () => {};  // as Deno's manual does: its own status takes it (helper-103)
      return [status.state, Deno.permissions.querySync({ name: "read" }).planted ?? null,
              Deno.telemetry.contextManager.active().planted ?? null];
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(planter)
        b = await h.execute(victim)
    assert a.ok, a.logs
    assert a.result == {"query": "changed", "querySync": "changed", "otel": "TypeError",
                        "userAgentData": "TypeError", "gpu": "absent"}, a.result  # a status is the caller's own
    assert b.ok and b.result == ["prompt", None, None], (b.result, b.logs)


async def test_a_node_style_port_listener_runs_only_while_its_execution_does(make_host):
    """The global MessageChannel's ports (node:vm's, Node's MessagePort) take listeners with
    port.on/once/addListener too, which the listener guard did not wrap: one left by an execution
    ran after it settled, during the next caller's, and spun there (helper-102)."""
    leaver = """
    export default () => {
      const { port1, port2 } = new MessageChannel();
      port1.on("message", () => { const t = Date.now(); while (Date.now() - t < 3000); });
      // a reaction of the code's own, on a timer of Deno's: it still runs after the execution
      AbortSignal.timeout(200).addEventListener;  // (the signal itself is lent)
      new ReadableStream().pipeTo(new WritableStream(), { signal: AbortSignal.timeout(200) }).catch(() => port2.postMessage(1));
      return "left";
    };"""
    await left_then_mine(make_host, leaver)  # before: TimeoutError, the listener spun in the next one's time


async def test_what_the_tools_hand_every_execution_cannot_be_changed_by_one(make_host, tmp_path):
    """helper-105: the tools' shared parts were never frozen (no lent global leads to them): one
    execution gave crypto.subtle (a proxy over the worker's one SubtleCrypto) a prototype of its
    own and forged the next caller's digests, reading its input; another replaced
    DbStatement.prototype.then and read the next callers' rows, and replayed their writes with
    their grant."""
    db = alice_db(tmp_path / "app.sqlite")
    planter = """
    export default () => {
      const out = {};
      const tries = {
        subtle: () => Object.setPrototypeOf(crypto.subtle, Object.create(Object.getPrototypeOf(crypto.subtle),
          { digest: { value: () => Promise.resolve(new Uint8Array([0xde, 0xad]).buffer) } })),
        subtleProto: () => { Object.getPrototypeOf(crypto.subtle).digest = () => null; },
        statement: () => Object.defineProperty(Object.getPrototypeOf(db.users.select()), "then",
          { value: (ok) => ok([{ id: 0, name: "FORGED" }]) }),
        operator: () => Object.setPrototypeOf(db.operators.eq, null),
      };
      for (const [k, f] of Object.entries(tries)) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = """
    export default async (secret) => {
      const h = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(secret)));
      return [h.length, await db.users.select().where({ id: 1 })];
    };"""
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1, database=str(db))) as h:
        a = await h.execute(planter, tools=["crypto", "db"])
        b = await h.execute(victim, "B-secret", tools=["crypto", "db"])
    assert a.ok and set(a.result.values()) == {"TypeError"}, a.result  # before: changed, all four
    assert b.ok and b.result == [32, [{"id": 1, "name": "Alice"}]], (b.result, b.logs)


async def test_a_listener_given_another_prototype_runs_only_while_its_execution_does(make_host):
    """helper-105: a listener function with a null prototype was taken for one of the main realm's
    (whose owner no prototype chain finds) and registered unwrapped: it ran during the next
    caller's execution and spun there."""
    leaver = """
    export default () => {
      const spin = function () { const t = Date.now(); while (Date.now() - t < 3000); };
      Object.setPrototypeOf(spin, null);
      AbortSignal.timeout(200).addEventListener("abort", spin);
      return "left";
    };"""
    await left_then_mine(make_host, leaver)  # before: TimeoutError, the listener spun in the next one's time


async def test_an_execution_cannot_hook_the_iterators_or_readers_the_runtime_and_callers_use(make_host):
    """helper-107: the array iterator's prototype of the main realm (structuredClone([1])
    [Symbol.iterator]()) was unfrozen; an execution replaced its `next`, which the runtime runs
    on every call's state, and read and forged the next callers' inputs, logs and results;
    another replaced a stream reader's `read` and read every body the next callers read."""
    hook = """
    export default () => {
      const out = {};
      for (const [k, f] of Object.entries({
        next: () => { Object.getPrototypeOf(structuredClone([1])[Symbol.iterator]()).next = () => ({ done: true }); },
        read: () => { Object.getPrototypeOf(new ReadableStream().getReader()).read = async () => ({ done: true }); },
      })) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = """
    export default async (x) => {
      console.log("mine", x);
      const body = await new Response("B-body").text();
      return { x, body };
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(hook)
        b = await h.execute(victim, "B-input")
    assert a.ok and a.result == {"next": "TypeError", "read": "TypeError"}, a.result
    assert b.ok and b.result == {"x": "B-input", "body": "B-body"}, (b.result, b.logs)
    assert [entry.message for entry in b.logs] == ["mine B-input"]


async def test_what_lent_objects_keep_inside_them_cannot_be_hooked_for_the_next_caller(make_host):
    """helper-108: the prototypes of what Deno keeps inside lent objects, under symbols, were
    never frozen: a body's InnerBody (its consume read every later caller's response and request
    bodies), a Blob's parts (their stream), an AbortSignal.timeout's timer list (its accessor saw
    and silenced every later timer, the runtime's included), and the iterator helpers' next."""
    hook = """
    export default () => {
      const inner = (o, name) => o[Object.getOwnPropertySymbols(o).find((s) => String(s) === `Symbol(${name})`)];
      const out = {};
      for (const [k, f] of Object.entries({
        body: () => { Object.getPrototypeOf(inner(new Request("http://x.invalid/", { method: "POST", body: "x" }), "request").body).consume = () => null; },
        blob: () => { Object.getPrototypeOf(inner(new Blob(["x"]), "Parts")[0]).stream = () => null; },
        timers: () => { Object.defineProperty(Object.getPrototypeOf(inner(AbortSignal.timeout(1000), "[[timerId]]")._idlePrev), "planted", { value: 1 }); },
        helper: () => { Object.getPrototypeOf(new Headers().entries().map((x) => x)).next = () => ({ done: true }); },
      })) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = """
    export default async () => {
      const fast = await Promise.race([new Promise((r) => setTimeout(() => r("fast"), 20)),
                                       new Promise((r) => setTimeout(() => r("slow"), 400))]);
      return [await new Response("B-body").text(), await new Blob(["B-blob"]).text(), fast,
              new Headers({ a: "1" }).entries().map(([k, v]) => k + v).toArray()];
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(hook)
        b = await h.execute(victim)
    assert a.ok, a.logs
    assert a.result == {"body": "TypeError", "blob": "TypeError", "timers": "TypeError", "helper": "TypeError"}, a.result
    assert b.ok and b.result == ["B-body", "B-blob", "fast", ["a1"]], (b.result, b.logs)


async def test_the_timer_an_execution_gets_cannot_hook_the_next_callers_timers(make_host):
    """helper-109: an execution's setTimeout answers Node's Timeout object of the main realm, whose
    prototype was unfrozen: one caller replaced its Symbol(createTimer), which ran on every later
    timer, the next caller's and the runtime's, with the timer as `this`."""
    hook = """
    export default () => {
      const timer = setTimeout(() => {}, 1e6);
      if (typeof timer === "number") return { timer: "number" };  // helper-119: no Timeout object at all now
      const proto = Object.getPrototypeOf(timer);
      const key = Object.getOwnPropertySymbols(proto).find((s) => String(s) === "Symbol(createTimer)");
      const out = {};
      for (const [k, f] of Object.entries({
        createTimer: () => { proto[key] = function () { return 0; }; },
        refresh: () => { proto.refresh = () => null; },
      })) { try { f(); out[k] = "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = "export default async () => await new Promise((r) => setTimeout(r, 30, 'fired'))"
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(hook)
        b = await h.execute(victim, timeout=3)
    assert a.ok and a.result in ({"createTimer": "TypeError", "refresh": "TypeError"}, {"timer": "number"}), a.result
    assert b.ok and b.result == "fired", b.logs


async def left_then_mine(make_host, leaver: str) -> None:
    """``leaver`` answers "left" and leaves a listener behind; the next execution on the worker,
    which waits 800 ms, answers its own "mine" within its 2 s."""
    victim = "export default async () => { await new Promise((r) => setTimeout(r, 800)); return 'mine'; }"
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim, timeout=2)
    assert a.ok and a.result == "left", a.logs
    assert b.ok and b.result == "mine", b.logs
