"""The plugin config and secret store in PostgreSQL (``[state] database``), shared by hosts with
their own state directories and one secret key, on the real postgres of tests/support/postgres.py:
a config stored through one host is what the other's workers get after its rescan, a reset
likewise; two hosts writing at once keep both; secrets are sealed in the table, never plain; a
host with another key, or none, does not start; plaintext secrets already in the table are
sealed at start; a database that is gone fails the start, or a config set, with a StateError
without the password. Also two ``serve`` processes over HTTP."""

from __future__ import annotations

import json
import time

import anyio
import psycopg
import pytest
from cryptography.fernet import Fernet
from support.plugins import fresh_state
from support.processes import free_port, wait_for
from support.servers import two_hosts, two_serve_processes

from host import PluginUnavailable, PoolConfig, SecretsError, StateError
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

SECRET = "sk-shared-9f8e7d6c5b4a"
TUNED = """
export const metadata = {
  id: "tuned", name: "Tuned", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true }, level: { type: "integer", default: 1 } },
};
export function level(ctx) { return ctx.config.level; }
export function keyIs(value, ctx) { return ctx.config.apiKey === value; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.fixture
def tuned(plugin_dir, monkeypatch):
    """The plugin directory with ``tuned`` (its config has a secret), and one secret key for
    every host the test starts ($PLUGIN_HOST_SECRET_KEY)."""
    plugin_dir.add("tuned.js", TUNED)
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", Fernet.generate_key().decode())
    return plugin_dir


def stored(url: str, key: str) -> tuple[str, dict]:
    with psycopg.connect(url) as db:
        (text,) = db.execute("SELECT value FROM plugin_config WHERE key = %s", [key]).fetchone()
    return text, json.loads(text)


async def test_a_config_stored_through_one_host_is_served_by_the_other(
        make_host, tuned, tmp_path, shared_state, postgres_url):
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(database=postgres_url),
                         pool=ONE) as (a, b):
        assert await b.call("tuned", "level") == 1
        masked = await a.set_config("tuned", {"level": 4, "apiKey": SECRET})
        assert masked == {"level": 4, "apiKey": "********"}
        await b.rescan()  # the watcher's poll: b sees a's row changed and restarts the plugin
        assert await b.call("tuned", "level") == 4
        assert await b.call("tuned", "keyIs", SECRET) is True
        text, row = stored(postgres_url, "tuned")
        assert row["level"] == 4 and row["apiKey"].startswith("enc:v1:") and SECRET not in text
        await b.rescan()  # nothing changed since: the plugin keeps serving the same config
        assert await b.call("tuned", "level") == 4
        await b.reset_config("tuned")
        await a.rescan()
        assert await a.call("tuned", "level") == 1
    assert not (tmp_path / "a" / "state" / "config.json").exists()


async def test_two_hosts_setting_configs_at_once_keep_both(make_host, tuned, tmp_path, shared_state, postgres_url):
    tuned.add("other.js", TUNED.replace('id: "tuned", name: "Tuned"', 'id: "other", name: "Other"'))
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(database=postgres_url),
                         pool=ONE) as (a, b):
        async with anyio.create_task_group() as tg:
            for n in range(2, 6):  # interleaved writes of two plugins' configs through two hosts
                tg.start_soon(a.set_config, "tuned", {"level": n})
                tg.start_soon(b.set_config, "other", {"level": 10 * n})
        rows = {k: stored(postgres_url, k)[1] for k in ("tuned", "other")}
        await a.rescan()
        await b.rescan()
        for h in (a, b):  # each host serves what the table holds, for both plugins
            assert (await h.call("tuned", "level"), await h.call("other", "level")) == (
                rows["tuned"]["level"], rows["other"]["level"])
    assert rows["tuned"]["level"] in range(2, 6) and rows["other"]["level"] in range(20, 60, 10)


async def test_a_host_with_another_key_does_not_start(make_host, tuned, postgres_url, monkeypatch):
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE) as a:
        await a.set_config("tuned", {"apiKey": SECRET})
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", Fernet.generate_key().decode())
    with pytest.raises(SecretsError):
        async with make_host(state=state, pool=ONE):
            pass


async def test_a_host_without_the_key_does_not_start_nor_make_a_new_one(
        make_host, tuned, tmp_path, shared_state, postgres_url, monkeypatch):
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE) as a:
        await a.set_config("tuned", {"apiKey": SECRET})
    monkeypatch.delenv("PLUGIN_HOST_SECRET_KEY")
    b_dir = fresh_state(tmp_path / "b", shared_state)
    with pytest.raises(SecretsError, match=r"secret key file .* is missing.*copy it from a host sharing"):
        async with make_host(state_dir=str(b_dir), state=state, pool=ONE):
            pass
    assert not (b_dir / "secret.key").exists()


async def test_plaintext_secrets_in_the_table_are_sealed_at_start(make_host, tuned, postgres_url):
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE):
        pass  # creates the table
    with psycopg.connect(postgres_url) as db:
        db.execute("INSERT INTO plugin_config (key, value, version) VALUES "
                   "('tuned', %s, nextval('plugin_config_version'))", [json.dumps({"apiKey": SECRET})])
    async with make_host(state=state, pool=ONE) as h:
        assert await h.call("tuned", "keyIs", SECRET) is True
    text, row = stored(postgres_url, "tuned")
    assert row["apiKey"].startswith("enc:v1:") and SECRET not in text


async def test_an_unreachable_state_database_fails_the_start_with_a_state_error(make_host, tuned, caplog):
    port = free_port()  # nothing listens there
    state = StateConfig(database=f"postgresql://app:t0psecret@127.0.0.1:{port}/app")
    with pytest.raises(StateError) as e:
        async with make_host(state=state, pool=ONE):
            pass
    assert f"127.0.0.1:{port}" in e.value.message and "t0psecret" not in e.value.message
    assert "t0psecret" not in caplog.text


def served(srv, function: str, *args, until, deadline: float = 30.0):
    """What ``function`` returns on ``srv`` once it is ``until`` (polled: the other host's
    watcher picks the change up within its ``reload.interval``)."""
    end = time.monotonic() + deadline
    while True:
        status, out = srv.request("POST", f"/api/plugins/tuned/call/{function}", {"args": list(args)})
        if (status == 200 and out["result"] == until) or time.monotonic() > end:
            return status, out
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_two_serve_processes_share_the_config_store(tmp_path, shared_state, postgres_url, postgres_server, tuned):
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{postgres_url}"\n[reload]\ninterval = 0.2\n')
    env = {"PLUGIN_HOST_SECRET_KEY": Fernet.generate_key().decode()}
    with two_serve_processes(tmp_path, shared_state, tuned.root, running="tuned", env=env) as (one, two):
        status, out = one.request("PUT", "/api/plugins/tuned/config", {"level": 7, "apiKey": SECRET})
        assert status == 200, (out, one.log()[-3000:])
        status, out = served(two, "level", until=7)
        assert (status, out.get("result")) == (200, 7), (out, two.log()[-3000:])
        assert two.request("POST", "/api/plugins/tuned/call/keyIs", {"args": [SECRET]})[1]["result"] is True
        text, row = stored(postgres_url, "tuned")
        assert row["apiKey"].startswith("enc:v1:") and SECRET not in text
        status, _ = two.request("DELETE", "/api/plugins/tuned/config")
        assert status == 200
        assert served(one, "level", until=1)[1]["result"] == 1
        logs = one.log() + two.log()
    assert postgres_server.password not in logs and SECRET not in logs


async def test_a_config_set_with_the_database_gone_is_a_state_error_and_the_plugin_serves_on(
        make_host, tuned, postgres_url, postgres_server, caplog):
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE) as h:
        with postgres_server.admin() as admin:
            admin.execute(f"DROP DATABASE {postgres_url.rsplit('/', 1)[1]} WITH (FORCE)")
        with pytest.raises(StateError) as e:
            await h.set_config("tuned", {"level": 2, "apiKey": SECRET})
        with pytest.raises(StateError):
            await h.rescan()  # said to whoever asked (the watcher logs it and polls again later)
        assert await h.call("tuned", "level") == 1  # the plugin keeps serving what it had
    assert f"127.0.0.1:{postgres_server.port}" in e.value.message
    assert postgres_server.password not in e.value.message + caplog.text and SECRET not in caplog.text


def put_row(url: str, key: str, text: str) -> None:
    """A row written by another hand than a host's (psql, a migration gone wrong)."""
    with psycopg.connect(url) as db:
        db.execute("INSERT INTO plugin_config (key, value, version) VALUES (%s, %s, nextval('plugin_config_version')) "
                   "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version", [key, text])


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000])
async def test_a_damaged_row_stays_with_its_plugin_and_the_others_serve(make_host, tuned, tmp_path, shared_state,
                                                                        postgres_url, text):
    """One row of plugin_config that is not a JSON object (a hand edit). Before: every host
    sharing the table failed its start, and a running one every rescan, for one plugin's row."""
    tuned.add("other.js", TUNED.replace('id: "tuned", name: "Tuned"', 'id: "other", name: "Other"'))
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE, state_dir=str(fresh_state(tmp_path / "a", shared_state))) as a:
        await a.set_config("other", {"level": 3})
        put_row(postgres_url, "tuned", text)
        await a.rescan()  # a running host: the others serve on, tuned with the config it had
        assert await a.call("other", "level") == 3
        assert await a.call("tuned", "level") == 1
    async with make_host(state=state, pool=ONE, state_dir=str(fresh_state(tmp_path / "b", shared_state))) as b:
        assert await b.call("other", "level") == 3  # a host starting: likewise
        info = b.plugin("tuned")
        assert info.state == "error"
        assert "table plugin_config: the row for 'tuned' is not a JSON object; fix or delete that row" in info.error
        with pytest.raises(PluginUnavailable):
            await b.call("tuned", "level")
        assert "config reset tuned" in info.error
        exported = await b.export_config()  # a backup of the others: the damaged row has nothing to keep
        assert set(exported["plugins"]) == {"other"}
        await b.reset_config("tuned")  # what the error says, without psql: the row goes
        await wait_for(lambda: b.plugin("tuned").state == "running", timeout=10)
        assert await b.call("tuned", "level") == 1


async def test_a_damaged_switches_row_fails_the_start_typed_naming_its_table(make_host, tuned, postgres_url):
    """The switches are read whole (a switch decides whether a plugin may run at all): a damaged
    row there is a StateError at start, as before, never a traceback."""
    state = StateConfig(database=postgres_url)
    async with make_host(state=state, pool=ONE) as h:
        await h.disable("tuned")
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE plugin_switches SET value = '{not json' WHERE key = 'tuned'")
    with pytest.raises(StateError, match=r"table plugin_switches: the row for 'tuned' is not a JSON object"):
        async with make_host(state=state, pool=ONE):
            pass


async def test_a_host_is_never_ready_before_it_has_found_its_plugins(tuned, state_dir, postgres_url):
    """With the state in a database the start reads it before the plugin directories: in that
    moment the host ran with no plugin at all, and /healthz/ready said 200 (a load balancer sent
    calls that got 404 PluginNotFound). Ready now needs the first scan done."""
    from host import HostConfig, PluginHost

    config = HostConfig(plugins_dir=str(tuned.root), state_dir=str(state_dir), pool=ONE,
                        state=StateConfig(database=postgres_url), load="background")
    host = PluginHost(config)
    readiness: list[tuple[bool, dict]] = []

    async def watch() -> None:
        while True:
            readiness.append((host.ready, dict(host.states())))
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        async with host:
            assert await host.settled(20) and host.ready
            readiness.append((host.ready, dict(host.states())))
        tg.cancel_scope.cancel()
    assert any(ready for ready, _ in readiness)
    assert all(states == {"tuned": "running"} for ready, states in readiness if ready), readiness[:5]


NEEDS_KEY = TUNED.replace('apiKey: { type: "string", secret: true }', 'apiKey: { type: "string", secret: true, required: true }')


async def test_a_plugin_waiting_for_its_config_starts_on_every_host_once_one_stores_it(
        make_host, plugin_dir, tmp_path, shared_state, postgres_url, monkeypatch):
    """A required field missing puts the plugin in error on both hosts; the config stored
    through one starts it there at once and on the other at its next poll (before: the other
    host left it in error until its own restart, though it had read the new row)."""
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", Fernet.generate_key().decode())
    plugin_dir.add("tuned.js", NEEDS_KEY)
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(database=postgres_url),
                         pool=ONE) as (a, b):
        assert (a.plugin("tuned").state, b.plugin("tuned").state) == ("error", "error")
        assert "apiKey" in (b.plugin("tuned").error or "")
        await a.set_config("tuned", {"apiKey": SECRET, "level": 3})
        assert await a.call("tuned", "level") == 3
        await b.rescan()
        assert b.plugin("tuned").state == "running"
        assert await b.call("tuned", "keyIs", SECRET) is True
        assert await b.call("tuned", "level") == 3


async def test_an_import_merges_into_what_the_table_holds_not_a_stale_copy(
        make_host, tuned, tmp_path, shared_state, postgres_url):
    """An import (not ``replace``) through a host that has not polled since another host set
    a field keeps that field (before: the import merged into the stale copy and wrote over it)."""
    tuned.add("other.js", TUNED.replace('id: "tuned", name: "Tuned"', 'id: "other", name: "Other"'))
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(database=postgres_url),
                         pool=ONE) as (a, b):
        await a.set_config("tuned", {"apiKey": SECRET})
        await a.set_config("other", {"level": 2})
        doc = await a.export_config(passphrase="correct horse")
        await b.rescan()
        await b.set_config("tuned", {"level": 7})  # a has not polled since
        await b.set_config("other", {"level": 9})
        doc["plugins"]["other"] = {"apiKey": doc["plugins"]["tuned"]["apiKey"]}
        doc["plugins"]["tuned"].pop("level", None)
        await a.import_config(doc, passphrase="correct horse")
        assert stored(postgres_url, "tuned")[1]["level"] == 7
        assert stored(postgres_url, "other")[1]["level"] == 9
        assert await a.call("tuned", "level") == 7 and await a.call("other", "keyIs", SECRET) is True
        await b.rescan()
        assert await b.call("other", "level") == 9 and await b.call("other", "keyIs", SECRET) is True


async def test_an_import_merges_into_what_the_config_file_holds(make_host, tuned, state_dir):
    """As above, two hosts on one state directory (``serve --processes``): the file's entry."""
    async with make_host(state_dir=str(state_dir), pool=ONE) as a, make_host(state_dir=str(state_dir), pool=ONE) as b:
        await a.set_config("tuned", {"apiKey": SECRET})
        doc = await a.export_config(passphrase="correct horse")
        await b.set_config("tuned", {"level": 7})  # a has not read the file since
        await a.import_config(doc, passphrase="correct horse")
        assert await a.call("tuned", "level") == 7 and await a.call("tuned", "keyIs", SECRET) is True


async def test_a_config_another_host_stored_reaches_this_ones_workers_after_a_write_of_its_own(
        make_host, tuned, tmp_path, shared_state):
    """Two hosts on one state directory (file state): a config host A stored reached host B's
    workers at B's next rescan, unless B wrote any config first: its write read the file, took
    A's change in with the file's stamp, and B's rescan then saw nothing changed, its workers on
    the old config for good (helper-96). The change is now kept until the rescan says it."""
    from host.config import ReloadConfig

    plugin_dir = tuned
    plugin_dir.add("other.js", TUNED.replace('id: "tuned"', 'id: "other"'))
    state = str(fresh_state(tmp_path, shared_state))
    slow = ReloadConfig(enabled=True, interval=0.5)
    async with make_host(state_dir=state, pool=ONE, reload=slow) as a, \
            make_host(state_dir=state, pool=ONE, reload=slow) as b:
        assert await b.call("tuned", "level") == 1
        await a.set_config("tuned", {"apiKey": SECRET, "level": 7})
        await b.set_config("other", {"apiKey": SECRET, "level": 2})  # before b's rescan looks at the file
        with anyio.fail_after(10):  # b's rescans, every 0.5 s: before, never
            while await b.call("tuned", "level") != 7:
                await anyio.sleep(0.05)
        assert await b.call("other", "level") == 2
