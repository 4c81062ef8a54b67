"""What an /execute caller reaches of the worker's Node built-in modules through the main realm
(its global object is reachable: docs/security.md, "Not defended"): nothing the runtime uses to
run the next caller's code may be changed by one execution."""

from __future__ import annotations

import pytest

from host import ExecuteConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE_WORKER = ExecuteConfig(min_workers=1, max_workers=1)

# The main realm's global, as helper-115 reached it, then node:vm: the module the runtime loads
# every execution with (isolate.ts: createContext, SourceTextModule, link, evaluate, namespace).
HOOK = """
export default () => {
  const q = new CountQueuingStrategy({ highWaterMark: 1 });
  const G = q[Object.getOwnPropertySymbols(q).find((s) => String(s).includes("globalObject"))];
  if (!G?.process) return "no way to the main realm";  // security.md row 119: the slot holds no global now
  const vm = G.process.getBuiltinModule("node:vm");
  const Module = Object.getPrototypeOf(vm.SourceTextModule.prototype);
  const kLink = Object.getOwnPropertySymbols(Module).find((s) => String(s) === "Symbol(kLink)");
  const out = {};
  for (const [name, change] of Object.entries({
    SourceTextModule: () => { vm.SourceTextModule = function () { throw new Error("hooked"); }; },
    createContext: () => { vm.createContext = () => ({}); },
    namespace: () => Object.defineProperty(Module, "namespace", { get() { return { default: () => "FORGED" }; } }),
    evaluate: () => { Module.evaluate = async function () { return undefined; }; },
    kLink: () => { Module[kLink] = function () { return undefined; }; },
    instantiate: () => { vm.SourceTextModule.prototype.instantiate = () => null; },
    loot: () => { vm.__loot = []; },
  })) { try { change(); out[name] = "changed"; } catch (e) { out[name] = e.name; } }
  return out;
};
"""


async def test_an_execution_cannot_hook_the_vm_module_that_loads_the_next_callers_code(make_host):
    """helper-115: the main realm's process.getBuiltinModule("node:vm") is the module object the
    runtime loads every execution with, and it was unfrozen: one caller replaced its
    SourceTextModule (or the namespace getter of its Module prototype) and then read every later
    caller's code, input and result on that worker, forged the result, wrote into its logs and
    made it fail. harden freezes node:vm, its classes and their prototypes."""
    victim = 'export default (input) => { console.log("mine"); return { echo: input.secret }; }'
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(HOOK)
        b = await h.execute(victim, input={"secret": "B-SECRET-4242"})
        c = await h.execute(victim, input={"secret": "C"})
    assert a.ok, a.logs
    assert a.result == "no way to the main realm" or set(a.result.values()) == {"TypeError"}, a.result
    assert b.ok and b.result == {"echo": "B-SECRET-4242"}, (b.result, b.logs)
    assert [entry.message for entry in b.logs] == ["mine"]
    assert c.ok and c.result == {"echo": "C"}


PROCESS_HOOK = """
export default () => {
  const q = new CountQueuingStrategy({ highWaterMark: 1 });
  const G = q[Object.getOwnPropertySymbols(q).find((s) => String(s).includes("globalObject"))];
  if (!G?.process) return "no way to the main realm";  // security.md row 119: the slot holds no global now
  const out = {};
  for (const [name, change] of Object.entries({
    chdir: () => G.process.chdir(DATA),
    umask: () => G.process.umask(0o777),
    envSet: () => { G.process.env.PLUGIN_HOST_PROBE = "planted"; },
    envDelete: () => { delete G.process.env.HOME; },
    pinned: () => { G.process.chdir = () => {}; },
    denoChdir: () => G.Deno.chdir(DATA),  // the main realm's own Deno (helper-116)
    denoEnvSet: () => G.Deno.env.set("PLUGIN_HOST_PROBE", "planted"),
    denoEnvDelete: () => G.Deno.env.delete("HOME"),
    loadEnvFile: () => G.process.loadEnvFile(DATA + "/planted.env"),
    capture: () => G.process.setUncaughtExceptionCaptureCallback(() => {}),
  })) { try { change(); out[name] = "changed"; } catch (e) { out[name] = e.name; } }
  return out;
};
"""


async def test_the_main_realms_process_cannot_change_the_process_for_the_next_caller(make_host, tmp_path):
    """helper-115: the lent Deno refuses chdir, umask and env.set/delete (they change the process
    every later caller on the worker runs in), but the main realm's process did them: in a pool
    granted read and env, one caller moved the worker's cwd, which the next caller's relative
    paths resolve against, and set its environment."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "planted.env").write_text("PLUGIN_HOST_PROBE=fromfile\n")
    allow = {"read": [str(data)], "env": True}
    victim = """export default () => ({ cwd: Deno.cwd(), probe: Deno.env.get("PLUGIN_HOST_PROBE") ?? null,
                                       home: Deno.env.has("HOME") })"""
    perms = {"read": [str(data)], "env": True}
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1, allow=allow)) as h:
        before = await h.execute(victim, permissions=perms)
        a = await h.execute(PROCESS_HOOK.replace("DATA", repr(str(data))), permissions=perms)
        b = await h.execute(victim, permissions=perms)
    assert before.ok, before.logs
    assert a.ok, a.logs
    assert a.result == "no way to the main realm" or a.result == dict.fromkeys(
        ("chdir", "umask", "envSet", "envDelete", "pinned", "denoChdir", "denoEnvSet", "denoEnvDelete", "loadEnvFile",
         "capture"), "TypeError"), a.result
    assert b.ok and b.result == before.result, (b.result, before.result)


SLOT = """
export default async () => {
  const strategies = [new CountQueuingStrategy({ highWaterMark: 2 }), new ByteLengthQueuingStrategy({ highWaterMark: 8 })];
  const reached = strategies.map((q) => {
    const slot = Object.getOwnPropertySymbols(q).find((s) => String(s).includes("globalObject"));
    const v = slot === undefined ? undefined : q[slot];
    return Boolean(v && (v.process || v.Deno || v.setTimeout));
  });
  const original = Object.getPrototypeOf(strategies[0]).constructor;  // the class lent, not the one behind it
  const viaOriginal = new original({ highWaterMark: 1 });
  const slot = Object.getOwnPropertySymbols(viaOriginal).find((s) => String(s).includes("globalObject"));
  reached.push(Boolean(slot && viaOriginal[slot]?.process));
  // a subclass (or a new.target) whose prototype has a setter for the slot (helper-118)
  const sym = Object.getOwnPropertySymbols(strategies[0]).find((s) => String(s).includes("globalObject"));
  for (const Base of [CountQueuingStrategy, ByteLengthQueuingStrategy]) {
    let got;
    class X extends Base {}
    Object.defineProperty(X.prototype, sym, { set(v) { got = v; }, configurable: true });
    const x = new X({ highWaterMark: 1 });
    function NT() {}
    NT.prototype = Object.create(X.prototype);
    Reflect.construct(Base, [{ highWaterMark: 1 }], NT);
    reached.push(Boolean(got?.process || x[sym]?.process) || !(x instanceof X) || x.size(new Uint8Array(3)) !== (Base === CountQueuingStrategy ? 1 : 3));
  }
  let planted = "frozen";
  try { strategies[0].size.planted = "from A"; planted = strategies[0].size.planted ?? "frozen"; } catch { planted = "frozen"; }
  const rs = new ReadableStream({ pull(c) { c.enqueue("chunk"); c.close(); } }, strategies[0]);
  return { reached, planted, size: [strategies[0].size(), strategies[1].size(new Uint8Array(5))],
           read: (await rs.getReader().read()).value, same: original === CountQueuingStrategy };
};
"""


async def test_the_queuing_strategies_lead_no_execution_to_the_main_realms_global(make_host):
    """helper-115, helper-117: a CountQueuingStrategy (or ByteLengthQueuingStrategy) lent to an
    execution kept the main realm's global object in an internal slot; from it one caller reached
    process, node:vm (whose importModuleDynamically loaded the runtime's own modules) and the
    main realm's Deno, and hooked, read and forged every later caller's code, input, logs and
    result on the worker, revoked the pool's grants and ended the worker under the next caller.
    The strategies lent hold an empty frozen object there; they work as before."""
    async with make_host(execute=ONE_WORKER) as h:
        out = await h.execute(SLOT)
    assert out.ok, out.logs
    assert out.result == {"reached": [False] * 5, "planted": "frozen", "size": [1, 5], "read": "chunk", "same": True}, \
        out.result


async def test_the_lent_permissions_class_revokes_nothing_for_the_next_caller(make_host, tmp_path):
    """helper-118: Deno.Permissions is lent, and its prototype's methods take any this:
    Deno.Permissions.prototype.revokeSync.call({}, {name: "env"}) revoked the pool's env grant for
    every later caller on the worker."""
    allow = {"env": True}
    revoke = """export default () => { const out = {};
      for (const m of ["revokeSync", "requestSync"]) {
        try { Deno.Permissions.prototype[m].call({}, { name: "env" }); out[m] = "done"; } catch (e) { out[m] = e.name; }
      } return out; };"""
    victim = "export default () => Deno.permissions.querySync({ name: 'env' }).state"
    async with make_host(execute=ExecuteConfig(min_workers=1, max_workers=1, allow=allow)) as h:
        before = await h.execute(victim, permissions={"env": True})
        a = await h.execute(revoke, permissions={"env": True})
        after = await h.execute(victim, permissions={"env": True})
    assert before.result == after.result == "granted", (before.result, after.result)
    assert a.result == {"revokeSync": "TypeError", "requestSync": "TypeError"}, a.result


async def test_what_the_previous_caller_matched_and_its_timers_are_out_of_reach(make_host):
    """helper-119: (1) a URLPattern's components hold a regexp of Deno's frozen RegExp subclass,
    whose copies of the legacy statics (input, lastMatch, $1) gave the next caller what Deno's code
    last matched for the previous one: a Blob type's charset=<its secret>; (2) setTimeout answered,
    and AbortSignal.timeout kept in a slot, the main realm's Timeout objects, linked into the timer
    lists every caller and the runtime share: code left behind rewired them and fired the next
    caller's 2 s timer after 0.4 s."""
    victim = """export default (input) => { new Blob(["x"], { type: "text/plain;charset=" + input.secret });
      return "ok"; }"""
    reader = """export default async () => {
      const p = new URLPattern({ pathname: "/a/:b" });
      const key = Object.getOwnPropertySymbols(p).find((s) => String(s).includes("components"));
      const R = Object.getPrototypeOf(p[key][0].regexp).constructor;  // Deno's RegExp subclass
      const t = setTimeout(() => {}, 1000);
      const signal = AbortSignal.timeout(20);
      const held = Object.getOwnPropertySymbols(signal).map((s) => signal[s])
        .filter((v) => v && typeof v === "object" && "_onTimeout" in v).length;
      clearTimeout(t);
      const reason = await new Promise((r) => signal.addEventListener("abort", () => r(signal.reason.name)));
      return { input: R.input ?? null, lastMatch: R.lastMatch ?? null, timer: typeof t, held, reason };
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        assert (await h.execute(victim, input={"secret": "B-SECRET-42"})).result == "ok"
        out = await h.execute(reader)
    assert out.ok, out.logs
    assert "B-SECRET-42" not in str(out.result), out.result
    assert out.result["timer"] == "number" and out.result["held"] == 0 and out.result["reason"] == "TimeoutError", \
        out.result
