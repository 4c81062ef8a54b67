"""The egress proxy (security.egress_proxy): fetch from a worker goes through it, identified by
its proxy credentials; it refuses private targets Deno cannot check behind a proxy, caps
responses and tunnels, counts bytes per plugin and audits each request without secrets."""

from __future__ import annotations

import base64
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from support.processes import free_port, wait_for

from host import PermissionDenied, PluginError, PoolConfig, ResourceLimitExceeded
from host.config import SecurityConfig
from host.security.audit import AuditLog, read_audit
from host.security.egress import EgressProxy, is_granted, is_internal

pytestmark = pytest.mark.anyio

ONE = PoolConfig(min_workers=1, max_workers=1)


def LAN(*plugin_ids: str) -> dict:
    """The operator's ``allow_private_network`` for these plugins (a local fake stands for the
    provider; only the operator may open private networks to a plugin)."""
    return {pid: {"allow_private_network": True} for pid in plugin_ids}
CAP = 64 * 1024

PLUGIN = """
export const metadata = {{ id: "{id}", name: "{id}", version: "1.0.0", apiVersion: "1.0",
  permissions: {perms} }};
export async function get(url, headers) {{  // headers: always passed (a context follows the args)
  const r = await fetch(url, {{ headers }});
  const body = await r.text();
  return [r.status, body.length, body.slice(0, 64)];
}}
export async function post(url, body) {{
  const r = await fetch(url, {{ method: "POST", body }});
  return [r.status, await r.text()];
}}
export async function connect(hostname, port) {{
  const c = await Deno.connect({{ hostname, port }}); c.close(); return "connected";
}}
"""


def add_plugin(plugin_dir, pid: str, perms: str) -> None:
    plugin_dir.add(f"{pid}.js", PLUGIN.format(id=pid, perms=perms))


def security(tmp_path: Path, **kw) -> SecurityConfig:
    return SecurityConfig(egress_proxy=True, audit_log=str(tmp_path / "audit.jsonl"), **kw)


def egress_lines(tmp_path: Path) -> list[dict]:
    return [e for e in read_audit(tmp_path / "audit.jsonl") if e["event"] == "egress"]


class RawServer:
    """A TCP server on 127.0.0.1 in a thread of its own: ``serve(sock, record)`` handles each
    connection; it records connections and what each one received."""

    def __init__(self, serve: Callable[[socket.socket, RawServer], None]) -> None:
        self.serve = serve
        self.connections = 0
        self.received: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.serve(conn, self)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(serve: Callable[[socket.socket, RawServer], None]) -> RawServer:
        servers.append(RawServer(serve))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _chunked(total: int, size: int = 16 * 1024) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for _ in range(total // size):
        out += b"%x\r\n" % size + b"x" * size + b"\r\n"
    return out + b"0\r\n\r\n"


SMALL = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Plugin-Host-Egress: refused\r\n"
         b"Content-Type: text/plain\r\n\r\nhello")
RESPONSES = {
    b"/small": SMALL,
    b"/cl-big": b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 1048576,
    b"/chunked-big": _chunked(256 * 1024),
    b"/chunked-ok": _chunked(32 * 1024),
}


def http_fake(conn: socket.socket, srv: RawServer) -> None:
    """Read one request (a body by Content-Length), answer from RESPONSES by path, close."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _request_length(data):
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    srv.received.append(data)
    path = data.split(b" ", 2)[1].split(b"?")[0]
    conn.sendall(RESPONSES[path])


def _request_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    length = [line.split(b":")[1] for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return len(head) + 4 + (int(length[0]) if length else 0)


def echo(conn: socket.socket, srv: RawServer) -> None:
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
        conn.sendall(chunk)
    srv.received.append(got)


def firehose(conn: socket.socket, srv: RawServer) -> None:
    conn.sendall(b"y" * (1024 * 1024))


# ---------------------------------------------------------------------------- through Deno


async def test_fetch_goes_through_the_proxy_counted_and_audited_without_secrets(
        plugin_dir, make_host, raw_server, tmp_path):
    srv = raw_server(http_fake)
    add_plugin(plugin_dir, "fetcher", f'{{ net: ["localhost:{srv.port}"] }}')
    async with make_host(pool=ONE, security=security(tmp_path), plugins=LAN("fetcher")) as h:
        url = f"http://localhost:{srv.port}/small?token=QSECRET-1234"
        result = await h.call("fetcher", "get", url, {"x-api-key": "HSECRET-5678"})
        posted = await h.call("fetcher", "post", f"http://localhost:{srv.port}/small", "B" * 3000)
        proxy_url = h._egress.url_for("fetcher")
        # counted once the proxy has finished the exchange, which may be just after the plugin
        # read the answer
        await wait_for(lambda: h.plugin("fetcher").egress_requests == 2)
        info = h.plugin("fetcher")
    # The target's verdict header was stripped (else the runtime would have raised).
    assert result == [200, 5, "hello"] and posted == [200, "hello"]
    head, post = srv.received
    assert post.startswith(b"POST /small HTTP/1.1\r\n") and post.endswith(b"B" * 3000)
    assert head.startswith(b"GET /small?token=QSECRET-1234 HTTP/1.1\r\n")  # origin-form upstream
    assert b"x-api-key: HSECRET-5678" in head and b"proxy-authorization" not in head.lower()
    token = proxy_url.split(":")[2].split("@")[0]
    assert len(token) >= 24 and token.encode() not in head
    line, post_line = egress_lines(tmp_path)
    assert (post_line["method"], post_line["bytes_out"], post_line["bytes_in"]) == ("POST", len(post), len(SMALL))
    assert line | {"ts": 0, "ms": 0} == {
        "ts": 0, "ms": 0, "event": "egress", "plugin": "fetcher", "method": "GET", "host": "localhost",
        "port": srv.port, "status": 200, "bytes_out": len(head), "bytes_in": len(SMALL),
        "outcome": "ok", "reason": None}
    assert (info.egress_requests, info.egress_refused) == (2, 0)
    assert (info.egress_bytes_out, info.egress_bytes_in) == (len(head) + len(post), 2 * len(SMALL))
    audit = (tmp_path / "audit.jsonl").read_text()
    for secret in ("QSECRET", "HSECRET", "token=", "/small", token, "Basic"):
        assert secret not in audit


async def test_a_private_target_deno_cannot_judge_is_refused_by_the_proxy(
        plugin_dir, make_host, local_server, tmp_path):
    # Deno resolves a target name and applies --deny-net even through a proxy, so
    # http://localhost:port never reaches the proxy. Its deny list has no IPv6 ranges: an
    # IPv4-compatible address of loopback passes Deno and is the proxy's to refuse.
    port = local_server.port
    add_plugin(plugin_dir, "fetcher", f'{{ net: ["localhost:{port}", "[::7f00:1]:{port}"] }}')
    async with make_host(pool=ONE, security=security(tmp_path)) as h:
        with pytest.raises(PermissionDenied, match=f'Requires net access to "127.0.0.1:{port}"'):
            await h.call("fetcher", "get", f"http://localhost:{port}/x?k=v", {})
        assert egress_lines(tmp_path) == []  # Deno refused it before the proxy
        with pytest.raises(PermissionDenied, match=r"egress proxy refused.*private or loopback"):
            await h.call("fetcher", "get", f"http://[::7f00:1]:{port}/x?k=v", {})
        assert h.plugin("fetcher").state == "running"
        info = h.plugin("fetcher")
    assert local_server.connections == 0 and local_server.requests == []
    [line] = egress_lines(tmp_path)
    assert (line["plugin"], line["outcome"], line["status"], line["bytes_out"]) == ("fetcher", "refused", 403, 0)
    assert (line["host"], "allowPrivateNetwork" in line["reason"]) == ("::7f00:1", True)
    assert (info.egress_requests, info.egress_refused) == (1, 1)
    refusals = [(e["plugin"], e["kind"], e["what"]) for e in read_audit(tmp_path / "audit.jsonl")
                if e["event"] == "refusal"]
    # Deno's refusal; the proxy's, and the NotCapable the plugin got for it
    assert [(p, k) for p, k, _ in refusals] == [("fetcher", "permission"), ("fetcher", "egress"),
                                               ("fetcher", "permission")]
    assert f'127.0.0.1:{port}' in refusals[0][2] and "::7f00:1" in refusals[1][2]


async def test_a_response_over_the_cap_is_cut(plugin_dir, make_host, raw_server, tmp_path):
    srv = raw_server(http_fake)
    add_plugin(plugin_dir, "fetcher", f'{{ net: ["localhost:{srv.port}"] }}')
    async with make_host(pool=ONE, security=security(tmp_path, max_response_bytes=CAP), plugins=LAN("fetcher")) as h:
        base = f"http://localhost:{srv.port}"
        assert await h.call("fetcher", "get", f"{base}/chunked-ok", {}) == [200, 32 * 1024, "x" * 64]
        with pytest.raises(ResourceLimitExceeded, match="1048576 bytes exceeds"):
            await h.call("fetcher", "get", f"{base}/cl-big", {})
        with pytest.raises(PluginError) as e:  # headers arrived, then the body was cut
            await h.call("fetcher", "get", f"{base}/chunked-big", {})
        assert not isinstance(e.value, ResourceLimitExceeded)
        assert h.plugin("fetcher").state == "running"
    ok, by_length, streamed = egress_lines(tmp_path)
    assert ok["outcome"] == "ok" and ok["bytes_in"] > 32 * 1024
    assert (by_length["outcome"], by_length["status"]) == ("too_large", 502)
    assert by_length["bytes_in"] < 1048576  # the target's body was not read
    assert (streamed["outcome"], streamed["status"]) == ("too_large", 200)
    assert CAP < streamed["bytes_in"] < 256 * 1024


async def test_https_fetch_opens_an_authenticated_tunnel_and_private_ones_are_refused(
        plugin_dir, make_host, raw_server, tmp_path):
    target = raw_server(echo)
    add_plugin(plugin_dir, "opened", f'{{ net: ["localhost:{target.port}"] }}')
    add_plugin(plugin_dir, "closed", f'{{ net: ["[::7f00:1]:{target.port}"] }}')
    async with make_host(pool=ONE, security=security(tmp_path), plugins=LAN("opened")) as h:
        with pytest.raises(PluginError):  # the tunnel opens; TLS fails against an echo server
            await h.call("opened", "get", f"https://localhost:{target.port}/", {}, timeout=10)
        assert target.connections == 1
        with pytest.raises(PluginError):  # Deno reports "unsuccessful tunnel": no headers to read
            await h.call("closed", "get", f"https://[::7f00:1]:{target.port}/", {}, timeout=10)
    assert target.connections == 1
    lines = {e["plugin"]: e for e in egress_lines(tmp_path)}
    assert (lines["opened"]["method"], lines["opened"]["outcome"], lines["opened"]["status"]) == (
        "CONNECT", "ok", 200)
    assert lines["opened"]["bytes_out"] > 0  # the TLS ClientHello went through, counted
    assert (lines["closed"]["outcome"], lines["closed"]["status"]) == ("refused", 403)


async def test_deno_still_denies_direct_connects_to_loopback_except_the_proxy(
        plugin_dir, make_host, local_server, tmp_path):
    add_plugin(plugin_dir, "raw", "{ net: true }")
    async with make_host(pool=ONE, security=security(tmp_path)) as h:
        proxy = h._egress
        assert proxy.address != "127.0.0.1" and ipaddress.ip_address(proxy.address).is_loopback
        neighbour = str(ipaddress.ip_address(proxy.address) + 1)
        for host, port in (("127.0.0.1", local_server.port), (neighbour, proxy.port),
                           ("localhost", local_server.port)):
            with pytest.raises(PermissionDenied, match="Requires net access"):
                await h.call("raw", "connect", host, port)
        assert await h.call("raw", "connect", proxy.address, proxy.port) == "connected"
    assert local_server.connections == 0
    with pytest.raises(OSError):  # the proxy stopped with the host
        await anyio.connect_tcp(proxy.address, proxy.port)


# ---------------------------------------------------------------------------- a raw client


async def _ask(proxy, request: bytes, *, then: bytes = b"", limit: int = 4 * 1024 * 1024) -> bytes:
    """Send ``request`` (and ``then``) to the proxy; everything it sends back until it closes."""
    out = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(proxy.address, proxy.port) as c:
            await c.send(request)
            if then:
                head = await c.receive()
                out += head
                if b" 200 " in head.split(b"\r\n")[0]:
                    await c.send(then)
                    await c.send_eof()
            try:
                while len(out) < limit:
                    out += await c.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return out


def _connect(host: str, port: int, url: str | None) -> bytes:
    auth = b""
    if url is not None:
        creds = url.split("//", 1)[1].rsplit("@", 1)[0]
        auth = b"Proxy-Authorization: Basic " + base64.b64encode(creds.encode()) + b"\r\n"
    return b"CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (host.encode(), port, host.encode(), port, auth)


async def test_connect_tunnels_are_checked_counted_and_capped(plugin_dir, make_host, raw_server, tmp_path):
    target, hose = raw_server(echo), raw_server(firehose)
    add_plugin(plugin_dir, "tunneler", f'{{ net: ["127.0.0.1:{target.port}", "127.0.0.1:{hose.port}"] }}')
    add_plugin(plugin_dir, "closed", f'{{ net: ["127.0.0.1:{target.port}"] }}')
    async with make_host(pool=ONE, security=security(tmp_path, max_response_bytes=CAP),
                         plugins=LAN("tunneler")) as h:
        proxy = h._egress
        good, closed = proxy.url_for("tunneler"), proxy.url_for("closed")
        payload = b"ping " * 2000
        out = await _ask(proxy, _connect("127.0.0.1", target.port, good), then=payload)
        assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(payload)
        await wait_for(lambda: len(egress_lines(tmp_path)) == 1)

        out = await _ask(proxy, _connect("127.0.0.1", hose.port, good))
        assert out.startswith(b"HTTP/1.1 200 ")
        assert len(out.split(b"\r\n\r\n", 1)[1]) == CAP  # exactly the cap, then closed

        refused = await _ask(proxy, _connect("127.0.0.1", target.port, closed))
        not_granted = await _ask(proxy, _connect("127.0.0.1", free_port(), good))  # no server there
        forged = good.replace(good.split(":")[2].split("@")[0], "A" * 32)
        bad = [await _ask(proxy, _connect("127.0.0.1", target.port, u)) for u in (forged, None)]
        info = h.plugin("tunneler")
    for out in (refused, not_granted):
        assert out.startswith(b"HTTP/1.1 403 ") and b"x-plugin-host-egress: refused" in out
    assert b"not in the plugin's net grant" in not_granted and b"private or loopback" in refused
    assert all(out.startswith(b"HTTP/1.1 407 ") and b"proxy-authenticate: Basic" in out for out in bad)
    assert target.connections == 1 and hose.connections == 1
    assert target.received == [payload]

    echoed, capped, refused_line, not_granted_line, *bad_lines = egress_lines(tmp_path)
    assert (echoed["outcome"], echoed["bytes_out"], echoed["bytes_in"]) == ("ok", len(payload), len(payload))
    assert capped["outcome"] == "too_large" and capped["bytes_in"] > CAP
    assert (refused_line["plugin"], refused_line["outcome"]) == ("closed", "refused")
    assert (not_granted_line["plugin"], not_granted_line["outcome"]) == ("tunneler", "refused")
    assert [(b["plugin"], b["status"], b["outcome"]) for b in bad_lines] == [(None, 407, "refused")] * 2
    assert (info.egress_requests, info.egress_refused) == (3, 1)
    assert info.egress_bytes_out == len(payload) and info.egress_bytes_in == len(payload) + capped["bytes_in"]


async def test_connections_are_capped_and_idle_ones_closed():
    proxy = EgressProxy(audit=AuditLog(None), permissions_for=lambda pid: None, max_response_bytes=CAP,
                        max_connections=1, idle_timeout=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(proxy.serve)
        first = await anyio.connect_tcp(proxy.address, proxy.port)
        second = await anyio.connect_tcp(proxy.address, proxy.port)  # waits in the backlog
        await second.send(b"GET http://example.invalid/ HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
        # Not served while the first holds the only slot: the accept loop waits for the slot.
        await wait_for(lambda: proxy._slots.statistics().tasks_waiting == 1)
        assert proxy._slots.value == 0
        with anyio.fail_after(3):
            with pytest.raises(anyio.EndOfStream):  # the idle first connection is closed...
                await first.receive()
            assert (await second.receive()).startswith(b"HTTP/1.1 407 ")  # ...and the second served
        await first.aclose()
        await second.aclose()
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.9.8.7", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
    "169.254.169.254", "::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "fd00:ec2::254",
    "fe80::1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "::7f00:1",
])
def test_internal_addresses_are_recognised(address):
    assert is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_not_internal(address):
    assert not is_internal(ipaddress.ip_address(address))


def test_the_net_grant_is_matched_like_deno():
    grant = ["api.example.com", "localhost:8080", "10.0.0.0/8", "[::1]:443"]
    assert is_granted(grant, "API.example.com", 1234)  # no port: any port
    assert is_granted(grant, "localhost", 8080) and not is_granted(grant, "localhost", 8081)
    assert not is_granted(grant, "127.0.0.1", 8080)  # names are not resolved
    assert is_granted(grant, "10.2.3.4", 80) and not is_granted(grant, "11.0.0.1", 80)
    assert is_granted(grant, "::1", 443) and is_granted(grant, "[::1]", 443)
    assert is_granted(grant, "0:0::1", 443)  # the same IPv6 address, written differently
    assert not is_granted(grant, "evil.api.example.com", 443)
    assert is_granted(True, "anything", 1) and not is_granted([], "anything", 1)


async def test_execute_code_gets_the_proxy_identity_of_its_own_permission_set(
        make_host, raw_server, tmp_path):
    srv = raw_server(http_fake)
    code = ("export default async function (url) { const r = await fetch(url); "
            "return [r.status, await r.text()]; }")
    url = f"http://localhost:{srv.port}/small"
    lan = {"allow": {"net": True, "allowPrivateNetwork": True}}  # the operator's ceiling
    async with make_host(pool=ONE, security=security(tmp_path), execute=lan) as h:
        opened = await h.execute(code, url, permissions={"net": [f"localhost:{srv.port}"],
                                                         "allowPrivateNetwork": True})
        closed = await h.execute(code, f"http://[::7f00:1]:{srv.port}/small",
                                 permissions={"net": [f"[::7f00:1]:{srv.port}"]})
    assert opened.ok and opened.result == [200, "hello"]  # allowPrivateNetwork held for this set
    assert not closed.ok and any("egress proxy refused" in e.message for e in closed.logs)
    ok_line, refused_line = egress_lines(tmp_path)
    assert ok_line["plugin"].startswith("execute+") and ok_line["outcome"] == "ok"
    assert refused_line["plugin"].startswith("execute+") and refused_line["outcome"] == "refused"
    assert ok_line["plugin"] != refused_line["plugin"]  # one identity per permission set
    assert len(srv.received) == 1
