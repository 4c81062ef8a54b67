"""``install``/``update``/``uninstall`` from the shell and over HTTP (issue 18): real ``python -m
host`` subprocesses, with and without a server on the state directory, and the HTTP routes of a
served host guarded by the admin token; every refusal leaves the plugin directory as it was."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid

import pytest
from support.packages import new_key, plugin_source, plugin_tar, publish, sha256, tar_gz, zip_of
from support.plugins import CALC, fresh_state
from support.processes import process_gone
from support.servers import run_cli, serve_process

pytestmark = pytest.mark.timeout(120)
TOKEN = "adm-pkg-3f1c9e"


def multipart(url: str, fields: dict[str, tuple[str | None, bytes]], token: str | None) -> tuple[int, dict]:
    """POST ``fields`` (name -> (filename or None, bytes)) as multipart/form-data."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, (filename, data) in fields.items():
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def audit(state) -> list[dict]:
    return [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]


def test_the_cli_installs_verified_packages_and_refuses_bad_ones(plugin_dir, tmp_path, shared_state):
    state = fresh_state(tmp_path, shared_state)
    key, public = new_key()
    toml = tmp_path / "host.toml"
    toml.write_text(f'[packages]\ntrusted_keys = ["{public}"]\nmax_archive_bytes = 1048576\n'
                    "max_unpacked_bytes = 1048576\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state), "--config", str(toml)]
    dist = tmp_path / "dist"
    dist.mkdir()

    unverified = publish(dist / "plain.tar.gz", plugin_tar("plain", "1.0.0"), sha=False)
    out = run_cli("install", str(unverified), *common, cwd=tmp_path)
    assert out.returncode == 1 and "[packages] allow_unverified = true" in out.stderr
    good = plugin_tar("hello", "1.0.0")
    tampered = publish(dist / "hello.tar.gz", good, key=key)
    tampered.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # the published sha256 is the good one's
    out = run_cli("install", str(tampered), *common, cwd=tmp_path)
    assert out.returncode == 1 and "sha256 mismatch" in out.stderr, out.stderr
    other, _ = new_key()
    forged = publish(dist / "forged.tar.gz", good, key=other)
    out = run_cli("install", str(forged), *common, cwd=tmp_path)
    assert out.returncode == 1 and "bad signature" in out.stderr, out.stderr
    for name, data in (("dotdot.tar.gz", tar_gz({"hello/mod.js": "x", "../x.js": "x"})),
                       ("abs.zip", zip_of({"/tmp/x.js": "x"})),
                       ("link.tar.gz", tar_gz({"hello/mod.js": "x"}, links={"hello/k": "/etc/passwd"}))):
        out = run_cli("install", str(publish(dist / name, data)), *common, cwd=tmp_path)
        assert out.returncode == 1 and "refused" not in out.stdout and out.stderr.startswith("error: "), out.stderr
    for name, data, why in (("bomb.tar.gz", tar_gz({"hello/zeros.bin": bytes(8 * 1024 * 1024)}), "zip bomb"),
                            ("big.tar.gz", tar_gz({"hello/noise.bin": os.urandom(1_200_000)}), "max_archive_bytes")):
        out = run_cli("install", str(publish(dist / name, data)), *common, cwd=tmp_path)
        assert out.returncode == 1 and why in out.stderr, out.stderr
    assert not plugin_dir.root.exists() or list(plugin_dir.root.iterdir()) == []

    signed = publish(dist / "hello-1.0.0.tar.gz", good, key=key)
    out = run_cli("install", str(signed), *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verified_by"] == "signature" and report["version"] == "1.0.0"
    out = run_cli("call", "hello", "version", *common, cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == "1.0.0", out.stderr
    out = run_cli("uninstall", "hello", *common, cwd=tmp_path)
    assert out.returncode == 0 and not (plugin_dir.root / "hello").exists(), out.stderr
    refused = [e for e in audit(state) if e["event"] == "package_refused"]
    assert len(refused) == 8 and {e["by"] for e in refused} == {"cli"}


def test_a_server_installs_updates_and_uninstalls_over_the_cli_and_http(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("calc.js", CALC)
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]
    dist = tmp_path / "dist"
    dist.mkdir()
    v1 = publish(dist / "hello-1.tar.gz", plugin_tar("hello", "1.0.0"))
    with serve_process(tmp_path, *common, env={"PLUGIN_HOST_ADMIN_TOKEN": TOKEN}) as srv:
        # the CLI hands the package to the server over the control socket: it serves at once
        out = run_cli("install", str(v1), *common, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "running", out.stderr
        status, body = srv.request("POST", "/api/plugins/hello/call/version", {}, token=TOKEN)
        assert status == 200 and body["result"] == "1.0.0"

        # HTTP: a multipart upload with its sha256, guarded by the admin token
        data = plugin_tar("other", "1.0.0")
        fields = {"file": ("other.tar.gz", data), "sha256": (None, sha256(data).encode())}
        assert multipart(srv.base + "/api/plugins/install", fields, None)[0] == 401
        status, body = multipart(srv.base + "/api/plugins/install", {**fields, "sha256": (None, b"0" * 64)}, TOKEN)
        assert status == 400 and "sha256 mismatch" in body["error"]["message"]
        assert body["error"]["name"] == body["error"]["type"] == "PackageRefused", body  # every error answer names it twice
        garbled = urllib.request.Request(srv.base + "/api/plugins/install", data=b"--x\r\ngarbage", method="POST",
                                         headers={"Content-Type": "multipart/form-data; boundary=x",
                                                  "Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(garbled, timeout=30)
        assert bad.value.code == 400 and "multipart upload: unreadable" in json.loads(bad.value.read())["error"]["message"]
        # parts the route does not know, or one given twice, are refused: many small parts can't add up
        status, body = multipart(srv.base + "/api/plugins/install", {**fields, "padding": (None, b"x" * 1000)}, TOKEN)
        assert status == 400 and "unknown part 'padding'" in body["error"]["message"], body
        twice = ("--b\r\nContent-Disposition: form-data; name=\"sha256\"\r\n\r\nab\r\n" * 2).encode() + b"--b--\r\n"
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(urllib.request.Request(
                srv.base + "/api/plugins/install", data=twice, method="POST",
                headers={"Content-Type": "multipart/form-data; boundary=b", "Authorization": f"Bearer {TOKEN}"}),
                timeout=30)
        assert bad.value.code == 400
        assert "the `sha256` part is given twice" in json.loads(bad.value.read())["error"]["message"]
        status, body = multipart(srv.base + "/api/plugins/install", fields, TOKEN)
        assert status == 201 and body["state"] == "running", body
        status, body = srv.request("POST", "/api/plugins/other/call/version", {}, token=TOKEN)
        assert status == 200 and body["result"] == "1.0.0"

        # update over HTTP (the raw archive as the body)
        v2 = plugin_tar("hello", "2.0.0")
        old = [w["pid"] for w in srv.request("GET", "/api/plugins/hello", token=TOKEN)[1]["workers"]]
        status, body = srv.request("POST", f"/api/plugins/hello/update?filename=hello-2.tar.gz&sha256={sha256(v2)}",
                                   data=v2, token=TOKEN)
        assert status == 200 and body["action"] == "updated" and body["version"] == "2.0.0", body
        status, body = srv.request("POST", "/api/plugins/hello/call/version", {}, token=TOKEN)
        assert status == 200 and body["result"] == "2.0.0"
        srv.poll(lambda: True if all(process_gone(p) for p in old) else None, "old workers gone")

        # uninstall: its workers stop; a plugin placed by hand is refused
        workers = [w["pid"] for w in srv.request("GET", "/api/plugins/other", token=TOKEN)[1]["workers"]]
        status, body = srv.request("DELETE", "/api/plugins/calc", token=TOKEN)
        assert status == 400 and "not installed with `install`" in body["error"]["message"]
        status, body = srv.request("DELETE", "/api/plugins/other", token=TOKEN)
        assert status == 200 and body["action"] == "uninstalled"
        assert all(process_gone(p) for p in workers)
        assert srv.request("GET", "/api/plugins/other", token=TOKEN)[0] == 404
        out = run_cli("uninstall", "hello", "--purge", *common, cwd=tmp_path)
        assert out.returncode == 0 and json.loads(out.stdout)["purged"] is True, out.stderr
        status, listed = srv.request("GET", "/api/packages", token=TOKEN)
        assert status == 200 and listed == {}
    events = [(e["event"], e.get("plugin"), e["by"]) for e in audit(state) if e["event"].startswith("package_")]
    assert events == [("package_install", "hello", "cli"), ("package_refused", None, "http"),
                      ("package_install", "other", "http"), ("package_update", "hello", "http"),
                      ("package_uninstall", "other", "http"), ("package_uninstall", "hello", "cli")]


def test_without_an_admin_token_only_the_cli_may_install(plugin_dir, tmp_path, shared_state):
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]
    data = plugin_tar("hello", "1.0.0")
    archive = publish(tmp_path / "hello.tar.gz", data)
    with serve_process(tmp_path, *common) as srv:
        status, body = srv.request("POST", f"/api/plugins/install?filename=hello.tar.gz&sha256={sha256(data)}", data=data)
        assert status == 403 and "needs an admin token" in body["error"]["message"]
        assert not (plugin_dir.root / "hello").exists()
        out = run_cli("install", str(archive), *common, cwd=tmp_path)  # the owner-only control socket
        assert out.returncode == 0 and json.loads(out.stdout)["state"] == "running", out.stderr
        status, body = srv.request("DELETE", "/api/plugins/hello?purge=1")  # deletes configs and storage
        assert status == 403 and "needs an admin token" in body["error"]["message"]
        assert (plugin_dir.root / "hello").exists()


def test_a_directory_needs_allow_unverified_and_update_works_without_a_server(plugin_dir, tmp_path, shared_state):
    state = fresh_state(tmp_path, shared_state)
    src = tmp_path / "src" / "hello"
    src.mkdir(parents=True)
    (src / "mod.js").write_text(plugin_source("hello", "1.0.0"))
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]
    out = run_cli("install", str(src), *common, cwd=tmp_path)
    assert out.returncode == 1 and "a plugin directory has no checksum" in out.stderr
    assert "[packages] allow_unverified = true" in out.stderr
    toml = tmp_path / "host.toml"
    toml.write_text("[packages]\nallow_unverified = true\n")
    out = run_cli("install", str(src), *common, "--config", str(toml), cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["verified_by"] == "unverified", out.stderr
    v2 = publish(tmp_path / "hello-2.tar.gz", plugin_tar("hello", "2.0.0"))
    out = run_cli("update", "hello", str(v2), *common, cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["version"] == "2.0.0", out.stderr
    assert '"2.0.0"' in (plugin_dir.root / "hello" / "mod.js").read_text()
    out = run_cli("call", "hello", "version", *common, cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout) == "2.0.0", out.stderr
