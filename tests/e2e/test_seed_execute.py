"""The Isolate engine's ``POST /execute`` contract against the real server (``python -m host serve``
in a subprocess): every example of the seed, each error case, and the 413 for oversize code.
The request bodies are the seed's own, verbatim, except example 6's URL, which points at a
local fake of the GitHub API (tests never leave the machine); examples 4 and 5 read a sqlite
database named by DATABASE_URL, where the seed's is PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import time

import pytest
from support.servers import serve_process

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
EXECUTE = ("--enable-execute", "--insecure-no-token")  # the Isolate engine has no tokens


def now_ms() -> int:
    return int(time.time() * 1000)


def only_exception(body: dict) -> dict:
    """The single ``exception`` entry of a failed execution, checked for the seed's shape."""
    assert body["ok"] is False and "result" not in body, body
    found = [e for e in body["logs"] if e["level"] == "exception"]
    assert len(found) == 1, body
    entry = found[0]
    assert set(entry) >= {"level", "message", "name", "timestamp"}, entry
    assert abs(entry["timestamp"] - now_ms()) < 60_000
    assert isinstance(body["duration"], (int, float)) and body["duration"] >= 0
    return entry


@pytest.mark.timeout(120)
def test_every_seed_001_example_over_http(tmp_path, shared_state, local_server):
    local_server.responses["/repos/denoland/deno"] = {"name": "deno", "stargazers_count": 95000,
                                                     "language": "Rust"}
    github = f"http://127.0.0.1:{local_server.port}"
    (tmp_path / "plugins").mkdir()
    with sqlite3.connect(tmp_path / "app.sqlite") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users VALUES (?, ?)", [(1, "Alice"), (2, "Bob")])
    db.close()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'app.sqlite'}"}  # as the seed sets it
    # The local fake stands for api.github.com: the operator lets executions reach private networks.
    (tmp_path / "host.toml").write_text("[execute.allow]\nnet = true\nallowPrivateNetwork = true\n")
    with serve_process(tmp_path, "--plugins", "plugins", "--state-dir", str(shared_state), "--config", "host.toml",
                       *EXECUTE, env=env) as srv:
        def execute(body: dict) -> dict:
            status, out = srv.request("POST", "/execute", body)
            assert status == 200, out
            assert isinstance(out["duration"], (int, float)) and out["duration"] > 0, out
            return out

        # The basic example: {"ok": true, "result": 42, "duration": ...} and no logs key.
        out = execute({"code": "export default (x) => x * 2", "input": 21})
        assert out["ok"] is True and out["result"] == 42 and "logs" not in out

        # 1: crypto, a UUID and 16 random bytes
        out = execute({"code": "export default function() { const uuid = crypto.randomUUID(); const bytes = "
                               "new Uint8Array(16); crypto.getRandomValues(bytes); return { uuid, bytes: "
                               "Array.from(bytes) }; }", "tools": ["crypto"]})
        assert out["ok"] and UUID_RE.match(out["result"]["uuid"]), out
        assert len(out["result"]["bytes"]) == 16 and all(0 <= b <= 255 for b in out["result"]["bytes"])

        # 2: crypto.subtle, the SHA-256 the seed shows
        out = execute({"code": 'export default async function(text) { const encoder = new TextEncoder(); const '
                               'data = encoder.encode(text); const hash = await crypto.subtle.digest("SHA-256", '
                               'data); return Array.from(new Uint8Array(hash)).map(b => b.toString(16).padStart(2,'
                               ' "0")).join(""); }', "input": "Hello, World!", "tools": ["crypto"]})
        assert out == {**out, "ok": True,
                       "result": "dffd6021bb2bd5b0af676290809ec3a53191dd81c7f70a4b28688a362182986f"}

        # 3: channel, and the console line in logs
        out = execute({"code": 'export default function(message) { console.log("Sending message:", message); '
                               'channel.emit("notification", { type: "info", text: message, timestamp: Date.now() '
                               '}); return "Message sent successfully"; }', "input": "Task completed",
                       "tools": ["channel"]})
        assert out["ok"] and out["result"] == "Message sent successfully"
        assert [(e["level"], e["message"]) for e in out["logs"]] == [("log", "Sending message: Task completed")]
        assert abs(out["logs"][0]["timestamp"] - now_ms()) < 60_000

        # 4: the db tool reads the configured database (sqlite here: the seed's is PostgreSQL)
        out = execute({"code": "export default async function() { const users = await db.users.select().limit(10); "
                               "return { total: users.length, users: users.map(u => ({ id: u.id, name: u.name })) }; }",
                       "tools": ["db"]})
        assert out["ok"], out
        assert out["result"] == {"total": 2, "users": [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]}

        # 5: crypto, channel and db together
        out = execute({"code": "export default async function(userId) { const users = await db.users.select().limit(1);"
                               " const user = users[0]; const sessionId = crypto.randomUUID(); channel.emit(\"user:login\","
                               " { userId, sessionId, timestamp: Date.now() }); return { user: user?.name, sessionId }; }",
                       "input": 123, "tools": ["crypto", "channel", "db"]})
        assert out["ok"], out
        assert out["result"]["user"] == "Alice" and UUID_RE.match(out["result"]["sessionId"])

        # 6: a fetch under the request's own net permission (the local fake instead of api.github.com)
        out = execute({"code": "export default async function(url) { const response = await fetch(url); const "
                               "data = await response.json(); return data; }",
                       "input": f"{github}/repos/denoland/deno",
                       "permissions": {"net": [f"127.0.0.1:{local_server.port}"], "allowPrivateNetwork": True}})
        assert out["ok"] and out["result"] == {"name": "deno", "stargazers_count": 95000, "language": "Rust"}, out
        assert local_server.requests == ["/repos/denoland/deno"]
        # ... and without it the same code is refused and nothing reaches the server
        out = execute({"code": "export default async function(url) { return (await fetch(url)).status; }",
                       "input": f"{github}/repos/denoland/deno"})
        assert only_exception(out)["name"] in ("NotCapable", "TypeError")
        assert local_server.requests == ["/repos/denoland/deno"]

        # 7: a thrown Error
        out = execute({"code": 'export default function(x) { if (!x) throw new Error("Input is required"); '
                               'return x * 2; }', "input": None})
        exc = only_exception(out)
        assert (exc["name"], exc["message"]) == ("Error", "Input is required")
        assert exc["stack"].startswith("Error: Input is required\n    at default")

        # 8: an endless loop ends at its 1000 ms timeout
        out = execute({"code": "export default function() { while(true) {} }", "timeout": 1000})
        exc = only_exception(out)
        assert (exc["name"], exc["message"]) == ("TimeoutError", "Execution timeout")
        assert 1000 <= out["duration"] < 5000, out

        # 9: async work with Promise.all
        out = execute({"code": "export default async function(items) { const results = await Promise.all("
                               "items.map(async (item) => { await new Promise(r => setTimeout(r, 10)); return "
                               "item.toUpperCase(); })); return results; }", "input": ["hello", "world", "deno"],
                       "timeout": 5000})
        assert out["ok"] and out["result"] == ["HELLO", "WORLD", "DENO"]

        # 10: console lines in order, arrays printed as the seed prints them
        out = execute({"code": 'export default function(data) { console.log("Processing data:", data); const '
                               'result = data.map(x => x * 2); console.log("Result:", result); return result; }',
                       "input": [1, 2, 3, 4, 5]})
        assert out["ok"] and out["result"] == [2, 4, 6, 8, 10]
        assert [(e["level"], e["message"]) for e in out["logs"]] == [
            ("log", "Processing data: [1,2,3,4,5]"), ("log", "Result: [2,4,6,8,10]")]
        assert out["logs"][0]["timestamp"] <= out["logs"][1]["timestamp"]


@pytest.mark.timeout(120)
def test_seed_001_error_cases_over_http(tmp_path, shared_state):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text("[execute]\ntimeout = 1.0\n")
    with serve_process(tmp_path, "--plugins", "plugins", "--state-dir", str(shared_state),
                       "--config", "host.toml", *EXECUTE, env={"DATABASE_URL": ""}) as srv:
        def failure(code: str, **extra) -> tuple[dict, dict]:
            status, out = srv.request("POST", "/execute", {"code": code, **extra})
            assert status == 200, out  # a failed execution is still a 200, the seed says
            return only_exception(out), out

        exc, _ = failure("export default (x) => { return x +  ")
        # V8's message, as the seed shows it, and where (Deno's parser locates it)
        assert exc["name"] == "SyntaxError" and exc["message"].startswith("Unexpected end of input"), exc
        assert "<execute>:1:" in exc["message"], exc

        exc, _ = failure("export default (x) => { return x.foo.bar }", input=None)
        assert exc["name"] == "TypeError" and "foo" in exc["message"]

        exc, _ = failure("export default (x) => { throw 404 }")
        assert (exc["name"], exc["message"]) == ("Exception", "404")

        # the seed's default timeout comes from [execute] timeout when the request gives none
        exc, out = failure("export default () => { while(true) {} }")
        assert (exc["name"], exc["message"]) == ("TimeoutError", "Execution timeout")
        assert 1000 <= out["duration"] < 4000

        exc, _ = failure('export default "not a function"')
        assert (exc["name"], exc["message"]) == ("EntryError", 'Entry "default" is not a function')
        exc, _ = failure("export const a = 1", entry="solve")
        assert (exc["name"], exc["message"]) == ("EntryError", 'Entry "solve" is not a function')

        # 413 for code over the Isolate engine's 100,000 characters, in the seed's error shape
        status, out = srv.request("POST", "/execute", {"code": "export default () => 1;" + " " * 100_000})
        assert status == 413 and out["error"]["name"] == "PayloadTooLarge", out
        assert "100000" in out["error"]["message"]

        # the db tool with no database configured: a typed 400 naming what is missing
        status, out = srv.request("POST", "/execute", {"code": "export default () => 1", "tools": ["db"]})
        assert status == 400 and "the db tool needs a database" in out["error"]["message"], out
        status, out = srv.request("POST", "/execute", {"code": "export default () => 1", "tools": ["fs"]})
        assert status == 400 and "unknown tool 'fs'" in out["error"]["message"], out

        # each failure left the server serving
        status, out = srv.request("POST", "/execute", {"code": "export default (x) => x + 1", "input": 1})
        assert (status, out["ok"], out["result"]) == (200, True, 2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "fresh"])
def test_execute_workers_are_pooled_or_fresh_per_call(tmp_path, shared_state, pooled):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text(f"[execute]\npooled = {str(pooled).lower()}\n")
    with serve_process(tmp_path, "--plugins", "plugins", "--state-dir", str(shared_state),
                       "--config", "host.toml", *EXECUTE) as srv:
        pids = []
        for _ in range(4):
            status, out = srv.request("POST", "/execute", {"code": "export default () => Deno.pid"})
            assert status == 200 and out["ok"], out
            pids.append(out["result"])
    if pooled:
        assert len(set(pids)) <= 2, pids   # the two warm workers serve every call
    else:
        assert len(set(pids)) == 4, pids   # a new worker for each
