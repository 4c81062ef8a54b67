"""Secret config values encrypted at rest (the host key from a 0600 key file or a variable),
migration of plaintext config.json, and config export/import that never carries a plaintext
secret."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from support.plugins import vault_plugin
from support.servers import run_cli

from host import (
    HostConfig,
    InvalidConfig,
    PluginNotFound,
    PluginSettings,
    PoolConfig,
    SecretsError,
    SyncPluginHost,
)
from host.plugins.settings import MASK

SECRET = "sk-live-9c1e4b7a2d6f"
ONE = PoolConfig(min_workers=1, max_workers=1)

VAULT = vault_plugin("""
export function whoami(ctx) {
  return { keyLength: ctx.config.apiKey.length, same: ctx.config.apiKey === "SECRET_HERE", region: ctx.config.region };
}
""").replace("SECRET_HERE", SECRET)

# A second plugin whose validateConfig refuses some values: makes an import half-invalid.
PICKY = """
export const metadata = {
  id: "picky", name: "Picky", version: "1.0.0", apiVersion: "1.0",
  configSchema: { token: { type: "string", secret: true }, level: { type: "integer", default: 1 } },
};
export function validateConfig(config) { return config.level < 5 || { valid: false, message: "level too high" }; }
export function level(ctx) { return ctx.config.level; }
"""

OK = {"keyLength": len(SECRET), "same": True, "region": "us"}


def plugins(plugin_dir) -> None:
    plugin_dir.add("vault.js", VAULT)
    plugin_dir.add("picky.js", PICKY)


def state_dir(tmp_path: Path, shared_state: Path, name: str) -> str:
    """A state directory of its own that shares the session's DENO_DIR (compiled once)."""
    state = tmp_path / name
    state.mkdir()
    (shared_state / "deno").mkdir(exist_ok=True)
    (state / "deno").symlink_to(shared_state / "deno", target_is_directory=True)
    return str(state)


def on_disk(state: str) -> bytes:
    return (Path(state) / "config.json").read_bytes()


@pytest.mark.anyio
async def test_secret_is_encrypted_on_disk_yet_reaches_the_plugin(plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    key_file = Path(state) / "secret.key"
    async with make_host(pool=ONE, state_dir=state) as h:
        assert not key_file.exists()  # made on first use only
        assert await h.set_config("vault", {"apiKey": SECRET, "region": "us"}) == {"apiKey": MASK, "region": "us"}
        assert await h.call("vault", "whoami") == OK
        stored = json.loads(on_disk(state))["vault"]
        assert stored["region"] == "us" and stored["apiKey"].startswith("enc:v1:")
        assert SECRET.encode() not in on_disk(state)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert h.get_config("vault") == {"apiKey": MASK, "region": "us"}
    async with make_host(pool=ONE, state_dir=state) as h:  # the key file opens it again
        assert await h.call("vault", "whoami") == OK
    key_file.chmod(0o644)
    with pytest.raises(SecretsError) as e:
        async with make_host(pool=ONE, state_dir=state):
            pass
    assert "readable by group or others" in str(e.value)
    assert key_file.read_text().strip() not in str(e.value)


@pytest.mark.anyio
async def test_key_from_the_environment_and_a_wrong_key_is_a_secrets_error(
        plugin_dir, make_host, tmp_path, shared_state, monkeypatch):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    security = {"secret_key_env": "TEST_PLUGIN_HOST_KEY"}
    first, other = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", first)
    async with make_host(pool=ONE, state_dir=state, security=security) as h:
        await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        assert await h.call("vault", "whoami") == OK
    assert not (Path(state) / "secret.key").exists() and SECRET.encode() not in on_disk(state)
    before = on_disk(state)

    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", other)
    with pytest.raises(SecretsError) as e:
        async with make_host(pool=ONE, state_dir=state, security=security):
            pass
    assert "does not match" in str(e.value) and "$TEST_PLUGIN_HOST_KEY" in str(e.value)
    assert all(s not in str(e.value) for s in (SECRET, first, other))

    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", "not-a-key-" + SECRET)
    with pytest.raises(SecretsError) as e:
        async with make_host(pool=ONE, state_dir=state, security=security):
            pass
    assert "$TEST_PLUGIN_HOST_KEY" in str(e.value) and SECRET not in str(e.value)
    assert on_disk(state) == before

    # rotation: the new key first encrypts, the old one still decrypts
    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", f"{other},{first}")
    async with make_host(pool=ONE, state_dir=state, security=security) as h:
        assert await h.call("vault", "whoami") == OK
        await h.set_config("vault", {"region": "eu"})
    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", other)
    async with make_host(pool=ONE, state_dir=state, security=security) as h:
        assert (await h.call("vault", "whoami"))["same"] is True


@pytest.mark.anyio
async def test_a_key_variable_of_the_operators_own_that_is_not_set_makes_no_key_file(
        plugin_dir, make_host, tmp_path, shared_state, monkeypatch):
    """``secret_key_env`` names a variable the host's environment lacks (a unit's Environment
    line lost): storing a secret is a SecretsError naming it, and no key file is made. Before:
    a new secret.key was made and the secret sealed with it, a key no other host had, and once
    the variable was set again the host refused to start ('does not match')."""
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    security = {"secret_key_env": "TEST_PLUGIN_HOST_KEY"}
    monkeypatch.delenv("TEST_PLUGIN_HOST_KEY", raising=False)
    async with make_host(pool=ONE, state_dir=state, security=security) as h:
        with pytest.raises(SecretsError) as e:
            await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
    assert "security.secret_key_env names $TEST_PLUGIN_HOST_KEY, which is not set" in str(e.value)
    assert not (Path(state) / "secret.key").exists() and not (Path(state) / "config.json").exists()
    monkeypatch.setenv("TEST_PLUGIN_HOST_KEY", Fernet.generate_key().decode())
    async with make_host(pool=ONE, state_dir=state, security=security) as h:
        await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        assert await h.call("vault", "whoami") == OK


@pytest.mark.anyio
async def test_legacy_plaintext_config_is_encrypted_at_start(plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    legacy = Path(state) / "config.json"
    legacy.write_text(json.dumps({"vault": {"apiKey": SECRET}, "gone": {"x": 1}}))
    legacy.chmod(0o600)
    from_toml = {"vault": PluginSettings(config={"region": "us"})}
    async with make_host(pool=ONE, state_dir=state, plugins=from_toml) as h:
        assert await h.call("vault", "whoami") == OK
        assert SECRET.encode() not in on_disk(state)
        stored = json.loads(on_disk(state))
        # host.toml's values are not copied in; an unknown plugin's entry is left alone
        assert set(stored["vault"]) == {"apiKey"} and stored["gone"] == {"x": 1}
        assert stored["vault"]["apiKey"].startswith("enc:v1:")
    async with make_host(pool=ONE, state_dir=state, plugins=from_toml) as h:
        assert await h.call("vault", "whoami") == OK


@pytest.mark.anyio
async def test_export_holds_no_plaintext_and_moves_to_another_host_with_a_passphrase(
        plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    a, b = state_dir(tmp_path, shared_state, "a"), state_dir(tmp_path, shared_state, "b")
    async with make_host(pool=ONE, state_dir=a) as src, make_host(pool=ONE, state_dir=b) as dst:
        await src.set_config("vault", {"apiKey": SECRET, "region": "us"})
        await src.set_config("picky", {"token": "tok-" + SECRET, "level": 3})
        doc = await src.export_config(passphrase="correct horse")
        by_host_key = await src.export_config("vault")
        for d in (doc, by_host_key):
            assert SECRET not in json.dumps(d) and d["format"] == "plugin-host-config/1"
        assert doc["plugins"]["vault"]["region"] == "us" and doc["plugins"]["vault"]["apiKey"].startswith("enc:v1:")
        assert set(by_host_key["plugins"]) == {"vault"}

        # every refusal is typed, leaks nothing and stores nothing
        refusals = [
            (SecretsError, lambda: dst.import_config(doc, passphrase="wrong horse")),
            (SecretsError, lambda: dst.import_config(doc)),
            (SecretsError, lambda: dst.import_config(by_host_key)),  # b has a key of its own
            (InvalidConfig, lambda: dst.import_config({**doc, "format": "something/9"}, passphrase="correct horse")),
            (PluginNotFound, lambda: dst.import_config(
                {**doc, "plugins": {**doc["plugins"], "nobody": {}}}, passphrase="correct horse")),
            (InvalidConfig, lambda: dst.import_config(  # vault is valid, picky is not: neither is stored
                {**doc, "plugins": {**doc["plugins"], "picky": {"level": 9}}}, passphrase="correct horse")),
        ]
        for error, attempt in refusals:
            with pytest.raises(error) as e:
                await attempt()
            assert SECRET not in str(e.value)
            assert not (Path(b) / "config.json").exists()
            assert dst.plugin("vault").state == "error"  # still without a config

        stored = await dst.import_config(doc, passphrase="correct horse")
        assert stored == {"vault": {"apiKey": MASK, "region": "us"}, "picky": {"token": MASK, "level": 3}}
        assert await dst.call("vault", "whoami") == OK
        assert await dst.call("picky", "level") == 3
        assert SECRET.encode() not in on_disk(b)


def test_cli_exports_to_a_private_file_and_imports_it_elsewhere(plugin_dir, tmp_path, shared_state, monkeypatch):
    plugins(plugin_dir)
    a, b = state_dir(tmp_path, shared_state, "a"), state_dir(tmp_path, shared_state, "b")
    with SyncPluginHost(HostConfig(plugins_dir=str(plugin_dir.root), state_dir=a, pool=ONE)) as h:
        h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        assert SECRET not in json.dumps(h.export_config("vault"))
    monkeypatch.setenv("TEST_EXPORT_PASSPHRASE", "correct horse")
    monkeypatch.setenv("TEST_WRONG_PASSPHRASE", "wrong horse")
    out = tmp_path / "vault-config.json"
    common = ["--plugins", str(plugin_dir.root)]

    done = run_cli("config", "export", "--plugin", "vault", "--passphrase-env", "TEST_EXPORT_PASSPHRASE",
                   "--out", str(out), "--state-dir", a, *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert SECRET not in out.read_text() and json.loads(out.read_text())["plugins"]["vault"]["region"] == "us"
    printed = run_cli("config", "export", "--state-dir", a, *common, cwd=tmp_path)
    assert printed.returncode == 0 and SECRET not in printed.stdout
    assert json.loads(printed.stdout)["plugins"]["vault"]["apiKey"].startswith("enc:v1:")

    wrong = run_cli("config", "import", str(out), "--passphrase-env", "TEST_WRONG_PASSPHRASE",
                    "--state-dir", b, *common, cwd=tmp_path)
    assert wrong.returncode == 1 and "passphrase does not match" in wrong.stderr
    assert SECRET not in wrong.stderr + wrong.stdout and not (Path(b) / "config.json").exists()
    unset = run_cli("config", "import", str(out), "--passphrase-env", "TEST_NO_SUCH_VARIABLE",
                    "--state-dir", b, *common, cwd=tmp_path)
    assert unset.returncode == 2 and "TEST_NO_SUCH_VARIABLE" in unset.stderr

    done = run_cli("config", "import", str(out), "--passphrase-env", "TEST_EXPORT_PASSPHRASE", "--replace",
                   "--state-dir", b, *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"vault": {"apiKey": MASK, "region": "us"}}
    assert SECRET.encode() not in on_disk(b)
    with SyncPluginHost(HostConfig(plugins_dir=str(plugin_dir.root), state_dir=b, pool=ONE)) as h:
        assert h.call("vault", "whoami") == OK


def test_config_export_out_writes_through_what_is_not_a_plain_file_and_names_out_when_it_cannot(
        plugin_dir, tmp_path):
    """--out replaced whatever was at its path with a new regular file: a FIFO a script reads,
    a link to /dev/stdout (as root, /dev/stdout or /dev/full themselves), so nothing reached
    its reader; a directory or a missing parent was a Python traceback (helper-71's finding).
    A FIFO or device is written as it is, a link to a file writes its target, and what cannot
    be written is one line naming --out."""
    plugins(plugin_dir)
    a = str(tmp_path / "state")
    with SyncPluginHost(HostConfig(plugins_dir=str(plugin_dir.root), state_dir=a, pool=ONE)) as h:
        h.set_config("vault", {"apiKey": SECRET, "region": "us"})
    common = ["config", "export", "--plugin", "vault", "--state-dir", a, "--plugins", str(plugin_dir.root)]

    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = run_cli(*common, "--out", str(fifo), cwd=tmp_path)
    reader.join(30)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # before: replaced by a regular file, the reader left waiting
    assert json.loads(got[0])["plugins"]["vault"]["region"] == "us"

    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    done = run_cli(*common, "--out", str(link), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and json.loads(target.read_text())["plugins"]["vault"]["region"] == "us"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600

    log = tmp_path / "app.log"  # `... --out /dev/stdout >> app.log`: appended, app.log kept
    log.write_text("earlier line\n")
    log.chmod(0o644)
    with open(log, "ab") as out:
        done = subprocess.run([sys.executable, "-m", "host", *common, "--out", "/dev/stdout"], stdout=out,
                              stderr=subprocess.PIPE, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kept, _, written = log.read_text().partition("\n")
    assert kept == "earlier line" and json.loads(written)["plugins"]["vault"]["region"] == "us"
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o644  # before: replaced, its lines gone, mode 0600

    for where, why in ((tmp_path, "is a directory"), (tmp_path / "no" / "such" / "x.json", "No such file or directory")):
        done = run_cli(*common, "--out", str(where), cwd=tmp_path)
        assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
        assert f"--out {where}" in done.stderr and why in done.stderr, done.stderr


@pytest.mark.anyio
async def test_a_secret_put_in_an_errors_name_or_type_is_masked(plugin_dir, make_host, caplog):
    from host import PluginError

    plugin_dir.add("vault.js", vault_plugin("""
export function leak(ctx) {
  const e = new Error("no"); e.name = "N" + ctx.config.apiKey; e.code = "T" + ctx.config.apiKey; throw e;
}
"""))
    async with make_host(pool=ONE) as h:
        await h.set_config("vault", {"apiKey": SECRET})
        with pytest.raises(PluginError) as e:
            await h.call("vault", "leak")
    shown = f"{e.value} {e.value.name} {e.value.error_type} {e.value.to_dict()}"
    assert SECRET not in shown and "N" in e.value.name
    assert SECRET not in caplog.text


@pytest.mark.anyio
async def test_a_key_file_that_is_a_directory_is_a_secrets_error_naming_the_setting(
        plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    (Path(state) / "secret.key").mkdir(mode=0o700)
    with pytest.raises(SecretsError) as e:  # before: IsADirectoryError, a traceback
        async with make_host(pool=ONE, state_dir=state) as h:
            await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
    assert "security.secret_key_file" in str(e.value) and "not a regular file" in str(e.value)


@pytest.mark.anyio
async def test_a_key_file_in_a_directory_that_does_not_exist_is_refused_not_made(
        plugin_dir, make_host, tmp_path, shared_state):
    """helper-111: security.secret_key_file = "/srv/typo-dir/sub/secret.key" made that directory and
    the only key in it, where no backup looks (doctor said ok). Outside the state directory the
    directory must exist; nothing is made."""
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    typo = tmp_path / "typo-dir" / "sub" / "secret.key"
    with pytest.raises(SecretsError) as e:
        async with make_host(pool=ONE, state_dir=state, security={"secret_key_file": str(typo)}) as h:
            await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
    assert "security.secret_key_file" in str(e.value) and "does not exist: make it" in str(e.value)
    assert not (tmp_path / "typo-dir").exists()


@pytest.mark.anyio
async def test_a_key_file_mounted_as_a_kubernetes_secret_is_followed_through_its_links(
        plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    mount = tmp_path / "secret-volume"  # as the kubelet writes one: key -> ..data/key, ..data -> ..2024_...
    (mount / "..2024_01_01_00_00_00.1").mkdir(parents=True, mode=0o755)
    real = mount / "..2024_01_01_00_00_00.1" / "key"
    real.write_bytes(Fernet.generate_key() + b"\n")
    (mount / "..data").symlink_to("..2024_01_01_00_00_00.1")
    (mount / "key").symlink_to("..data/key")
    security = {"secret_key_file": str(mount / "key")}
    real.chmod(0o644)  # the volume's defaultMode: every local user could read it
    with pytest.raises(SecretsError) as e:
        async with make_host(pool=ONE, state_dir=state, security=security) as h:
            await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
    assert "readable by group or others" in str(e.value) and "defaultMode" in str(e.value)
    real.chmod(0o400)
    async with make_host(pool=ONE, state_dir=state, security=security) as h:  # before: "Too many levels of symbolic links"
        await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        assert await h.call("vault", "whoami") == OK
    mount.chmod(0o777)  # another user could point the links elsewhere: not followed
    with pytest.raises(SecretsError, match="on the way to the key"):
        async with make_host(pool=ONE, state_dir=state, security=security) as h:
            await h.call("vault", "whoami")
    mount.chmod(0o755)


@pytest.mark.anyio
async def test_the_same_key_put_back_is_read_again_and_another_key_is_still_refused(
        plugin_dir, make_host, tmp_path, shared_state):
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    key_file = Path(state) / "secret.key"
    async with make_host(pool=ONE, state_dir=state) as h:
        await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        key = key_file.read_bytes()
        key_file.unlink()
        with pytest.raises(SecretsError, match="removed while the host runs"):
            await h.set_config("vault", {"apiKey": SECRET + "2"})
        key_file.write_bytes(key)  # put back from the backup: a new inode
        key_file.chmod(0o600)
        await h.set_config("vault", {"apiKey": SECRET})  # before: refused until a restart
        assert await h.call("vault", "whoami") == OK
        key_file.write_bytes(Fernet.generate_key() + b"\n")  # another key: the stored secrets' is gone
        with pytest.raises(SecretsError, match="no longer holds the key"):
            await h.set_config("vault", {"apiKey": SECRET + "3"})
        key_file.write_bytes(Fernet.generate_key() + b"," + key)  # a rotation listing the old key after the new
        await h.set_config("vault", {"apiKey": SECRET})
        assert await h.call("vault", "whoami") == OK


@pytest.mark.anyio
async def test_a_key_file_in_a_directory_others_may_change_is_refused(plugin_dir, make_host, tmp_path, shared_state):
    # Before: only the links on the way were checked, so a key under a directory everyone may
    # write in (not sticky) was used: another user could swap the directory for one holding a key
    # of theirs, and the host would seal new secrets with it.
    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    shared = tmp_path / "shared"
    (shared / "keys").mkdir(parents=True, mode=0o700)
    shared.chmod(0o777)
    security = {"secret_key_file": str(shared / "keys" / "secret.key")}
    try:
        with pytest.raises(SecretsError) as e:
            async with make_host(pool=ONE, state_dir=state, security=security) as h:
                await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        assert f"the directory {shared} on the way to the key" in e.value.message, e.value.message
        assert not (shared / "keys" / "secret.key").exists()  # none was made there either
        shared.chmod(0o1777)  # sticky, as /tmp: others cannot rename what is not theirs
        async with make_host(pool=ONE, state_dir=state, security=security) as h:
            await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
            assert await h.call("vault", "whoami") == OK
    finally:
        shared.chmod(0o755)


@pytest.mark.anyio
@pytest.mark.timeout(60)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp serves on asyncio
@pytest.mark.parametrize("broken", [b"", b"not-a-key\n"], ids=["empty", "garbage"])
async def test_a_key_file_broken_while_serving_is_the_servers_problem_naming_the_file(
        plugin_dir, make_host, tmp_path, shared_state, broken, anyio_backend):
    # Before: storing a secret then answered InvalidConfig (HTTP 400, the client's fault) for
    # a key file the operator had emptied or damaged.
    from support.servers import served

    plugins(plugin_dir)
    state = state_dir(tmp_path, shared_state, "state")
    key_file = Path(state) / "secret.key"
    async with make_host(pool=ONE, state_dir=state) as h:
        await h.set_config("vault", {"apiKey": SECRET, "region": "us"})
        key_file.write_bytes(broken)
        with pytest.raises(SecretsError) as e:
            await h.set_config("vault", {"apiKey": SECRET + "2"})
        assert str(key_file) in e.value.message and "security.secret_key_file" in e.value.message
        async with served(h) as (_, session), \
                session.put("/api/plugins/vault/config", json={"apiKey": SECRET + "3"}) as r:
            status, body = r.status, await r.json()
        assert status == 503 and body["error"]["type"] == "SecretsError", body
        assert str(key_file) in body["error"]["message"] and SECRET not in str(body)
