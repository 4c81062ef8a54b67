"""The management API of ``python -m host serve``, driven over HTTP in a subprocess: plugin
control, configs, events, balances, health, and JSON errors with fitting status codes."""

from __future__ import annotations

import pytest
from support.plugins import CALC, vault_plugin
from support.processes import deno_children
from support.servers import serve_process

TOKEN = "adm-4c1b9e0f7a2d"
SECRET = "sk-live-7f3a9c2e5b1d"

VAULT = vault_plugin("""
export function validateConfig(config) {
  if (config.apiKey.startsWith("bad")) return { valid: false, message: "this key is revoked" };
  return true;
}
export function region(ctx) { return ctx.config.region; }
""")

LISTENER = """
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["message.incoming"], priority: {priority} }};
export function onEvent(event, payload) {{ return "{pid} saw " + payload.content; }}
"""

STATION = """
export const metadata = { id: "station", name: "Station", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] };
export function queryBalance() { return { balance: 12.5, currency: "USD", quota: 100, usedQuota: 87.5 }; }
"""


@pytest.fixture
def plugins(plugin_dir):
    plugin_dir.add("calc.js", CALC)
    plugin_dir.add("vault.js", VAULT)
    plugin_dir.add("low.js", LISTENER.format(pid="low", priority=1))
    plugin_dir.add("high.js", LISTENER.format(pid="high", priority=9))
    plugin_dir.add("station.js", STATION)
    return plugin_dir


def pids(srv, pid: str) -> list[int]:
    status, info = srv.request("GET", f"/api/plugins/{pid}", token=TOKEN)
    assert status == 200, info
    return [w["pid"] for w in info["workers"]]


@pytest.mark.timeout(120)
def test_management_api_over_http(plugins, state_dir, tmp_path):
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(state_dir),
                       env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN}) as srv:
        status, listed = srv.request("GET", "/api/plugins", token=TOKEN)
        assert status == 200
        states = {p["id"]: p["state"] for p in listed}
        assert states["calc"] == "running" and states["station"] == "running"
        assert states["vault"] == "error"  # its required apiKey is not configured yet
        status, one = srv.request("GET", "/api/plugins/calc/status", token=TOKEN)
        assert (status, one["id"], one["version"]) == (200, "calc", "1.2.3")

        # unknown plugin / function: 404 with a typed JSON error
        status, err = srv.request("GET", "/api/plugins/nope", token=TOKEN)
        assert status == 404 and err["error"]["type"] == "PluginNotFound"
        status, err = srv.request("POST", "/api/plugins/calc/call/missing", {"args": []}, token=TOKEN)
        assert status == 404 and err["error"]["type"] == "FunctionNotFound"
        status, err = srv.request("POST", "/api/plugins/calc/call/add", {"args": 5}, token=TOKEN)
        assert status == 400 and err["error"]["type"] == "BadRequest"
        # routes that do not exist, or not with that method: JSON too
        status, err = srv.request("GET", "/api/nothing-here", token=TOKEN)
        assert status == 404 and err["error"]["type"] == "NotFound", err
        status, err = srv.request("PUT", "/api/plugins/calc", token=TOKEN)  # (DELETE uninstalls a package)
        assert status == 405 and err["error"]["type"] == "MethodNotAllowed", err
        # mutating without the token
        status, err = srv.request("POST", "/api/plugins/calc/restart")
        assert status == 401 and err["error"]["type"] == "Unauthorized"

        # restart: new worker processes, the old ones gone
        before = pids(srv, "calc")
        status, info = srv.request("POST", "/api/plugins/calc/restart", token=TOKEN)
        assert status == 200 and info["state"] == "running", info
        after = [w["pid"] for w in info["workers"]]
        assert after and not set(after) & set(before)
        status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [40, 2]}, token=TOKEN)
        assert (status, out) == (200, {"ok": True, "result": 42})

        # disable refuses calls with 503; enable brings it back
        status, info = srv.request("POST", "/api/plugins/calc/disable", token=TOKEN)
        assert status == 200 and info["state"] == "disabled" and info["workers"] == []
        status, err = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}, token=TOKEN)
        assert status == 503 and err["error"]["type"] == "PluginUnavailable"
        status, info = srv.request("POST", "/api/plugins/calc/enable", token=TOKEN)
        assert status == 200 and info["state"] == "running"

        # reload of code that no longer loads: 409, and the old version keeps serving
        (plugins.root / "calc.js").write_text("export const metadata = {")
        status, err = srv.request("POST", "/api/plugins/calc/reload", token=TOKEN)
        assert status == 409 and err["error"]["type"] == "ReloadFailed", err
        status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [2, 2]}, token=TOKEN)
        assert (status, out["result"]) == (200, 4)
        (plugins.root / "calc.js").write_text(CALC.replace("return a + b; }", "return a + b + 1000; }", 1))
        status, info = srv.request("POST", "/api/plugins/calc/reload", token=TOKEN)
        assert status == 200 and info["reload_error"] is None
        status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [2, 2]}, token=TOKEN)
        assert out["result"] == 1004

        # config: schema errors and the plugin's own verdict are 400s; a valid one starts it
        status, err = srv.request("PUT", "/api/plugins/vault/config", {"apiKey": SECRET, "region": "mars"},
                                  token=TOKEN)
        assert status == 400 and "config.region" in err["error"]["message"] and SECRET not in str(err)
        status, err = srv.request("PUT", "/api/plugins/vault/config", {"apiKey": "bad-" + SECRET}, token=TOKEN)
        assert status == 400 and "this key is revoked" in err["error"]["message"] and SECRET not in str(err)
        status, stored = srv.request("PUT", "/api/plugins/vault/config", {"apiKey": SECRET, "region": "us"},
                                     token=TOKEN)
        assert status == 200 and stored["region"] == "us" and stored["apiKey"] != SECRET, stored
        status, shown = srv.request("GET", "/api/plugins/vault/config", token=TOKEN)
        assert status == 200 and shown == stored
        status, out = srv.request("POST", "/api/plugins/vault/call/region", {"args": []}, token=TOKEN)
        assert (status, out["result"]) == (200, "us")
        assert srv.request("GET", "/api/plugins/vault", token=TOKEN)[1]["state"] == "running"

        # events go to the listeners, highest priority first
        status, out = srv.request("POST", "/api/events/message.incoming", {"content": "hi"}, token=TOKEN)
        assert status == 200, out
        assert [(r["plugin"], r["value"]) for r in out["replies"]] == [("high", "high saw hi"), ("low", "low saw hi")]
        for flag in ("first", "stop_at_first", "stopAtFirst"):  # helper-106: ?stop_at_first=1 was ignored
            status, out = srv.request("POST", f"/api/events/message.incoming?{flag}=1", {"content": "yo"}, token=TOKEN)
            assert [r["plugin"] for r in out["replies"]] == ["high"], flag

        # balances: one result per balance plugin
        status, out = srv.request("GET", "/api/balances?refresh=1", token=TOKEN)
        assert status == 200
        assert [(b["provider"], b["status"], b["balance"], b["usedQuota"]) for b in out] == [
            ("station", "success", 12.5, 87.5)]

        # health: live, ready, and the combined view
        assert srv.request("GET", "/healthz/live") == (200, {"live": True})
        assert srv.request("GET", "/healthz/ready") == (200, {"ready": True, "draining": False})
        status, health = srv.request("GET", "/healthz")
        assert status == 200 and health["plugins"]["vault"] == "running"
        assert SECRET not in srv.log() and TOKEN not in srv.log()
        assert deno_children(srv.proc.pid)


@pytest.mark.timeout(60)
def test_not_ready_while_a_plugin_starts_but_live(plugins, shared_state, tmp_path):
    plugins.add("sluggish.js", """
await new Promise((r) => setTimeout(r, 3000));  // a top-level await that holds up the start
export function ping() { return "pong"; }
""")
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(shared_state),
                       ready=False) as srv:
        live = srv.poll(lambda: srv.request("GET", "/healthz/live", timeout=2), "live")
        assert live == (200, {"live": True})  # the server answers before the plugins are up
        status, body = srv.request("GET", "/healthz/ready")
        assert (status, body["ready"]) == (503, False)  # sluggish is still starting
        srv.wait_ready()
        assert srv.request("GET", "/api/plugins/sluggish")[1]["state"] == "running"
        assert srv.request("GET", "/healthz/ready")[0] == 200


@pytest.mark.timeout(60)
def test_cross_origin_writes_are_refused_same_origin_ones_pass(plugins, shared_state, tmp_path):
    with serve_process(tmp_path, "--plugins", str(plugins.root), "--state-dir", str(shared_state)) as srv:
        import urllib.error
        import urllib.request

        def post(origin: str | None) -> int:
            headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
            req = urllib.request.Request(srv.base + "/api/plugins/calc/call/add", data=b'{"args": [1, 2]}',
                                         headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert post("https://evil.example") == 403
        assert post("null") == 403
        assert post(srv.base.replace("127.0.0.1", "rebind.attacker.test")) == 403  # another origin too
        assert post(srv.base.replace("127.0.0.1", "localhost")) == 200  # this server too (a loopback bind)
        assert post(srv.base) == 200  # the dashboard's own page
        assert post(None) == 200  # curl, scripts
