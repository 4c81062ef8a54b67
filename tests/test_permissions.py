"""Strict mode, the audit log of every spawn, and the HTTPS-only option."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from host import InvalidConfig, PermissionDenied, Permissions, PoolConfig, SecurityConfig
from host.security.audit import AuditLog, read_audit

pytestmark = [pytest.mark.anyio, pytest.mark.one_backend]

ONE = PoolConfig(min_workers=1, max_workers=1)

RISKY = """
export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",
  permissions: {perms} }};
export function ok() {{ return "ok"; }}
export async function get(url) {{ const r = await fetch(url); return r.status; }}
"""

ELEVEN = [f"h{i}.example.com" for i in range(11)]


@pytest.mark.parametrize(("perms", "finding"), [
    ('{ net: true }', "net: true grants every host"),
    ('{ env: true }', "env: true grants every environment variable"),
    ('{ sys: ["hostname"] }', "sys: ['hostname'] reveals information about the machine"),
    ('{ run: ["git"] }', "run: the processes it starts run outside the sandbox"),
    ('{ net: ["*.example.com"] }', "'*.example.com' is a wildcard or range"),
    ('{ net: ["10.0.0.0/8"] }', "'10.0.0.0/8' is a wildcard or range"),
    (f'{{ net: {ELEVEN!r} }}'.replace("'", '"'), "net: 11 hosts, more than 10"),
    ('{ net: ["localhost:8080"] }', "'localhost:8080' is a loopback or private address"),
    ('{ net: ["192.168.1.20"] }', "'192.168.1.20' is a loopback or private address"),
    ('{ net: ["api.example.com"], allowPrivateNetwork: true }', "allowPrivateNetwork"),
])
async def test_strict_refuse_puts_a_risky_plugin_in_error_and_audits_it(
        plugin_dir, make_host, tmp_path, perms, finding):
    plugin_dir.add("risky.js", RISKY.format(pid="risky", perms=perms))
    plugin_dir.add("tidy.js", RISKY.format(pid="tidy", perms='{ net: ["api.example.com"] }'))
    state = tmp_path / "state"
    async with make_host(pool=ONE, state_dir=str(state), security=SecurityConfig(strict="refuse")) as h:
        info = h.plugin("risky")
        assert info.state == "error" and info.workers == []
        assert "refused by security.strict" in info.error and finding in info.error
        assert await h.call("tidy", "ok") == "ok"  # a plugin with a narrow grant is untouched
        tidy = h.plugin("tidy")
        assert tidy.permissions == {"net": ["api.example.com"]} and tidy.permission_findings == []
    strict = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "strict"]
    assert [(e["plugin"], e["action"]) for e in strict] == [("risky", "refused")]
    assert any(finding in f for f in strict[0]["findings"])


async def test_strict_warn_loads_the_plugin_and_logs_each_finding(plugin_dir, make_host, tmp_path, caplog):
    plugin_dir.add("risky.js", RISKY.format(pid="risky", perms='{ net: true, env: true }'))
    state = tmp_path / "state"
    with caplog.at_level(logging.WARNING, logger="host"):
        async with make_host(pool=ONE, state_dir=str(state)) as h:  # "warn" is the default
            info = h.plugin("risky")
            assert info.state == "running"
            assert await h.call("risky", "ok") == "ok"
            assert info.permissions == {"net": True, "env": True}
            assert info.permission_findings == ["net: true grants every host; list what is needed",
                                                "env: true grants every environment variable; list what is needed"]
    warned = [r.getMessage() for r in caplog.records if "risky permissions" in r.getMessage()]
    assert len(warned) == 1 and "net: true" in warned[0] and "env: true" in warned[0]
    strict = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "strict"]
    assert strict[0]["action"] == "warned" and len(strict[0]["findings"]) == 2


async def test_strict_off_records_nothing(plugin_dir, make_host, tmp_path):
    plugin_dir.add("risky.js", RISKY.format(pid="risky", perms='{ net: true }'))
    state = tmp_path / "state"
    async with make_host(pool=ONE, state_dir=str(state), security={"strict": "off"}) as h:
        assert h.plugin("risky").state == "running"
    assert not [e for e in read_audit(state / "audit.jsonl") if e["event"] == "strict"]


SECRETIVE = """
export const metadata = { id: "secretive", name: "s", version: "2.0.0", apiVersion: "1.0",
  permissions: { net: ["api.example.com"], env: ["LANG"] },
  configSchema: { apiKey: { type: "string", secret: true, required: true } } };
export function ok() { return "ok"; }
"""


async def test_audit_log_records_the_flags_of_every_spawn_and_never_a_secret_or_token(
        plugin_dir, make_host, tmp_path):
    plugin_dir.add("secretive.js", SECRETIVE)
    state = tmp_path / "state"
    key = "sk-live-AUDIT-must-not-appear-0123456789"
    async with make_host(pool=PoolConfig(min_workers=2, max_workers=2), state_dir=str(state),
                         plugins={"secretive": {"config": {"apiKey": key}}}) as h:
        pids = {w.pid for w in h.plugin("secretive").workers}
        assert await h.call("secretive", "ok") == "ok"
    spawns = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "spawn"]
    mine = [e for e in spawns if e["pid"] in pids]
    assert len(mine) == 2 and {e["plugin"] for e in mine} == {"secretive"}
    flags = mine[0]["flags"]
    assert "--no-remote" in flags and "--no-npm" in flags and "--v8-flags=--max-old-space-size=128" in flags
    net = next(f for f in flags if f.startswith("--allow-net="))
    assert net.endswith(",api.example.com") and any(f.startswith("--deny-net=0.0.0.0/8,") for f in flags)
    assert "--allow-env=LANG" in flags and not any(f.startswith("--allow-run") for f in flags)
    assert mine[0]["data_limit_mb"] == 1024 + 2 * 704  # two Workers allowed by default
    text = (state / "audit.jsonl").read_text()
    assert key not in text
    assert oct((state / "audit.jsonl").stat().st_mode & 0o777) == "0o600"


async def test_audit_log_can_be_turned_off(plugin_dir, make_host, tmp_path):
    plugin_dir.add("tidy.js", RISKY.format(pid="tidy", perms="{}"))
    state = tmp_path / "state"
    async with make_host(pool=ONE, state_dir=str(state), security={"audit_log": ""}) as h:
        assert await h.call("tidy", "ok") == "ok"
    assert not (state / "audit.jsonl").exists()


def test_audit_lines_are_whole_and_redacted(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", redact=lambda s: s.replace("hunter2", "********"))
    log.record("spawn", plugin="p", note="password hunter2")
    log.record("egress", plugin="p", bytes_in=10)
    log.close()
    log.record("after-close")  # ignored, not an error
    entries = read_audit(tmp_path / "a.jsonl")
    assert [e["event"] for e in entries] == ["spawn", "egress"]
    assert entries[0]["note"] == "password ********" and entries[0]["ts"] > 1.7e9


async def test_https_only_narrows_net_grants_to_port_443(plugin_dir, make_host, local_server, tmp_path):
    port = local_server.port
    plugin_dir.add("web.js", RISKY.format(
        pid="web", perms='{ net: ["localhost"] }'))
    state = tmp_path / "state"
    async with make_host(pool=ONE, state_dir=str(state), security={"https_only": True, "strict": "off"},
                         plugins={"web": {"allow_private_network": True}}) as h:
        with pytest.raises(PermissionDenied, match=f'Requires net access to "localhost:{port}"'):
            await h.call("web", "get", f"http://localhost:{port}/plain")
        assert h.plugin("web").state == "running"
    assert local_server.connections == 0
    spawns = [e for e in read_audit(state / "audit.jsonl") if e["event"] == "spawn" and e["plugin"] == "web"]
    nets = [f for e in spawns for f in e["flags"] if f.startswith("--allow-net=") and "," in f]
    assert nets and all(f.endswith(",localhost:443") for f in nets)


async def test_without_https_only_the_same_plugin_reaches_the_plain_http_server(
        plugin_dir, make_host, local_server):
    plugin_dir.add("web.js", RISKY.format(
        pid="web", perms='{ net: ["localhost"] }'))
    async with make_host(pool=ONE, plugins={"web": {"allow_private_network": True}}) as h:
        assert await h.call("web", "get", f"http://localhost:{local_server.port}/plain") == 200
    assert local_server.requests == ["/plain"]


@pytest.mark.parametrize(("perms", "why"), [
    ('{ net: true }', "net: true cannot be narrowed to HTTPS"),
    ('{ net: ["api.example.com:8080"] }', "'api.example.com:8080' is not port 443"),
])
async def test_https_only_refuses_grants_it_cannot_narrow(plugin_dir, make_host, perms, why):
    plugin_dir.add("wide.js", RISKY.format(pid="wide", perms=perms))
    async with make_host(pool=ONE, security={"https_only": True, "strict": "off"}) as h:
        assert h.plugin("wide").state == "error" and why in h.plugin("wide").error


def test_https_only_grant_mapping():
    p = Permissions.parse({"net": ["api.example.com", "b.example.com:443", "[2001:db8::1]"]})
    assert p.net_grant(https_only=True) == ["api.example.com:443", "b.example.com:443", "[2001:db8::1]:443"]
    assert p.net_grant() == ["api.example.com", "b.example.com:443", "[2001:db8::1]"]
    with pytest.raises(InvalidConfig):
        Permissions.parse({"net": ["x.com:80"]}).net_grant(https_only=True)


def test_security_config_is_validated():
    from host import HostConfig

    with pytest.raises(InvalidConfig, match=r"security\.strict: 'maybe' is not one of 'off', 'refuse', 'warn'"):
        HostConfig(security={"strict": "maybe"})
    with pytest.raises(InvalidConfig, match="max_net_hosts"):
        HostConfig(security={"max_net_hosts": 0})


def test_deny_list_keeps_only_the_proxy_address_reachable():
    from host.security.permissions import deny_list

    kept = deny_list(("127.31.7.9",))
    nets = [ipaddress.ip_network(n) for n in kept if not n.startswith("[")]
    assert not any(ipaddress.ip_address("127.31.7.9") in n for n in nets)
    for addr in ("127.0.0.1", "127.31.7.8", "127.31.7.10", "0.0.0.0", "169.254.169.254", "10.0.0.1"):
        assert any(ipaddress.ip_address(addr) in n for n in nets), addr


def test_merge_follows_seed_001():
    user = {"env": ["A"], "net": ["host1"]}
    tool = {"env": ["B"], "net": ["host2", "host1"]}
    merged = Permissions.merge(user, tool)
    assert (merged.env, merged.net) == (["A", "B"], ["host1", "host2"])  # union, first-seen order
    assert Permissions.merge("none", user, None) == Permissions.parse(user)  # "none" is neutral
    assert Permissions.merge({"net": ["a"]}, {"net": True}).net is True  # a whole kind absorbs lists
    assert Permissions.merge({"read": ["x"]}, {"allowPrivateNetwork": True}).allow_private_network
    assert Permissions.merge() == Permissions()
    with pytest.raises(InvalidConfig, match=r'permissions\[1\]: "inherit" is not allowed'):
        Permissions.merge(user, "inherit")
    with pytest.raises(InvalidConfig, match="'inherit' is not allowed"):
        Permissions.merge({"net": ["inherit"]})


async def test_execute_takes_permission_sets_to_merge(make_host, local_server):
    code = ("export default async function (url) { const r = await fetch(url); return r.status; }")
    url = f"http://localhost:{local_server.port}/merged"
    user, tool = {"net": [f"localhost:{local_server.port}"]}, {"allowPrivateNetwork": True}
    lan = {"allow": {"net": True, "allowPrivateNetwork": True}}  # the operator's ceiling allows it
    async with make_host(pool=ONE, execute=lan) as h:
        alone = await h.execute(code, url, permissions=[user, "none"])
        merged = await h.execute(code, url, permissions=[user, tool])
        refused = await h.execute(code, url, permissions=["none", tool])
    assert not alone.ok and "Requires net access" in alone.logs[-1].message  # the deny list held
    assert merged.ok and merged.result == 200
    assert not refused.ok and f'"localhost:{local_server.port}"' in refused.logs[-1].message
    assert local_server.requests == ["/merged"]


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_refusal_says_which_permission_to_add_and_where(plugin_dir, make_host):
    # Deno's advice ("run again with the --allow-net flag") is no use to a plugin's author: the
    # host names the entry and the file's declared permissions instead. Refused before any
    # connection is attempted, so nothing leaves the machine.
    path = plugin_dir.add("needy.js", """
export async function net() { await fetch("https://api.example.com/v1/balance"); }
export function env() { return Deno.env.get("RELAY_TOKEN"); }
export async function lan() { await fetch("http://127.0.0.1:8080/"); }
export async function beside() { return await Deno.readTextFile("data.txt"); }
""")
    async with make_host() as h:
        with pytest.raises(PermissionDenied) as net:
            await h.call("needy", "net")
        with pytest.raises(PermissionDenied) as env:
            await h.call("needy", "env")
        with pytest.raises(PermissionDenied) as lan:
            await h.call("needy", "lan")
        with pytest.raises(PermissionDenied) as beside:  # helper-106: granting "data.txt" led nowhere
            await h.call("needy", "beside")
    # a loopback address is denied whatever the plugin declares: the operator's switch is named too
    assert net.value.where == f"{path}:3:37"  # the plugin's own line, not Deno's ext:deno_fetch/26_fetch.js
    assert f'add "127.0.0.1:8080" to metadata.permissions.net in {path}' in lan.value.message
    assert "[plugins.needy] allow_private_network = true in host.toml" in lan.value.message
    assert net.value.message.startswith('Requires net access to "api.example.com:443"')
    assert f'add "api.example.com" to metadata.permissions.net in {path}' in net.value.message
    assert "--allow-net" not in net.value.message
    assert f'add "RELAY_TOKEN" to metadata.permissions.env in {path}' in env.value.message
    assert "a relative path is in the plugin's data directory" in beside.value.message
    assert 'new URL("./data.txt", import.meta.url)' in beside.value.message


async def test_a_declared_loopback_address_refused_says_the_operators_switch(plugin_dir, make_host):
    """helper-113: a plain fetch to a loopback host the plugin declares failed with Deno's own
    "fetch failed: Requires net access ..., run again with the --allow-net flag" (the refusal
    inside fetch's message was not read): it names allow_private_network as ctx.fetchJson does."""
    plugin_dir.add("lanny.js", """
export const metadata = { id: "lanny", name: "lanny", version: "1.0.0", apiVersion: "1.0",
  permissions: { net: ["127.0.0.1:19201"] } };
export async function lan() { await fetch("http://127.0.0.1:19201/"); }
""")
    async with make_host() as h:
        with pytest.raises(PermissionDenied) as lan:
            await h.call("lanny", "lan")
    assert "--allow-net" not in lan.value.message, lan.value.message
    assert "[plugins.lanny] allow_private_network = true in host.toml" in lan.value.message, lan.value.message
