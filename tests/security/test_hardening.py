"""Hardening of the HTTP face (issue 5 item 6), against a real aiohttp server on 127.0.0.1 and a
real PluginHost: loopback by default, the admin token on every mutating route and in no output,
/execute off unless enabled, typed errors for oversized and malformed bodies after which the
host keeps serving, and a private socket directory for the workers."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import pytest
from support.processes import deno_children, free_port, sigterm_and_reap
from support.servers import served

from host.balances.stations import StationConfig

pytestmark = pytest.mark.anyio

# aiohttp's server runs on asyncio only; the run-dir test needs no server and runs on both.
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])

TOKEN = "adm-7f1c9e2b-not-in-any-output"
CALL = "/api/plugins/{id}/call/{fn}"


async def post(session: aiohttp.ClientSession, path: str, body: Any = None, *, data: bytes | None = None,
               token: str | None = None, method: str = "POST") -> tuple[int, Any, str]:
    """Status, decoded JSON (None if not JSON) and raw text of one POST (or ``method``)."""
    headers = {"Authorization": token} if token is not None else {}
    if data is None:
        data = json.dumps(body).encode()
    async with session.request(method, path, data=data,
                               headers={"Content-Type": "application/json", **headers}) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text), text
        except ValueError:
            return r.status, None, text


def listening_addresses(pid: int, port: int) -> list[tuple[str, int]]:
    """The (address, port) of each TCP socket of process ``pid`` listening on ``port``, read
    from /proc: the socket inodes the process holds, matched against /proc/net/tcp{,6}."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or inode not in inodes or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), port))
    return found


@pytest.mark.timeout(90)
def test_serve_binds_loopback_by_default_and_keeps_the_token_out_of_its_log(calc, shared_state, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_HOST_")}  # defaults only
    proc = subprocess.Popen(
        [sys.executable, "-m", "host", "serve", "--plugins", str(calc.root), "--state-dir",
         str(shared_state), "--port", str(port), "--admin-token", TOKEN, "--debug"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    serving = threading.Event()

    def drain() -> None:  # read stderr to the end, so --debug output never blocks the server
        for line in proc.stderr:
            lines.append(line)
            if "serving on" in line:
                serving.set()
        serving.set()  # EOF: the server exited (checked below)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert serving.wait(60) and proc.poll() is None, "".join(lines)
        assert f"serving on http://127.0.0.1:{port}" in "".join(lines)
        assert listening_addresses(proc.pid, port) == [("127.0.0.1", port)]

        url = f"http://127.0.0.1:{port}/api/plugins/calc/call/add"
        req = urllib.request.Request(url, data=b'{"args": [40, 2]}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 401
        assert TOKEN not in refused.value.read().decode()
        req.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read()) == {"ok": True, "result": 42}

        sigterm_and_reap(proc)
        reader.join(10)
        log_text = "".join(lines) + proc.stdout.read()
        assert "received SIGTERM" in log_text  # the log was captured to the end
        assert TOKEN not in log_text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
        proc.stdout.close()
        proc.stderr.close()


@ASYNCIO_ONLY
async def test_admin_token_guards_every_mutating_route_and_appears_in_no_response_or_log(
        calc, make_host, caplog):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    known = {("POST", CALL): ({"args": [40, 2]}, 42),
             ("POST", "/execute"): ({"code": "export default (x) => x + 1", "input": 1}, 2)}
    stations = {"st": StationConfig(plugin="calc")}  # a station, so that its routes have one to act on
    async with make_host(stations=stations) as h, served(h, admin_token=TOKEN, enable_execute=True) as (app, s):
        routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
        mutating = sorted(r for r in routes if r[0] not in ("GET", "HEAD", "OPTIONS"))
        assert set(known) <= set(mutating)
        for method, path in mutating:  # any route added later is covered too
            url = path.format(id="calc", fn="add", action="restart", event="ping", name="st")
            body, expected = known.get((method, path), ({}, None))
            for token in (None, "", "Bearer", "Bearer wrong", f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x",
                          f"Basic {TOKEN}x"):
                status, data, text = await post(s, url, body, token=token, method=method)
                texts.append(text)
                assert status == 401, (method, path, token, text)
                assert data["error"]["type"] == "Unauthorized"
            status, data, text = await post(s, url, body, token=f"Bearer {TOKEN}", method=method)
            texts.append(text)
            assert status != 401, (method, path, text)
            if expected is not None:
                assert (status, data["ok"], data["result"]) == (200, True, expected), text

        for method, path in sorted(routes):
            if method != "GET":
                continue
            async with s.get(path.format(id="calc", fn="add", action="restart", event="ping", name="st"),
                             headers={"Authorization": f"Bearer {TOKEN}"}) as r:  # reading needs it too
                texts.append(await r.text())
                assert r.status == 200, (path, texts[-1])
    assert all(TOKEN not in t for t in texts)
    assert caplog.records  # the server and host did log: the next line checks something
    assert TOKEN not in caplog.text and all(TOKEN not in str(r.args) for r in caplog.records)


@ASYNCIO_ONLY
async def test_execute_is_forbidden_with_a_typed_error_unless_enabled(plugin_dir, make_host):
    code = {"code": "export default (x) => x * 2", "input": 21}
    async with make_host() as h:  # no plugins: any deno process would be /execute's
        async with served(h) as (_, s):
            status, data, _ = await post(s, "/execute", code)
            assert status == 403
            assert data["error"]["type"] == "Forbidden" and "--enable-execute" in data["error"]["message"]
            assert deno_children() == []  # refused before any code ran
        async with served(h, enable_execute=True) as (_, s):
            status, data, text = await post(s, "/execute", code)
            assert (status, data["ok"], data["result"]) == (200, True, 42), text


@ASYNCIO_ONLY
async def test_body_over_max_body_gets_413_typed_error_and_host_keeps_serving(calc, make_host):
    limit = 1024
    async with make_host() as h, served(h, max_body=limit, enable_execute=True) as (_, s):
        fits = "x" * (limit - 100)
        status, data, _ = await post(s, CALL.format(id="calc", fn="echo"), {"args": [fits]})
        assert (status, data["result"]) == (200, fits)  # the limit is the threshold, not all bodies

        for path, body in ((CALL.format(id="calc", fn="echo"), {"args": ["x" * limit]}),
                           ("/execute", {"code": "export default () => 1; //" + "x" * limit})):
            status, data, text = await post(s, path, body)
            assert status == 413, text
            assert data["error"]["type"] == "PayloadTooLarge" and str(limit) in data["error"]["message"]

        status, data, _ = await post(s, CALL.format(id="calc", fn="add"), {"args": [40, 2]})
        assert (status, data) == (200, {"ok": True, "result": 42})
        assert h.plugin("calc").state == "running" and h.plugin("calc").crashes == 0


@ASYNCIO_ONLY
@pytest.mark.parametrize("path,data", [
    (CALL.format(id="calc", fn="add"), b'{"args": [1,'),
    (CALL.format(id="calc", fn="add"), b"\xff\xfe{}"),
    (CALL.format(id="calc", fn="add"), b"[1, 2]"),
    (CALL.format(id="calc", fn="add"), b'{"args": 5}'),
    (CALL.format(id="calc", fn="add"), b'{"args": [1, 2], "timeout": "soon"}'),
    (CALL.format(id="calc", fn="add"), b'{"args": [1, 2], "timeout": 1e400}'),
    (CALL.format(id="calc", fn="add"), b'{"args": [1, 2], "timeout": NaN}'),
    ("/execute", b'{"code": "export default () => 1"'),
    ("/execute", b'{"code": 5}'),
    ("/execute", b'{"code": "export default () => 1", "entry": 5}'),  # used to crash the worker
    ("/execute", b'{"code": "export default () => 1", "tools": "crypto"}'),
])
async def test_malformed_body_gets_400_typed_error_and_host_keeps_serving(calc, make_host, path, data):
    async with make_host() as h, served(h, enable_execute=True) as (_, s):
        status, body, text = await post(s, path, data=data)
        assert status == 400, text
        assert body["error"]["type"] == "BadRequest" and body["error"]["message"]
        status, body, _ = await post(s, CALL.format(id="calc", fn="add"), {"args": [40, 2]})
        assert (status, body) == (200, {"ok": True, "result": 42})


async def test_worker_socket_directory_is_private_while_the_host_runs(calc, make_host):
    async with make_host() as h:
        assert await h.call("calc", "add", 1, 2) == 3  # a worker is connected through it
        run_dir = h._runtime.run_dir
        st = os.lstat(run_dir)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
        assert stat.S_IMODE(st.st_mode) == 0o700
    assert not run_dir.exists()  # removed on close
