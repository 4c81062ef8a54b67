"""Every CLI command through a real subprocess: tables and --json, balances, config get/set,
--debug's prefixed worker lines, JSON log lines, colour and progress on a tty, --inspect."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import time
import urllib.request

import pytest
from support.plugins import vault_plugin
from support.processes import free_port
from support.servers import run_cli, serve_process

STATION = """
export const metadata = {{ id: "{pid}", name: "{name}", version: "1.0.0", apiVersion: "1.0",
  capabilities: ["balance"] }};
export async function queryBalance() {{ {body} }}
"""
VAULT = vault_plugin("""
export function region(ctx) { return [ctx.config.region, ctx.config.retries, ctx.config.apiKey.length]; }
export function user(ctx) { return ctx.config.userId; }
""", fields='    retries: { type: "integer", default: 2 },\n    userId: { type: "string" },\n')
SECRET = "sk-live-\"quoted\\-9f2c"
COMMANDS = ["serve", "list", "info", "balances", "import-cc-switch", "call", "execute", "validate", "new", "config get",
            "config set", "config export", "config import", "config reset", "status", "enable", "disable", "grants", "doctor",
            "test", "balances stations", "balances add", "balances set", "balances rm", "balances test"]


def common(plugin_dir, state) -> list[str]:
    return ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, tmp_path):
    out = run_cli(*command.split(), "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m host") and len(out.stdout.splitlines()) > 3


@pytest.mark.timeout(60)
def test_list_prints_an_aligned_table_or_json(calc, shared_state, tmp_path):
    calc.add("broken.js", "export function f( {")
    out = run_cli("list", *common(calc, shared_state), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "VERSION", "WORKERS", "EXPORTS", "ERROR"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["calc"].split()[1:4] == ["running", "1.2.3", "1"]
    assert rows["broken"].split()[1] == "error"
    # aligned: every row's STATE starts in the header's STATE column
    col = lines[0].index("STATE")
    assert all(line[col - 2:col] == "  " and line[col] != " " for line in lines[1:])
    listed = json.loads(run_cli("list", "--json", *common(calc, shared_state), cwd=tmp_path).stdout)
    assert {p["id"]: p["state"] for p in listed} == {"broken": "error", "calc": "running"}


@pytest.mark.timeout(90)
def test_balances_table_json_and_a_station_that_times_out(plugin_dir, shared_state, tmp_path):
    plugin_dir.add("good.js", STATION.format(pid="good", name="Good Relay", body=(
        'return { balance: 1234.5, currency: "USD", quota: 100, usedQuota: 87.5 };')))
    plugin_dir.add("auth.js", STATION.format(pid="auth", name="Auth Relay", body=(
        'throw new PluginError("AUTH_ERROR", "invalid api key");')))
    plugin_dir.add("slow.js", STATION.format(pid="slow", name="Slow Relay", body=(
        "await new Promise((r) => setTimeout(r, 60000));")))
    (tmp_path / "host.toml").write_text("[cache]\nenabled = true\npersist = true\nttl = 600\n")
    args = [*common(plugin_dir, tmp_path / "state"), "--config", "host.toml", "--timeout", "1"]
    t0 = time.monotonic()
    out = run_cli("balances", "--refresh", *args, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr  # not every station answered
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["PROVIDER", "BALANCE", "CURRENCY", "USED/QUOTA", "STATUS", "AGE", "ERROR"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.search(r"Good Relay \(good\)\s+1,234\.50\s+USD\s+87\.50/100\.00\s+ok\s+\d+s\s*$", rows["Good"])
    assert re.search(r"AUTH_ERROR\s+\d+s\s+invalid api key$", rows["Auth"])
    assert re.search(r"Slow Relay \(slow\)\s+-\s+-\s+-\s+timeout\s+\d+s", rows["Slow"])
    assert elapsed < 20  # the slow station cost its 1 s budget, not its 60 s
    out = run_cli("balances", "--json", *args, cwd=tmp_path)
    results = {b["provider"]: b for b in json.loads(out.stdout)}
    assert results["good"]["status"] == "success" and results["good"]["balance"] == 1234.5
    assert results["good"]["cached"] is True  # the --refresh run filled the (persisted) cache
    assert results["slow"]["status"] == "timeout" and results["auth"]["errorType"] == "AUTH_ERROR"


@pytest.mark.timeout(90)
def test_config_get_and_set_keep_secrets_masked(plugin_dir, shared_state, tmp_path):
    plugin_dir.add("vault.js", VAULT)
    state = tmp_path / "state"  # a config store of its own
    args = common(plugin_dir, state)
    env = {**os.environ, "VAULT_KEY": SECRET}
    out = subprocess.run([sys.executable, "-m", "host", "config", "set", "vault", "region=us", "retries=5",
                          "--from-env", "apiKey=VAULT_KEY", *args], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    stored = json.loads(out.stdout)
    assert stored["region"] == "us" and stored["retries"] == 5 and stored["apiKey"] != SECRET
    got = run_cli("config", "get", "vault", *args, cwd=tmp_path)
    assert json.loads(got.stdout) == stored and SECRET not in got.stdout
    assert json.loads(run_cli("config", "get", "vault", "region", *args, cwd=tmp_path).stdout) == "us"
    called = run_cli("call", "vault", "region", *args, cwd=tmp_path)
    assert json.loads(called.stdout) == ["us", 5, len(SECRET)]
    assert run_cli("config", "set", "vault", "userId=42", *args, cwd=tmp_path).returncode == 0
    assert json.loads(run_cli("call", "vault", "user", *args, cwd=tmp_path).stdout) == "42"  # a string field
    bad = run_cli("config", "set", "vault", "region=mars", *args, cwd=tmp_path)
    assert bad.returncode == 1 and "config.region" in bad.stderr
    assert run_cli("config", "set", "vault", "no-equals-sign", *args, cwd=tmp_path).returncode == 2
    assert run_cli("config", "set", "vault", "--from-env", "apiKey=UNSET_VAR_X", *args, cwd=tmp_path).returncode == 2
    missing = run_cli("config", "get", "vault", "colour", *args, cwd=tmp_path)
    assert missing.returncode == 1 and "colour" in missing.stderr
    assert json.loads(run_cli("config", "get", "vault", *args, cwd=tmp_path).stdout)["region"] == "us"


@pytest.mark.timeout(60)
def test_debug_streams_console_and_lifecycle_with_the_worker_prefix(calc, shared_state, tmp_path):
    out = run_cli("--debug", "call", "calc", "say", '"hello there"', *common(calc, shared_state), cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == "hello there"
    err = out.stderr
    assert re.search(r"INFO \[plugin:calc#\d+\] said: hello there$", err, re.M), err
    assert re.search(r"WARNING \[plugin:calc#\d+\] warned$", err, re.M)
    for event in (r"spawned: pid \d+", r"ready: pid \d+ after [\d.]+ ms", r"exited \(shutdown\): pid \d+"):
        assert re.search(rf"\[plugin:calc#\d+\] {event}", err), (event, err)
    assert re.search(r"\[plugin:calc@1\.2\.3\] loaded -> running", err)
    assert "\x1b[" not in err  # no colour into a pipe
    quiet = run_cli("call", "calc", "say", '"x"', *common(calc, shared_state), cwd=tmp_path)
    assert "said: x" not in quiet.stderr and "spawned" not in quiet.stderr  # only with --debug


@pytest.mark.timeout(60)
def test_json_log_lines(calc, shared_state, tmp_path):
    out = run_cli("--debug", "--log-format", "json", "call", "calc", "say", '"hi"', *common(calc, shared_state),
                  cwd=tmp_path)
    assert out.returncode == 0
    records = [json.loads(line) for line in out.stderr.splitlines()]  # every line is one JSON object
    said = [r for r in records if r["message"] == "said: hi"]
    assert len(said) == 1 and said[0]["plugin"] == "calc" and said[0]["level"] == "info"
    assert re.fullmatch(r"calc#\d+", said[0]["worker"])
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"] == "loaded -> running" and r["plugin"] == "calc" for r in records)
    bad = run_cli("--log-level", "loud", "list", cwd=tmp_path)
    assert bad.returncode == 2


def run_on_a_tty(args: list[str], cwd) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; returns the exit code and what it showed."""
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "host", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=child, env={k: v for k, v in os.environ.items() if k != "NO_COLOR"})
    os.close(child)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child side is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=30), shown.decode(errors="replace")


@pytest.mark.timeout(60)
def test_colour_and_progress_on_a_tty(calc, shared_state, tmp_path):
    code, shown = run_on_a_tty(["list", *common(calc, shared_state)], tmp_path)
    assert code == 0
    assert re.search(r"\r\x1b\[2Kstarting plugins: \d/1 \(calc \w+\)", shown), shown
    assert shown.endswith("\r\x1b[2K")  # the progress line is cleared before the table
    code, shown = run_on_a_tty(["--debug", "call", "calc", "say", '"c"', *common(calc, shared_state)], tmp_path)
    assert code == 0
    assert re.search(r"\x1b\[\d+m\[plugin:calc#\d+\] \x1b\[0msaid: c", shown), shown
    assert re.search(r"\x1b\[33mWARNING\x1b\[0m", shown)
    assert "starting plugins" not in shown  # --debug streams the lines instead


@pytest.mark.timeout(90)
def test_inspect_runs_the_plugin_under_the_inspector_on_loopback(calc, shared_state, tmp_path):
    port = free_port()
    with serve_process(tmp_path, *common(calc, shared_state), "--inspect", "calc",
                       "--inspect-port", str(port)) as srv:
        srv.wait_logged("inspector for calc: devtools://")
        assert f"ws://127.0.0.1:{port}/" in srv.log()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            targets = json.loads(r.read())
        status, info = srv.request("GET", "/api/plugins/calc")
        assert [w["pid"] for w in info["workers"]] == [int(re.search(r"pid: (\d+)", targets[0]["title"])[1])]
        status, out = srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]})
        assert (status, out["result"]) == (200, 3)
    wrong = run_cli("serve", "--inspect", "calc", "--inspect-port", "70000", *common(calc, shared_state),
                    cwd=tmp_path)
    assert wrong.returncode == 2 and "loopback" in wrong.stderr


@pytest.mark.timeout(60)
def test_serve_on_a_port_in_use_is_one_line_and_exit_1(calc, shared_state, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run_cli("serve", "--port", str(port), *common(calc, shared_state), cwd=tmp_path)
    assert out.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.timeout(60)
def test_execute_runs_a_file_or_stdin_and_prints_the_seed_001_result(shared_state, tmp_path, local_server):
    (tmp_path / "double.js").write_text("export default (x) => { console.log('got', x); return x * 2; }")
    # The local fake below stands for a public API: the operator lets executions reach it.
    (tmp_path / "host.toml").write_text("[execute.allow]\nnet = true\nallowPrivateNetwork = true\n")
    args = ["--state-dir", str(shared_state), "--plugins", str(tmp_path / "none"), "--config", "host.toml"]
    out = run_cli("execute", "double.js", "--input", "21", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert (shown["ok"], shown["result"]) == (True, 42)
    assert [(e["level"], e["message"]) for e in shown["logs"]] == [("log", "got 21")]

    piped = subprocess.run([sys.executable, "-m", "host", "execute", "-", "--tool", "crypto", *args],
                           input="export default (x) => [typeof x, typeof crypto.randomUUID()]",
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert json.loads(piped.stdout)["result"] == ["undefined", "string"], piped.stderr

    (tmp_path / "fetch.js").write_text("export default async (url) => (await fetch(url)).status")
    url = json.dumps(f"http://127.0.0.1:{local_server.port}/x")
    denied = run_cli("execute", "fetch.js", "--input", url, *args, cwd=tmp_path)
    assert denied.returncode == 1  # the code failed: exit 1, the exception in the JSON
    assert json.loads(denied.stdout)["logs"][-1]["level"] == "exception"
    grant = json.dumps({"net": [f"127.0.0.1:{local_server.port}"], "allowPrivateNetwork": True})
    allowed = run_cli("execute", "fetch.js", "--input", url, "--permissions", grant, *args, cwd=tmp_path)
    assert json.loads(allowed.stdout)["result"] == 200, allowed.stdout
    assert local_server.requests == ["/x"]

    assert run_cli("execute", "missing.js", *args, cwd=tmp_path).returncode == 2
    assert run_cli("execute", "double.js", "--input", "{oops", *args, cwd=tmp_path).returncode == 2
    assert run_cli("execute", "double.js", "--tool", "fs", *args, cwd=tmp_path).returncode == 2
    no_db = run_cli("execute", "double.js", "--tool", "db", *args, cwd=tmp_path)
    assert no_db.returncode == 2 and "the db tool needs a database" in no_db.stderr  # a setting to change
