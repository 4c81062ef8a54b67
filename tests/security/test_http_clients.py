"""Careless and hostile HTTP clients against a real ``python -m host serve`` (an attacker
review's findings): a compressed body is refused unread (a 1 MB gzip that inflates to a
gigabyte used to stall the event loop, so long that every worker was killed for missing the
host's heartbeats), a body announced too large is refused at once and one that never arrives
closes its connection, idle connections cannot take every file descriptor, a request aiohttp
cannot parse is a JSON 400 logged in one line, and a query or body that used to raise is a 400."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import time
import zlib

import pytest
from support.plugins import vault_plugin
from support.servers import serve_process, served

pytestmark = pytest.mark.timeout(120)

ADMIN = "adm-0c2d8e5b-http-clients"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_HOST_")}


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def answer(s: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of one answer (Content-Length framed) on ``s``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().partition(b"content-length:")[2].split(b"\r\n")[0])
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed mid-answer"
        body += chunk
    assert b"application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body[:length])


def closed_within(s: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``s`` (fails past ``seconds``)."""
    start = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - start


def bomb() -> bytes:
    """~1 MB of gzip that inflates to 1 GiB."""
    out = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([*(out.compress(block) for _ in range(1024)), out.flush()])


def test_compressed_bodies_are_refused_unread_with_or_without_a_token(calc, shared_state, tmp_path):
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(shared_state),
                       "--admin-token", ADMIN, env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        pids = {w["pid"] for w in srv.request("GET", "/api/plugins/calc", token=ADMIN)[1]["workers"]}
        payload = bomb()
        for token in (None, ADMIN):
            for _ in range(3):
                s = connect(port)
                auth = f"Authorization: Bearer {token}\r\n" if token else ""
                started = time.monotonic()
                s.sendall(f"POST /api/plugins/calc/call/add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
                          f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                          f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                status, body = answer(s)
                s.close()
                assert time.monotonic() - started < 2
                assert status == 415, body  # before the token is even looked at: nothing read
        # a small honest gzip body with the token: refused, naming what to do
        status, body = srv.request("POST", "/api/plugins/calc/call/add", token=ADMIN,
                                   data=gzip.compress(b'{"args": [1, 2]}'), headers={"Content-Encoding": "gzip"})
        assert status == 415 and "Content-Encoding" in body["error"]["message"]
        started = time.monotonic()
        assert srv.request("GET", "/healthz/live")[0] == 200
        assert time.monotonic() - started < 1
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [40, 2]}, token=ADMIN) == (
            200, {"ok": True, "result": 42})
        assert {w["pid"] for w in srv.request("GET", "/api/plugins/calc", token=ADMIN)[1]["workers"]} == pids


def test_a_body_too_large_is_refused_at_once_and_one_that_never_comes_closes_the_connection(
        calc, shared_state, tmp_path):
    (tmp_path / "host.toml").write_text("[server]\nbody_timeout = 1.0\nmax_body_bytes = 4096\n")
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(shared_state),
                       "--config", "host.toml", "--insecure-no-token", env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        big = connect(port)
        started = time.monotonic()
        big.sendall(f"POST /api/plugins/calc/call/add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n".encode())
        status, body = answer(big)
        assert (status, body["error"]["type"]) == (413, "PayloadTooLarge") and time.monotonic() - started < 2
        assert closed_within(big, 15) < 12  # read no longer than aiohttp lingers (10 s), then closed
        slow = []
        for _ in range(20):  # bodies announced and never sent, or sent a byte at a time
            s = connect(port)
            s.sendall(f"POST /api/plugins/calc/call/add HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 2000\r\n\r\n{".encode())
            slow.append(s)
        waited = [closed_within(s, 10) for s in slow]
        assert max(waited) < 6, waited
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [1, 2]}) == (200, {"ok": True, "result": 3})
        for s in [big, *slow]:
            s.close()
    assert "Traceback" not in srv.log() and "ERROR" not in srv.log(), srv.log()[-3000:]  # one debug line each


def test_idle_connections_cannot_take_every_descriptor(calc, shared_state, tmp_path):
    (tmp_path / "host.toml").write_text("[server]\nmax_connections = 20\n")
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(shared_state),
                       "--config", "host.toml", "--insecure-no-token", env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        kept = []
        for _ in range(60):  # one request each, then idle and kept alive
            s = connect(port)
            s.sendall(f"GET /healthz/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert answer(s)[0] == 200
            kept.append(s)
        open_fds = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        # the server closed the longest idle ones as new ones came: still answering, under its cap
        assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [2, 3]}) == (200, {"ok": True, "result": 5})
        alive = 0
        for s in kept:
            s.setblocking(False)
            try:
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except ConnectionResetError:
                pass
            s.close()
        assert alive <= 20, alive
        assert alive >= 15  # the newest stay: only as many as needed went
        assert open_fds < 200
        # connections still sending their head (a byte at a time) hold no slot a whole request needs
        slow = [connect(port) for _ in range(40)]
        for s in slow:
            s.sendall(b"G")
        # a burst beyond the cap closes itself; past a second, a slow head gives its slot up
        srv.poll(lambda: srv.request("GET", "/healthz/live")[0] == 200 or None, "a slot for a whole request")
        for n in range(10):
            assert srv.request("POST", "/api/plugins/calc/call/add", {"args": [n, 1]}) == (
                200, {"ok": True, "result": n + 1})
        for s in slow:
            s.close()


def test_bad_requests_are_json_answers_logged_in_one_line(calc, shared_state, tmp_path):
    with serve_process(tmp_path, "--plugins", str(calc.root), "--state-dir", str(shared_state),
                       "--insecure-no-token", env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        host = f"Host: 127.0.0.1:{port}\r\n"
        for raw in (b"G@T / HTTP/1.1\r\n" + host.encode() + b"\r\n",
                    b"GET / HTTP/1.1\r\n" + host.encode() + b"X-Long: " + b"a" * 10000 + b"\r\n\r\n",
                    b"POST /execute HTTP/1.1\r\n" + host.encode()
                    + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + host.encode() + b"X-Nul: a\x00b\r\n\r\n"):
            s = connect(port)
            s.sendall(raw)
            status, body = answer(s)
            s.close()
            assert status == 400 and body["error"]["type"] == "BadRequest", (raw[:40], body)
        for path in ("/api/balances/history?since=1e300", "/api/balances/history?since=inf",
                     "/api/balances/history?until=nan"):
            status, body = srv.request("GET", path)
            assert status == 400 and "since/until" in body["error"]["message"], (path, body)
        status, body = srv.request("POST", "/api/plugins/install", data=b"[" * 1000 + b"]" * 1000)
        assert status == 400, body
        assert srv.request("GET", "/healthz/live")[0] == 200
    log = srv.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_empty_private_network_request_changes_nothing(calc, make_host):
    """``allow`` must be said: an empty POST (a careless client, a form) used to grant it."""
    async with make_host() as h, served(h) as (_, session):
        for data in (b"", b"{}"):
            async with session.post("/api/plugins/calc/private-network", data=data,
                                    headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "allow" in (await r.json())["error"]["message"]
        assert h._switches.private_network("calc") is False
        async with session.post("/api/plugins/calc/private-network", json={"allow": True}) as r:
            assert r.status == 200
        assert h._switches.private_network("calc") is True


def test_a_call_still_running_past_the_shutdown_grace_is_answered_503(plugin_dir, shared_state, tmp_path):
    """SIGTERM: a call that outlives ``shutdown_grace`` gets a JSON 503 before the connection
    closes (before: the connection was dropped with no answer)."""
    plugin_dir.add("slow.js", 'export const metadata = { id: "slow", name: "Slow", version: "1.0.0", apiVersion: "1.0" };\n'
                   "export async function nap() { await new Promise(r => setTimeout(r, 60000)); return 1; }\n"
                   "export function ping() { return 1; }\n")
    (tmp_path / "host.toml").write_text("[server]\nshutdown_grace = 1.0\n")
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir", str(shared_state),
                       "--config", "host.toml", "--insecure-no-token", env=clean_env()) as srv:
        port = int(srv.base.rsplit(":", 1)[1])
        s = connect(port)
        s.sendall(f"POST /api/plugins/slow/call/nap HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".encode())
        srv.poll(lambda: any(w["inflight"] for w in srv.request("GET", "/api/plugins/slow")[1]["workers"]) or None,
                 "the call in flight")
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        s.settimeout(30)
        status, body = answer(s)
        assert (status, body["error"]["type"]) == (503, "HostClosed"), body
        assert time.monotonic() - started < 10
        assert srv.proc.wait(30) == 0
        s.close()


def test_the_hosts_own_failures_are_503_not_the_plugins_502():
    """A key file gone (SecretsError), the rate limits' Redis down (PolicyStorageError), a worker
    the OS will not start (SpawnFailed): the service is unavailable, the plugin did nothing wrong
    (before: 502, "the plugin's own error")."""
    from host.errors import PluginError, PolicyStorageError, SecretsError, SpawnFailed
    from host.server import _host_error

    for exc in (SecretsError("key"), PolicyStorageError("redis"), SpawnFailed("fork")):
        assert _host_error(exc).status == 503, exc
    assert _host_error(PluginError("boom")).status == 502


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_yes_no_parameter_it_cannot_read_is_a_400_naming_it(plugin_dir, make_host):
    """``?replace=True`` (what ``requests`` sends for ``params={"replace": True}``) was read as no:
    the PUT merged and the old secret stayed. Every yes/no parameter takes 1/true/yes/on and
    0/false/no/off in any case; anything else, or two values that disagree, is a 400 naming it."""
    plugin_dir.add("vault.js", vault_plugin(""))
    async with make_host() as h, served(h) as (_, session):
        async with session.put("/api/plugins/vault/config", json={"apiKey": "sk-old-1", "region": "us"}) as r:
            assert r.status == 200, await r.text()
        async with session.put("/api/plugins/vault/config?replace=True", json={"apiKey": "sk-new-2"}) as r:
            assert r.status == 200, await r.text()
        assert h.get_config("vault").get("region") != "us"  # replaced, not merged
        for path in ("/api/plugins/vault/config?replace=maybe", "/api/plugins/vault/config?replace=1&replace=0"):
            async with session.put(path, json={"apiKey": "sk-new-3"}) as r:
                body = await r.json()
                assert r.status == 400 and "replace" in body["error"]["message"], (path, body)
        async with session.get("/api/balances?refresh=sometimes") as r:
            body = await r.json()
            assert r.status == 400 and "refresh" in body["error"]["message"], body
        async with session.get("/api/balances?refresh=YES&refresh=on") as r:
            assert r.status == 200, await r.text()
        async with session.post("/api/events/x.y?first=2", json={}) as r:
            assert r.status == 400 and "first" in (await r.json())["error"]["message"]
        async with session.delete("/api/plugins/vault?purge=please") as r:
            assert r.status == 400 and "purge" in (await r.json())["error"]["message"]
    assert "sk-old-1" not in str(h.get_config("vault"))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_body_with_a_bom_or_a_declared_charset_is_read_as_its_client_wrote_it(calc, make_host):
    """A JSON body a Windows tool wrote (PowerShell 5's ``Out-File -Encoding utf8`` puts a BOM
    first; a .NET client may send UTF-16 and say so) was "JSON is malformed: invalid character
    (byte 0)", naming neither. RFC 8259 lets a parser ignore the BOM, and the Content-Type's
    charset says how to read the rest; one that cannot be read so is a 400 naming the charset."""
    body = '{"args": ["\u4f59\u989d"]}'
    async with make_host() as h, served(h) as (_, session):
        for data, ctype in ((b"\xef\xbb\xbf" + body.encode(), "application/json"),
                            (body.encode("utf-16"), "application/json; charset=utf-16"),
                            (body.encode("gbk"), "application/json; charset=GBK")):
            async with session.post("/api/plugins/calc/call/echo", data=data, headers={"Content-Type": ctype}) as r:
                assert (r.status, await r.json()) == (200, {"ok": True, "result": "\u4f59\u989d"}), ctype
        for data, ctype, said in ((body.encode(), "application/json; charset=klingon", "klingon"),
                                  # codecs that fail with a UnicodeError of their own were a 500
                                  (b'{"args": [1]}', "application/json; charset=punycode", "punycode"),
                                  (b'{"args": [1]}', "application/json; charset=undefined", "undefined"),
                                  (b"\xff\xfe\x00", "application/json; charset=utf-8", "UTF-8")):
            async with session.post("/api/plugins/calc/call/echo", data=data, headers={"Content-Type": ctype}) as r:
                answer = await r.json()
                assert r.status == 400 and said in answer["error"]["message"], (ctype, answer)


def test_a_plugin_errors_details_reach_an_http_client():
    """helper-113: PluginError(RATE_LIMIT, "slow down", {retryAfter: 5}) answered over HTTP without
    its details (the Python caller had them): a client could not read when to retry."""
    import json as _json

    from host.errors import PluginError
    from host.server import _host_error

    answer = _host_error(PluginError("slow down", name="PluginError", error_type="RATE_LIMIT",
                                     details={"retryAfter": 5}))
    assert answer.status == 502
    assert _json.loads(answer.body)["error"]["details"] == {"retryAfter": 5}
