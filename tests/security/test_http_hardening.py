"""The HTTP items of the security issue, each against a real server (the ``served`` aiohttp
server on 127.0.0.1, or ``python -m host serve`` in a subprocess): the Host header checked
against the server's own names (DNS rebinding), /execute refused at start without an admin
token, reads behind a token once one is set, ``Authorization: Bearer`` and nothing else,
a deadline on request heads, timeouts that must be positive, and the new settings wired into
the flags, the environment and the config file."""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import anyio
import pytest
from support.processes import deno_children, free_port
from support.servers import run_cli, serve_process, served

from host import ExecuteConfig
from host.balances.stations import StationConfig

pytestmark = pytest.mark.anyio
ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp's server: asyncio only

ADMIN = "adm-5d2e8c1a-http-hardening"
READER = "read-93b7f04e-http-hardening"
REBOUND = "rebind.attacker.test"
CALL = "/api/plugins/{id}/call/{fn}"
# The Isolate engine's cluster, one warm worker: what a timeout could kill is then one known process.
ONE_EXECUTE_WORKER = ExecuteConfig(min_workers=1, max_workers=1)


def clean_env() -> dict[str, str]:
    """This process's environment without PLUGIN_HOST_* (the defaults, not the caller's)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_HOST_")}


async def ask(session: aiohttp.ClientSession, method: str, path: str, body: Any = None, *,
              data: bytes | None = None, **headers: str) -> tuple[int, Any]:
    """Status and decoded JSON (text if not JSON) of one request; ``headers`` by name, with
    ``_`` for ``-`` (``Host=...``, ``Origin=...``, ``Authorization=...``)."""
    if data is None and body is not None:
        data = json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with session.request(method, path, data=data, headers=sent) as r:
        text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


async def port_of(session: aiohttp.ClientSession) -> int:
    async with session.get("/healthz/live") as r:
        assert r.url.port is not None
        return r.url.port


def routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route, path parameters filled in for the calc plugin."""
    found = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    return sorted((m, p.format(id="calc", fn="add", action="restart", event="ping", name="st")) for m, p in found
                  if m != "HEAD")


def raw_exchange(address: Any, request: bytes, family: int = socket.AF_INET) -> tuple[int, Any]:
    """Send ``request`` as it is over a new connection and read the answer to its end
    (the request says ``Connection: close``): status and JSON body."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(address)
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else None


def http(method: str, path: str, host: str, body: Any = None, token: str | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


def forbidden_host(status: int, body: Any) -> bool:
    return (status == 403 and body["error"]["type"] == "Forbidden"
            and "server.allowed_hosts" in body["error"]["message"])


# ------------------------------------------------------------------------- 1. DNS rebinding

@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_a_rebound_dns_name_is_refused_on_every_route_and_only_this_servers_names_pass(calc, make_host):
    async with make_host(execute=ONE_EXECUTE_WORKER) as h, served(h, enable_execute=True) as (app, s):
        port = await port_of(s)
        calc_workers = sorted(deno_children())
        for method, path in routes(app):  # a page at rebind.attacker.test:PORT, resolved to 127.0.0.1
            body = {"code": "export default () => 1"} if path == "/execute" else {"args": [1, 2]}
            status, answer = await ask(s, method, path, body, Host=f"{REBOUND}:{port}")
            assert forbidden_host(status, answer), (method, path, status, answer)
        assert sorted(deno_children()) == calc_workers  # no /execute worker, no restart
        assert h.plugin("calc").restarts == 0

        for host in (f"127.0.0.1:{port + 1}", "127.0.0.1", f"localhost:{port + 1}", f"{REBOUND}",
                     f"127.0.0.2:{port}", f"user@127.0.0.1:{port}", f"127.0.0.1:{port}/x"):
            assert forbidden_host(*await ask(s, "GET", "/api/plugins", Host=host)), host
        # no Host header at all (aiohttp's client always sends one)
        status, answer = await raw_request_without_host(port)
        assert forbidden_host(status, answer)

        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
            status, listed = await ask(s, "GET", "/api/plugins", Host=host)
            assert status == 200 and [p["id"] for p in listed] == ["calc"], (host, listed)

        # Origin is checked against the same names, not against the request's own Host
        add = CALL.format(id="calc", fn="add")
        for origin in (f"http://{REBOUND}:{port}", "null", f"http://127.0.0.1:{port + 1}",
                       "http://127.0.0.1", f"ftp://127.0.0.1:{port}", "http://[::1"):
            status, answer = await ask(s, "POST", add, {"args": [1, 2]}, Origin=origin)
            assert status == 403 and answer["error"]["type"] == "Forbidden", (origin, answer)
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
            assert await ask(s, "POST", add, {"args": [1, 2]}, Origin=origin) == (200, {"ok": True, "result": 3})

    async with make_host() as h, served(h, allowed_hosts=["plugins.example.internal", "Proxy.Example:8443"]) as (_, s):
        for host in ("plugins.example.internal", "PLUGINS.example.internal", "proxy.example:8443"):
            assert (await ask(s, "GET", "/api/plugins", Host=host))[0] == 200, host
        for host in ("plugins.example.internal:8080", "proxy.example", f"{REBOUND}:{await port_of(s)}"):
            assert forbidden_host(*await ask(s, "GET", "/api/plugins", Host=host)), host
        assert (await ask(s, "POST", add, {"args": [2, 2]}, Host="plugins.example.internal",
                          Origin="https://plugins.example.internal"))[0] == 200
        assert (await ask(s, "POST", add, {"args": [2, 2]}, Origin="https://proxy.example:8443"))[0] == 200
        assert (await ask(s, "POST", add, {"args": [2, 2]}, Origin="http://plugins.example.internal:8080"))[0] == 403


async def raw_request_without_host(port: int) -> tuple[int, Any]:
    import anyio

    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /api/plugins HTTP/1.0\r\n\r\n")  # (HTTP/1.1 requires one: 400)
        answer = b""
        with anyio.fail_after(10):
            try:
                while True:
                    answer += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# ------------------------------------------------------------- 2. /execute needs the admin token

@pytest.mark.timeout(120)
def test_serve_refuses_execute_without_an_admin_token_unless_on_a_unix_socket_or_insecure_no_token(
        tmp_path, shared_state, run_root):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text("[execute]\nmin_workers = 1\nmax_workers = 1\n")
    common = ("--plugins", "plugins", "--state-dir", str(shared_state), "--config", "host.toml")
    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "host", "serve", "--port", str(port), *common,
                              "--enable-execute"], cwd=tmp_path, env=clean_env(), capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2, refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert all(name in lines[0] for name in ("--admin-token", "server.admin_token", "PLUGIN_HOST_ADMIN_TOKEN"))
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))  # it never listened

    code = {"code": "export default (x) => x * 2", "input": 21}
    path = str(run_root / "serve.sock")  # short: sun_path holds 107 bytes
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # left behind by a server that crashed: nobody listens on it
    with serve_process(tmp_path, *common, "--enable-execute", "--unix", path, env=clean_env(),
                       ready=False) as srv:
        srv.poll(lambda: raw_exchange(path, http("GET", "/healthz", "localhost"), socket.AF_UNIX)[0] == 200 or None,
                 "ready on the unix socket")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.stat(path).st_uid == os.getuid()
        status, out = raw_exchange(path, http("POST", "/execute", "localhost", code), socket.AF_UNIX)
        assert (status, out["ok"], out["result"]) == (200, True, 42), out
        status, out = raw_exchange(path, http("POST", "/execute", REBOUND, code), socket.AF_UNIX)
        assert forbidden_host(status, out)
        assert f"serving on http://unix:{path}" in srv.log()
        with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
            probe.connect(("127.0.0.1", int(srv.base.rsplit(":", 1)[1])))  # --unix wins over --port
    assert not os.path.exists(path)  # removed at exit

    (run_root / "notes.txt").write_text("not a socket")  # never replaced: bind refuses, exit 1
    taken = run_cli("serve", *common, "--unix", str(run_root / "notes.txt"), cwd=tmp_path)
    assert taken.returncode == 1 and f"cannot listen on unix:{run_root / 'notes.txt'}" in taken.stderr, taken.stderr
    assert "is a file, not a socket" in taken.stderr  # helper-100: it said "Address already in use"
    assert (run_root / "notes.txt").read_text() == "not a socket"

    with serve_process(tmp_path, *common, "--enable-execute", "--insecure-no-token", env=clean_env()) as srv:
        status, out = srv.request("POST", "/execute", code)
        assert (status, out["ok"], out["result"]) == (200, True, 42), out
        assert "WARNING" in srv.log() and "--insecure-no-token" in srv.log()


# ------------------------------------------------------------------- 3. reads behind a token

@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_with_a_token_set_reads_need_a_token_and_the_read_token_changes_nothing(calc, make_host):
    public = {"/", "/dashboard/app.js", "/dashboard/index.html", "/dashboard/packages.js", "/dashboard/style.css",
              "/healthz", "/healthz/live", "/healthz/ready"}
    async with make_host(stations={"st": StationConfig(plugin="calc")}) as h:  # for the station routes
        async with served(h, admin_token=ADMIN) as (app, s):  # the admin token alone guards reads too
            reads = [p for m, p in routes(app) if m == "GET"]
            assert set(reads) >= public | {"/metrics", "/api/plugins", "/api/plugins/calc/logs", "/api/balances"}
            for path in reads:
                status, answer = await ask(s, "GET", path)
                if path in public:
                    assert status == 200, (path, answer)
                else:
                    assert status == 401 and answer["error"]["type"] == "Unauthorized", (path, status, answer)
                    assert (await ask(s, "GET", path, Authorization=f"Bearer {ADMIN}"))[0] == 200, path

        async with served(h, admin_token=ADMIN, read_token=READER) as (app, s):
            for method, path in routes(app):
                if method == "GET":
                    status, answer = await ask(s, "GET", path, Authorization=f"Bearer {READER}")
                    assert status == 200, (path, answer)
                    continue
                status, answer = await ask(s, method, path, {"args": [1, 2]}, Authorization=f"Bearer {READER}")
                assert status == 401 and answer["error"]["type"] == "Unauthorized", (method, path, answer)
            assert h.plugin("calc").restarts == 0
            assert (await ask(s, "GET", "/api/plugins", Authorization=f"Bearer {READER}x"))[0] == 401
            status, answer = await ask(s, "POST", CALL.format(id="calc", fn="add"), {"args": [1, 2]},
                                       Authorization=f"Bearer {ADMIN}")
            assert (status, answer) == (200, {"ok": True, "result": 3})

        async with served(h) as (_, s):  # no token at all: reads stay open
            assert (await ask(s, "GET", "/api/plugins"))[0] == 200


# -------------------------------------------------------------------------- 4. Bearer only

@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_a_token_is_accepted_only_as_authorization_bearer_token(calc, make_host):
    add = CALL.format(id="calc", fn="add")
    async with make_host() as h, served(h, admin_token=ADMIN) as (_, s):
        for value in (ADMIN, f"bearer {ADMIN}", f"Bearer  {ADMIN}", f"Bearer{ADMIN}", f"Token {ADMIN}",
                      f"Basic {ADMIN}", f"Bearer {ADMIN}{ADMIN}", f"Bearer {ADMIN[:-1]}", f"Bearer \t{ADMIN}"):
            status, answer = await ask(s, "POST", add, {"args": [1, 2]}, Authorization=value)
            assert status == 401 and answer["error"]["type"] == "Unauthorized", value
            assert (await ask(s, "GET", "/api/plugins", Authorization=value))[0] == 401, value
        assert await ask(s, "POST", add, {"args": [1, 2]}, Authorization=f"Bearer {ADMIN}") == (
            200, {"ok": True, "result": 3})


# ------------------------------------------------------------------ 5. request head deadline

@pytest.mark.timeout(90)
def test_connections_that_send_no_complete_request_head_in_time_are_closed(calc, shared_state, tmp_path):
    timeout = 1.0
    (tmp_path / "host.toml").write_text(f"[server]\nheader_timeout = {timeout}\n")
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(shared_state),
                       "--config", "host.toml", env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        head = f"GET /healthz/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        sel = selectors.DefaultSelector()
        opened: list[socket.socket] = []
        sent_at: dict[socket.socket, float] = {}

        def connect() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            opened.append(s)
            s.setblocking(False)
            return s

        def reply(s: socket.socket) -> bytes:
            """One whole answer on a kept-alive connection: its head and Content-Length bytes."""
            s.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < length(data):
                chunk = s.recv(4096)
                assert chunk, f"closed instead of answering: {data!r}"
                data += chunk
            s.setblocking(False)
            return data

        def length(data: bytes) -> int:
            head = data.partition(b"\r\n\r\n")[0].lower()
            return int(head.partition(b"content-length:")[2].split(b"\r\n")[0])

        try:
            for i in range(100):  # half send a partial head, half nothing at all
                s = connect()
                if i % 2:
                    s.sendall(head)
                sent_at[s] = time.monotonic()
            # kept alive after one request, then the first bytes of the next one
            again = connect()
            again.sendall(head + b"\r\n")
            reply(again)
            again.sendall(head)
            sent_at[again] = time.monotonic()
            # the first bytes of the next request arrive with the end of this one's body, while
            # it is still being answered: timed from then, closed once the answer is out
            body = b'{"args": [1500]}'
            busy = connect()
            busy.sendall(f"POST /api/plugins/calc/call/sleep HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Expect: 100-continue\r\n\r\n".encode())
            busy.settimeout(10)
            assert busy.recv(4096).startswith(b"HTTP/1.1 100 Continue")  # its head is read
            busy.sendall(body + head)
            sent_at[busy] = time.monotonic()
            assert b"200 OK" in reply(busy)
            # kept alive and idle: no bytes of a next request, so no head deadline runs
            idle = connect()
            idle.sendall(head + b"\r\n")
            reply(idle)

            assert srv.request("GET", "/api/plugins/calc")[0] == 200  # still answering meanwhile

            for s in sent_at:
                sel.register(s, selectors.EVENT_READ)
            closed: dict[socket.socket, float] = {}
            deadline = time.monotonic() + timeout + 10
            while len(closed) < len(sent_at) and time.monotonic() < deadline:
                for key, _ in sel.select(deadline - time.monotonic()):
                    s = key.fileobj
                    try:
                        data = s.recv(4096)
                    except ConnectionResetError:
                        data = b""
                    assert data == b"", data  # nothing answered to a head never finished
                    closed[s] = time.monotonic()
                    sel.unregister(s)
            assert len(closed) == len(sent_at), f"{len(sent_at) - len(closed)} connections still open"
            waited = [closed[s] - sent_at[s] for s in sent_at]
            assert min(waited) >= timeout * 0.9 and max(waited) < timeout + 5, (min(waited), max(waited))

            idle.sendall(head + b"\r\n")  # the idle kept-alive connection outlived them all
            assert b"200 OK" in reply(idle)
            assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [40, 2]}) == (
                200, {"ok": True, "result": 42})
        finally:
            sel.close()
            for s in opened:
                s.close()


async def guarded_site(app: Any, **limits: Any) -> tuple[Any, int]:
    """``app`` served by the host's guarded runner (http_guard.Runner) on a free loopback port."""
    from aiohttp import web

    from host.http_guard import Runner

    runner = Runner(app, **limits)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@ASYNCIO_ONLY
@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["body after the head", "body after the answer", "chunked"])
async def test_a_request_body_is_never_timed_as_a_head_so_kept_alive_connections_stay_open(shape):
    """A body that comes in reads of its own (after its head, as clients and proxies write them;
    after an answer that did not read it, which aiohttp then reads and drops; chunked) is not the
    start of a next request: the connection, idle after its answer, stays open past
    header_timeout and serves the next request. Before the fix (the review of the head-deadline
    change): such bytes started the head timer, and the idle connection was closed after
    header_timeout rather than keepalive_timeout, under uvloop every time."""
    import asyncio

    from aiohttp import web


    async def post(request: web.Request) -> web.Response:
        if shape != "body after the answer":
            await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/p", post)
    runner, port = await guarded_site(app, header_timeout=0.5, keepalive_timeout=30.0)

    def client() -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = f"POST /p HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            if shape == "chunked":
                s.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                for part in (b"5\r\nhello\r\n", b"0\r\n\r\n"):
                    time.sleep(0.05)
                    s.sendall(part)
                first = s.recv(4096)
            elif shape == "body after the answer":
                s.sendall(f"{head}Content-Length: 10\r\n\r\n".encode())
                first = s.recv(4096)
                s.sendall(b"x" * 10)
            else:
                s.sendall(f"{head}Content-Length: 10\r\n\r\n".encode())
                time.sleep(0.05)
                s.sendall(b"x" * 10)
                first = s.recv(4096)
            s.settimeout(1.5)  # three header_timeouts idle: still open
            try:
                idle = s.recv(4096)
            except TimeoutError:
                idle = b"(open)"
            s.settimeout(10)
            if idle == b"(open)":
                s.sendall(f"{head}Content-Length: 0\r\n\r\n".encode())
                return first, s.recv(4096)
            return first, idle

    try:
        first, then = await asyncio.to_thread(client)
    finally:
        await runner.cleanup()
    assert first.startswith(b"HTTP/1.1 200"), first
    assert then.startswith(b"HTTP/1.1 200"), f"closed while idle: {then!r}"


# --------------------------------------------------------------- 6. timeouts must be positive

@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_execute_and_call_refuse_a_timeout_that_is_not_a_positive_number(calc, make_host):
    pid_code = "export default () => Deno.pid"
    async with make_host(execute=ONE_EXECUTE_WORKER) as h, served(h, enable_execute=True) as (_, s):
        status, out = await ask(s, "POST", "/execute", {"code": pid_code, "timeout": 5000})
        assert status == 200 and out["ok"], out
        warm, workers = out["result"], sorted(deno_children())
        calc_pid = (await ask(s, "POST", CALL.format(id="calc", fn="pid"), {"args": []}))[1]["result"]

        for bad in (b"0", b"-1", b"-1000", b"-0.5", b"1e400", b"-1e400", b"NaN", b'"soon"', b"true", b"[5]"):
            status, answer = await ask(s, "POST", "/execute",
                                       data=b'{"code": "export default () => 1", "timeout": ' + bad + b"}")
            assert status == 400 and answer["error"]["type"] == "BadRequest", (bad, answer)
            # NaN is not JSON at all (RFC 8259): refused as invalid JSON; the others name the field
            assert "body.timeout" in answer["error"]["message"] or (
                bad == b"NaN" and answer["error"]["message"].startswith("invalid JSON")), answer
            status, answer = await ask(s, "POST", CALL.format(id="calc", fn="add"),
                                       data=b'{"args": [1, 2], "timeout": ' + bad + b"}")
            assert status == 400 and answer["error"]["type"] == "BadRequest", (bad, answer)

        assert sorted(deno_children()) == workers  # no worker killed, none started
        assert (await ask(s, "POST", "/execute", {"code": pid_code}))[1]["result"] == warm
        assert (await ask(s, "POST", CALL.format(id="calc", fn="pid"),
                          {"args": [], "timeout": 0.5}))[1]["result"] == calc_pid
        info = h.plugin("calc")
        assert (info.crashes, info.timeouts) == (0, 0)


# ------------------------------------------------- 7. the settings: flags, environment, file

@pytest.mark.timeout(120)
def test_new_server_settings_come_from_flags_environment_and_file_and_are_validated(calc, shared_state, tmp_path):
    (tmp_path / "host.toml").write_text('[server]\nallowed_hosts = ["from-file.example:8080"]\n')
    common = ("--plugins", str(calc.root), "--state-dir", str(shared_state))
    env = {**clean_env(), "PLUGIN_HOST_ADMIN_TOKEN": ADMIN, "PLUGIN_HOST_READ_TOKEN": READER}
    with serve_process(tmp_path, *common, "--config", "host.toml", "--allowed-host", "a.example",
                       "--allowed-host", "b.example:9000", env=env) as srv:

        def get(host: str, token: str | None) -> int:
            req = urllib.request.Request(srv.base + "/api/plugins", headers={
                "Host": host, **({"Authorization": f"Bearer {token}"} if token else {})})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert get("a.example", READER) == 200 and get("b.example:9000", READER) == 200
        assert get("a.example", None) == 401  # PLUGIN_HOST_READ_TOKEN set: reads need a token
        assert get("from-file.example:8080", READER) == 403  # the flags replace the file's list
        assert get("b.example", READER) == 403
        def workers() -> set[int]:
            return {w["pid"] for w in srv.request("GET", "/api/plugins/calc", token=READER)[1]["workers"]}

        before = workers()
        assert srv.request("POST", "/api/plugins/calc/restart", token=READER)[0] == 401
        assert workers() == before
        assert srv.request("POST", "/api/plugins/calc/restart", token=ADMIN)[0] == 200
        assert not workers() & before  # new worker processes
        assert READER not in srv.log() and ADMIN not in srv.log()

    (tmp_path / "bad.toml").write_text("[server]\nheader_timeout = 0\n")
    for args, named in ((("--config", "bad.toml"), "server.header_timeout"),
                        (("--read-token", READER), "server.read_token"),
                        (("--admin-token", ADMIN, "--read-token", ADMIN), "server.read_token"),
                        (("--allowed-host", "http://a.example/"), "server.allowed_hosts")):
        bad = run_cli(*common, "serve", "--port", str(free_port()), *args, cwd=tmp_path)
        assert bad.returncode == 2 and named in bad.stderr, (args, bad.stderr)
        assert READER not in bad.stderr and ADMIN not in bad.stderr


@ASYNCIO_ONLY
async def test_a_request_another_sites_page_makes_without_origin_is_refused(calc, make_host):
    # <img src="http://127.0.0.1:8787/api/balances?refresh=1"> on any page: no Origin, a good
    # Host, and with no token set nothing else would stop it making the host call plugins.
    async with make_host() as h, served(h) as (_, s):
        add = CALL.format(id="calc", fn="add")
        for site in ("cross-site", "same-site", "Cross-Site"):
            status, answer = await ask(s, "GET", "/api/balances?refresh=1", Sec_Fetch_Site=site)
            assert status == 403 and "Sec-Fetch-Site" in answer["error"]["message"], (site, answer)
            assert (await ask(s, "POST", add, {"args": [1, 2]}, Sec_Fetch_Site=site))[0] == 403
        assert h.plugin("calc").calls == 0
        # the dashboard (same origin), a typed URL (none) and non-browser clients are served
        for site in ("same-origin", "none"):
            assert await ask(s, "POST", add, {"args": [1, 2]}, Sec_Fetch_Site=site) == (200, {"ok": True, "result": 3})
        assert await ask(s, "POST", add, {"args": [1, 2]}) == (200, {"ok": True, "result": 3})


@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_a_lone_surrogate_escape_is_named_not_called_a_truncated_body(calc, make_host):
    # Before: msgspec said "Input data was truncated" of a whole body holding "\ud800", so the
    # client looked for a cut connection; a real pair is text like any other.
    async with make_host() as h, served(h) as (_, s):
        for body in (b'{"args":["\\ud800"]}', b'{"args": ["x\\ud800"]}', b'{"args": ["\\ud800", 1]}'):
            status, answer = await ask(s, "POST", CALL.format(id="calc", fn="echo"), data=body)
            assert status == 400 and "surrogate" in answer["error"]["message"], answer
            assert "truncated" not in answer["error"]["message"]
        status, answer = await ask(s, "POST", CALL.format(id="calc", fn="echo"), data=b'{"args": ["\\ud83d\\ude00"]}')
        assert (status, answer["result"]) == (200, "\U0001F600"), answer
        status, answer = await ask(s, "POST", CALL.format(id="calc", fn="echo"), data=b'{"args": ["cut')
        assert status == 400 and "truncated" in answer["error"]["message"]  # a body really cut short


@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_a_request_with_expect_is_judged_before_anything_is_sent_back(calc, make_host):
    """aiohttp answers Expect before any middleware: 'Expect: 100-continue' without the token got
    '100 Continue' (then the client sent its body for a 401), and 'Expect: nope' with a foreign
    Host a text/plain 417, the Host never looked at (helper-71's finding). Both are judged as
    every request is; any other expectation is a JSON 417; an allowed one still continues."""
    async with make_host() as h, served(h, admin_token=ADMIN) as (_, s):
        port = await port_of(s)
        address, host = ("127.0.0.1", port), f"127.0.0.1:{port}"
        path = CALL.format(id="calc", fn="add")

        body = b'{"args":[1,2]}'

        def head(host: str, expect: str, token: str | None = None) -> bytes:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nExpect: {expect}\r\nConnection: close\r\n\r\n").encode()

        def first_answer(request: bytes) -> tuple[int, Any]:
            """The status and JSON body the server answers to a head alone (no body sent)."""
            with socket.socket() as sock:
                sock.settimeout(10)
                sock.connect(address)
                sock.sendall(request)
                answer = b""
                while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
                    answer += chunk
                status_line = answer.split(b"\r\n")[0]
                if b" 100 " in status_line:
                    return 100, None
                _, _, rest = answer.partition(b"\r\n\r\n")
                while len(rest) < int(re.search(rb"Content-Length: (\d+)", answer, re.I)[1]):
                    rest += sock.recv(65536)
                return int(status_line.split()[1]), json.loads(rest)

        run = anyio.to_thread.run_sync
        status, answer = await run(first_answer, head(host, "100-continue"))
        assert status == 401 and answer["error"]["type"] == "Unauthorized", (status, answer)  # before: 100
        status, answer = await run(first_answer, head("evil.example", "nope"))
        assert forbidden_host(status, answer), (status, answer)  # before: text/plain 417, Host unchecked
        status, answer = await run(first_answer, head(host, "100-continue").replace(b"/call/add", b"/no/such/path"))
        assert status == 401 and answer["error"]["type"] == "Unauthorized", (status, answer)  # a 404 route too
        status, answer = await run(first_answer, head("evil.example", "nope").replace(b"POST ", b"PATCH "))
        assert forbidden_host(status, answer), (status, answer)  # and a 405 one
        status, answer = await run(first_answer, head(host, "nope", ADMIN))
        assert status == 417 and answer["error"]["type"] == "ExpectationFailed", (status, answer)
        assert "nope" in answer["error"]["message"]
        assert await run(first_answer, head(host, "100-continue", ADMIN)) == (100, None)
        def whole(request: bytes) -> bytes:
            with socket.create_connection(address, timeout=10) as sock:
                sock.sendall(request)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                return answer

        answer = await run(whole, head(host, "100-continue", ADMIN) + body)
        continued, _, rest = answer.partition(b"\r\n\r\n")
        assert continued == b"HTTP/1.1 100 Continue" and rest.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"ok": True, "result": 3}


@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_an_answer_the_client_does_not_take_is_not_held():
    """A client that sends a request and never reads held the whole answer in the host's memory
    for as long as it kept the connection open (helper-88: 20 such clients of a plugin's 6 MiB
    answer, +240 MiB, past every deadline; GETs of logs or /api/plugins too, with a read token).
    Each send_timeout the client must take 64 KiB of what waits for it, else the connection is
    aborted and the buffer freed; one that reads slowly but steadily gets all of it."""
    import asyncio

    from aiohttp import web


    body = b"x" * (6 << 20)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/big", big)
    runner, port = await guarded_site(app, header_timeout=5.0, send_timeout=0.5)
    request = f"GET /big HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def reader(stall: float, pause: float, step: int) -> int:
        """Sends the request, takes nothing for ``stall`` seconds, then ``step`` bytes at most
        every ``pause`` seconds; the bytes it got before the end (or a reset)."""
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(20)
            s.connect(("127.0.0.1", port))
            s.sendall(request)
            time.sleep(stall)
            got = 0
            while got <= len(body):
                try:
                    chunk = s.recv(step)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += len(chunk)
                time.sleep(pause)
            return got

    try:
        stalled = asyncio.create_task(asyncio.to_thread(reader, 3.0, 0, 1 << 20))  # takes nothing for 3 s
        deadline = time.monotonic() + 15
        while not runner.server.connections and time.monotonic() < deadline:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        while runner.server.connections and time.monotonic() < deadline:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        gone = not runner.server.connections  # type: ignore[union-attr]
        got_stalled = await stalled
        steady = await asyncio.to_thread(reader, 0, 0.005, 16384)  # 16 KiB at most every 5 ms
    finally:
        await runner.cleanup()
    assert gone, "the stalled connection was still open after 15 s"
    # cut off, and reset: not left to the kernel, which kept its send queue (up to 4 MiB) and
    # delivered it for minutes, ending in a clean EOF the client took for the whole answer
    assert got_stalled < 1 << 20, got_stalled
    assert steady > len(body)  # head and the whole body


@ASYNCIO_ONLY
@pytest.mark.timeout(60)
async def test_the_dashboards_files_answer_whole_whatever_range_or_condition_is_asked(calc, make_host):
    """helper-99: aiohttp's FileResponse answered Range and conditional headers itself, after the
    API's error handling: a multi-range or out-of-range Range got a 416 and If-Match a 412, each
    with an empty body that is no JSON; a range or a condition is ignored (HTTP lets a server)."""
    async with make_host() as h, served(h) as (_, s):
        whole = {}
        for path in ("/", "/dashboard/app.js"):
            async with s.get(path) as r:
                assert r.status == 200
                whole[path] = await r.read()
            for headers in ({"Range": "bytes=0-1,2-3"}, {"Range": "bytes=99999999-"}, {"Range": "bytes=a-b"},
                            {"If-Match": '"x"'}, {"If-Unmodified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
                            {"If-None-Match": "*"}, {"If-Range": "garbage", "Range": "bytes=0-1"}):
                async with s.get(path, headers=headers) as r:
                    assert r.status == 200 and await r.read() == whole[path], (path, headers, r.status)
