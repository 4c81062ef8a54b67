"""The command line through real subprocesses: exit codes, JSON output, and `serve` as
`make run` starts it (options after the command), drained by SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from support.processes import deno_children, free_port, process_gone, sigterm_and_reap
from support.servers import run_cli


@pytest.mark.timeout(90)
def test_call_prints_json_and_exit_codes_follow_the_contract(calc, shared_state, tmp_path):
    common = ["--plugins", str(calc.root), "--state-dir", str(shared_state)]
    ok = run_cli("call", "calc", "add", "1", "2", *common, cwd=tmp_path)
    assert ok.returncode == 0 and json.loads(ok.stdout) == 3
    ok = run_cli("call", "calc", "echo", '{"a": [1, "x"]}', *common, cwd=tmp_path)
    assert json.loads(ok.stdout) == {"a": [1, "x"]}
    failed = run_cli("call", "calc", "missing", *common, cwd=tmp_path)
    assert failed.returncode == 1 and "missing" in failed.stderr
    usage = run_cli("call", "calc", "add", "not json", *common, cwd=tmp_path)
    assert usage.returncode == 2
    assert run_cli("frobnicate", cwd=tmp_path).returncode == 2
    info = run_cli("info", "calc", *common, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    shown = json.loads(info.stdout)
    assert (shown["id"], shown["version"], shown["state"]) == ("calc", "1.2.3", "running")
    assert "add" in shown["exports"] and shown["permissions"] == {} and len(shown["workers"]) == 1
    missing = run_cli("info", "nope", *common, cwd=tmp_path)
    assert missing.returncode == 1 and "no plugin 'nope'" in missing.stderr


@pytest.mark.timeout(90)
def test_json_arguments_the_wire_cannot_carry_are_usage_errors_naming_them(calc, shared_state, tmp_path):
    """Python's json.loads takes NaN, Infinity and 1e400 (as inf): `call calc add 1e400 2` printed
    `null` and exited 0, where POST .../call/add answers 400 "Number out of range". The CLI reads
    JSON as strictly as the HTTP API: a usage error naming the argument, exit 2, nothing called."""
    common = ["--plugins", str(calc.root), "--state-dir", str(shared_state)]
    for args, named in ((["1e400", "2"], "argument 1"), (["1", "NaN"], "argument 2"), (["Infinity", "1"], "argument 1")):
        out = run_cli("call", "calc", "add", *args, *common, cwd=tmp_path)
        assert out.returncode == 2 and named in out.stderr and out.stdout == "", (args, out.stdout, out.stderr)
    code = tmp_path / "double.js"
    code.write_text("export default (x) => x * 2")
    out = run_cli("execute", str(code), "--input", "-Infinity", *common, cwd=tmp_path)
    assert out.returncode == 2 and "--input" in out.stderr, (out.stdout, out.stderr)


@pytest.mark.timeout(90)
def test_serve_answers_http_and_stops_cleanly_on_sigterm(calc, shared_state, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "host", "serve", "--plugins", str(calc.root), "--state-dir",
         str(shared_state), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health = _wait_http(proc, f"http://127.0.0.1:{port}/healthz")
        assert health["ready"] and health["plugins"] == {"calc": "running"}
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/plugins/calc/call/add",
                                     data=b'{"args": [40, 2]}', method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True, "result": 42}
        sigterm_and_reap(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _wait_http(proc: subprocess.Popen, url: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)


@pytest.mark.timeout(90)
def test_sigterm_drains_calls_in_flight_then_exits_0(calc, shared_state, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    (tmp_path / "host.toml").write_text(
        f'plugins_dir = "{calc.root}"\nstate_dir = "{shared_state}"\n'
        f"[server]\nport = {port}\nshutdown_grace = 20.0\n"
        "[pool]\nmin_workers = 3\nmax_workers = 3\nmax_inflight = 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "host", "--config", "host.toml", "serve"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def slow_call(ms: int) -> tuple[int, dict]:
        req = urllib.request.Request(f"{base}/api/plugins/calc/call/sleep",
                                     data=json.dumps({"args": [ms]}).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())

    try:
        _wait_http(proc, f"{base}/healthz")
        workers = deno_children(proc.pid)
        assert len(workers) == 3
        with ThreadPoolExecutor(6) as pool:
            calls = [pool.submit(slow_call, 1500) for _ in range(6)]
            deadline = time.monotonic() + 10
            while sum(w["inflight"] for w in _wait_http(proc, f"{base}/api/plugins/calc")["workers"]) < 6:
                assert time.monotonic() < deadline, "the calls never got in flight"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            # New connections are refused while the six finish.
            refused = False
            while not refused and not all(c.done() for c in calls):
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1).close()
                except OSError:
                    refused = True
            assert refused
            assert [c.result() for c in calls] == [(200, {"ok": True, "result": 1500})] * 6
        assert proc.wait(timeout=20) == 0
        assert all(process_gone(pid) for pid in workers)
        assert "received SIGTERM: draining and stopping" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
