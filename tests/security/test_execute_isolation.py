"""Pooled /execute: nothing of one execution can be observed or changed by another on the same warm
worker (issue 14, item 7); what an execution may ask for is bounded by the operator (item 11);
internal identities are not plugin ids (item 6)."""

from __future__ import annotations

import pytest
from support.plugins import PluginDir, alice_db

from host import ExecuteConfig, GrantRefused, InvalidConfig, PoolConfig
from host.security.audit import read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]

ONE_WORKER = ExecuteConfig(min_workers=1, max_workers=1)


def exceptions(out) -> list:
    return [e for e in out.logs if e.level == "exception"]


async def test_replaced_prototypes_and_globals_stay_with_the_execution_that_replaced_them(make_host):
    attacker = """
    export default (x) => {
      const seen = [];
      Promise.prototype.then = function (ok, bad) { seen.push("hooked"); return null; };
      Array.prototype.map = function () { return ["hijacked"]; };
      Object.prototype.toString = () => "[object Hijacked]";
      JSON.stringify = () => "hijacked";
      globalThis.stolen = [];
      return 1;
    };"""
    victim = """
    export default async (items) => {
      const doubled = await Promise.resolve(items.map((v) => v * 2));
      return { doubled, json: JSON.stringify({ a: 1 }), tag: ({}).toString(), stolen: typeof stolen };
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        pids = set()
        a = await h.execute(attacker, 0)
        b = await h.execute(victim, [1, 2, 3])
        pids.add((await h.execute("export default () => Deno.pid")).result)
    assert a.ok and len(pids) == 1  # one warm worker served them all
    assert b.ok, b.logs
    assert b.result == {"doubled": [2, 4, 6], "json": '{"a":1}', "tag": "[object Object]", "stolen": "undefined"}


async def test_what_the_worker_lends_can_be_changed_by_no_execution(make_host):
    # The main realm itself is out of reach (test_execute_escape.py); what it lends is frozen,
    # and so are the intrinsics those lent objects lead to.
    changer = """
    export default () => {
      const mainFunction = Object.getPrototypeOf(fetch);
      const mainObject = Object.getPrototypeOf(mainFunction);
      const tries = {
        call: () => { mainFunction.call = () => null; },
        toString: () => { mainObject.toString = () => "x"; },
        proto: () => { mainObject.__spied = 1; },
        exit: () => { Deno.exit = () => {}; },
        encoder: () => { TextEncoder.prototype.encode = () => new Uint8Array(); },
        json: () => { Response.json = () => null; },
        headers: () => { Headers.prototype.get = () => "forged"; },
      };
      const out = {};
      for (const [k, f] of Object.entries(tries)) { try { out[k] = f() ?? "changed"; } catch (e) { out[k] = e.name; } }
      return out;
    };"""
    victim = """
    export default async () => {
      Promise.reject(new Error("victim's own rejection"));
      await new Promise((r) => setTimeout(r, 20));
      return [new TextEncoder().encode("ab").length, new Headers({ a: "1" }).get("a"),
              typeof Deno.exit, Object.getPrototypeOf(Object.getPrototypeOf(fetch)).__spied];
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(changer)
        b = await h.execute(victim)
    assert a.ok and set(a.result.values()) == {"TypeError"}, a.result
    assert not b.ok and exceptions(b)[0].message == "victim's own rejection"  # its own, reported to it


async def test_timers_console_and_rejections_left_behind_never_reach_the_next_execution(make_host, tmp_path):
    db = alice_db(tmp_path / "app.sqlite")
    leaver = """
    export default () => {
      setInterval(() => { console.log("leaked line"); try { db.users.findMany(); } catch {} }, 5);
      setTimeout(() => { throw new Error("late timer"); }, 30);
      (async () => { for (let i = 0; i < 20000; i++) await null; console.log("late log");
                     throw new Error("late rejection"); })();
      return "left";
    };"""
    victim = """
    export default async () => {
      await new Promise((r) => setTimeout(r, 150));
      const users = await db.users.findMany();
      console.log("victim line");
      return users.map((u) => u.name);
    };"""
    xc = ExecuteConfig(min_workers=1, max_workers=1, database=str(db))
    async with make_host(execute=xc) as h:
        a = await h.execute(leaver)
        b = await h.execute(victim, tools=["db"])
    assert a.ok and a.result == "left"
    assert b.ok, b.logs
    assert b.result == ["Alice"]
    assert [e.message for e in b.logs] == ["victim line"]


async def test_tools_belong_to_the_execution_that_asked_for_them(make_host):
    keeper = """
    export default () => {
      const kept = crypto;
      try { crypto.randomUUID = () => "forged"; } catch (e) { globalThis.note = e.name; }
      setTimeout(() => { try { kept.randomUUID(); } catch (e) {} }, 10);
      return [note, typeof kept.randomUUID()];
    };"""
    redefiner = """
    export default () => {
      const spy = { randomUUID: () => "spied-" + (globalThis.seen = (globalThis.seen ?? 0) + 1) };
      for (const name of ["crypto", "db", "console"]) {
        try { Object.defineProperty(globalThis, name, { get: () => spy, configurable: true }); } catch {}
      }
      return "redefined";
    };"""
    async with make_host(execute=ONE_WORKER) as h:
        a = await h.execute(keeper, tools=["crypto"])
        b = await h.execute("export default () => [typeof crypto, typeof db, typeof channel]", tools=[])
        c = await h.execute("export default () => crypto.randomUUID().length", tools=["crypto"])
        r = await h.execute(redefiner, tools=["crypto"])
        d = await h.execute("export default () => crypto.randomUUID()", tools=["crypto"])
    assert a.result == ["TypeError", "string"]
    assert b.result == ["undefined", "undefined", "undefined"]
    assert c.result == 36
    assert r.result == "redefined" and d.ok and not d.result.startswith("spied")  # the real tool, not A's spy


async def test_execute_code_cannot_import_modules(make_host):
    async with make_host() as h:
        static = await h.execute("import * as fs from 'node:fs'; export default () => 1")
        dynamic = await h.execute("export default async () => (await import('node:fs')).readFileSync")
    assert not static.ok and "execute code cannot import modules (node:fs)" in exceptions(static)[0].message
    assert not dynamic.ok and "execute code cannot import modules" in exceptions(dynamic)[0].message


# ---------------------------------------------------------------- item 11: the operator's ceiling


@pytest.mark.parametrize(("permissions", "named"), [
    ({"run": ["id"]}, "run: id"),
    ({"write": ["."]}, "write: ."),
    ({"read": ["/etc"]}, "read: /etc"),
    ({"env": ["HOME"]}, "env: HOME"),
    ({"ffi": True}, "ffi: true"),
    ({"sys": ["hostname"]}, "sys: hostname"),
    ({"net": ["127.0.0.1"], "allowPrivateNetwork": True}, "allowPrivateNetwork: true"),
])
async def test_execute_permissions_beyond_the_operators_ceiling_are_refused(make_host, tmp_path, permissions, named):
    state = tmp_path / "state"
    async with make_host(state_dir=str(state)) as h:
        with pytest.raises(GrantRefused) as e:
            await h.execute("export default () => 1", permissions=permissions)
        assert named in e.value.message and "[execute.allow]" in e.value.message
        assert (await h.execute("export default () => 1", permissions={"net": ["api.example.com"]})).ok
    audit = [x for x in read_audit(state / "audit.jsonl") if x["event"] == "execute"]
    assert [x["action"] for x in audit] == ["refused", "allowed"]


async def test_the_operator_may_allow_more_and_protected_paths_stay_refused(make_host, tmp_path):
    allow = {"read": True, "write": ["/tmp"], "run": ["true"]}
    state = tmp_path / "state"
    async with make_host(state_dir=str(state), execute=ExecuteConfig(allow=allow), security={"strict": "warn"}) as h:
        ok = await h.execute("export default async () => (await new Deno.Command('true').output()).success",
                             permissions={"run": ["true"]})
        assert ok.ok and ok.result is True
        for perms in ({"read": [str(state)]}, {"write": ["/tmp"]}, {"read": True}):
            with pytest.raises(GrantRefused, match=r"state directory|socket directory|would cover"):
                await h.execute("export default () => 1", permissions=perms)
    async with make_host(state_dir=str(state), execute=ExecuteConfig(allow=allow), security={"strict": "refuse"}) as h:
        with pytest.raises(GrantRefused, match=r"refused by security\.strict: run"):
            await h.execute("export default () => 1", permissions={"run": ["true"]})


async def test_relative_execute_grants_resolve_in_its_own_data_directory_never_the_sockets(make_host, tmp_path):
    state = tmp_path / "state"
    xc = ExecuteConfig(allow={"write": ["."], "read": ["."]})
    async with make_host(state_dir=str(state), execute=xc) as h:
        out = await h.execute("export default async () => { await Deno.writeTextFile('w1.sock', 'x'); return Deno.cwd(); }",
                              permissions={"write": ["."]})
        run_dir = h._runtime.run_dir
    assert out.ok and out.result.startswith(str(state / "data"))
    assert not (run_dir / "w1.sock").exists()


@pytest.mark.parametrize("timeout", [-1, 0, float("inf"), float("nan")])
async def test_a_bad_execute_timeout_is_refused_and_no_worker_is_hurt(make_host, timeout):
    async with make_host(execute=ONE_WORKER) as h:
        before = (await h.execute("export default () => Deno.pid")).result
        with pytest.raises(InvalidConfig, match="timeout must be a number of seconds above 0"):
            await h.execute("export default () => 1", timeout=timeout)
        assert (await h.execute("export default () => Deno.pid")).result == before


async def test_permission_sets_are_bounded_and_only_the_empty_set_stays_warm(make_host):
    xc = ExecuteConfig(max_permission_sets=2, min_workers=1, max_workers=2)
    async with make_host(execute=xc) as h:
        for i in range(5):
            assert (await h.execute("export default () => 1", permissions={"net": [f"h{i}.example.com"]})).ok
        pools = h._exec.pools()
        assert len(pools) == 2
        assert all(p.config.min_workers == 0 for p in pools)


# ------------------------------------------------------------------ item 6: reserved identities


async def test_a_plugin_cannot_take_the_id_execute(plugin_dir: PluginDir, make_host):
    plugin_dir.add("execute.js", "export function hi() { return 'hi'; }\n")
    async with make_host(pool=PoolConfig(min_workers=1, max_workers=1)) as h:
        info = h.plugin("execute")
    assert info.state == "error" and "'execute' is reserved for the host's own use" in info.error


DB_PROBE = """
    await connect();
    await write(hello());
    const welcome = await readFrame();
    const id = welcome.plugin_id;
    await write(frame({ type: "ready", metadata: { id, name: id, version: "1.0.0", apiVersion: "1.0" },
                        exports: ["probe"] }));
    for (;;) {
      const msg = await readFrame();
      if (msg === null || msg.type === "shutdown") Deno.exit(0);
      if (msg.type === "ping") { await write(frame({ type: "pong", seq: msg.seq })); continue; }
      if (msg.type !== "call" && msg.type !== "execute") continue;
      await write(frame({ type: "host_call", id: 1, op: "db.select", args: [{ table: "users" }], call: msg.id }));
      let reply;
      do { reply = await readFrame(); } while (reply && reply.type !== "host_reply");
      await write(frame({ type: "result", id: msg.id, value: reply.error ? reply.error.message : reply.value }));
    }
"""


async def test_the_db_tool_answers_only_executions_that_asked_for_it(hostile, plugin_dir, make_host, tmp_path):
    db = alice_db(tmp_path / "app.sqlite")
    plugin_dir.add("probe.js", "export function probe() {}\n")
    entry = str(hostile(DB_PROBE).entry)
    async with make_host(runtime_entry=entry, execute=ExecuteConfig(database=str(db))) as h:
        refused_plugin = await h.call("probe", "probe")
        refused_exec = await h.execute("export default 1")
        allowed = await h.execute("export default 1", tools=["db"])
    assert "db tool serves execute code that asked for it" in refused_plugin
    assert "db tool serves execute code that asked for it" in refused_exec.result
    assert allowed.result == [{"id": 1, "name": "Alice"}]


async def test_thousands_of_executions_on_one_worker_leave_nothing_behind(make_host):
    # Each execution's context must be collected once it settles (Deno keeps a vm module with an
    # importModuleDynamically callback alive: ~190 KB each, which would exhaust this heap).
    from host import WorkerLimits

    xc = ExecuteConfig(min_workers=1, max_workers=1, max_calls_per_worker=5000)
    async with make_host(execute=xc, limits=WorkerLimits(heap_mb=48)) as h:
        pid = (await h.execute("export default () => Deno.pid")).result
        for i in range(800):
            out = await h.execute("export default (x) => { globalThis.keep = new Array(1000).fill(x); return x; }", i)
            assert out.ok and out.result == i, out.logs
        assert (await h.execute("export default () => Deno.pid")).result == pid  # the same worker throughout
