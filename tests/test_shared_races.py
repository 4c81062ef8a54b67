"""Two hosts sharing one ``[state] database`` (the real postgres of tests/support/postgres.py)
that write the same row from copies of it that are not current: a config field set through one
host is kept when the other, which has not read the table since, sets another field of the same
plugin's config (``set_config`` merges into what the table holds, not into its own copy)."""

from __future__ import annotations

import json

import psycopg
import pytest
from cryptography.fernet import Fernet
from support.plugins import fresh_state
from support.servers import two_hosts

from host import PoolConfig, SecretsError
from host.state_config import StateConfig

pytestmark = pytest.mark.anyio

SECRET = "sk-race-0a1b2c3d4e"
TUNED = """
export const metadata = {
  id: "tuned", name: "Tuned", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true }, level: { type: "integer", default: 1 },
                  mode: { type: "string", default: "slow" } },
};
export function level(ctx) { return ctx.config.level; }
export function mode(ctx) { return ctx.config.mode; }
export function keyIs(value, ctx) { return ctx.config.apiKey === value; }
"""
ONE = PoolConfig(min_workers=1, max_workers=1)


@pytest.fixture
def tuned(plugin_dir, monkeypatch):
    plugin_dir.add("tuned.js", TUNED)
    monkeypatch.setenv("PLUGIN_HOST_SECRET_KEY", Fernet.generate_key().decode())
    return plugin_dir


def row(url: str, key: str) -> dict:
    with psycopg.connect(url) as db:
        (text,) = db.execute("SELECT value FROM plugin_config WHERE key = %s", [key]).fetchone()
    return json.loads(text)


async def test_fields_set_through_two_hosts_on_stale_copies_are_both_kept(
        make_host, tuned, tmp_path, shared_state, postgres_url):
    async with two_hosts(make_host, tmp_path, shared_state, state=StateConfig(database=postgres_url),
                         pool=ONE) as (a, b):
        await a.set_config("tuned", {"level": 4})
        await b.set_config("tuned", {"apiKey": SECRET})  # b has not read the table since a's write
        await a.set_config("tuned", {"mode": "fast"})  # nor has a since b's
        stored = row(postgres_url, "tuned")
        assert stored["level"] == 4 and stored["mode"] == "fast" and stored["apiKey"].startswith("enc:v1:")
        await a.rescan()
        await b.rescan()
        for h in (a, b):
            assert h.get_config("tuned") == {"level": 4, "mode": "fast", "apiKey": "********"}
            assert (await h.call("tuned", "level"), await h.call("tuned", "mode")) == (4, "fast")
            assert await h.call("tuned", "keyIs", SECRET) is True


async def test_two_processes_on_one_state_dir_keep_each_others_fields(make_host, tuned, state_dir):
    """The same without a database: two hosts on one config.json (``serve --processes 2``)."""
    async with make_host(state_dir=str(state_dir), pool=ONE) as a, make_host(state_dir=str(state_dir), pool=ONE) as b:
        await a.set_config("tuned", {"level": 4})
        await b.set_config("tuned", {"apiKey": SECRET})
        await a.set_config("tuned", {"mode": "fast"})
        stored = json.loads((state_dir / "config.json").read_text())["tuned"]
        assert stored["level"] == 4 and stored["mode"] == "fast" and stored["apiKey"].startswith("enc:v1:")
        await b.rescan()
        assert b.get_config("tuned") == {"level": 4, "mode": "fast", "apiKey": "********"}
        assert await b.call("tuned", "mode") == "fast" and await b.call("tuned", "keyIs", SECRET) is True


async def test_hosts_with_different_keys_never_seal_secrets_with_both(
        make_host, tuned, tmp_path, shared_state, postgres_url, monkeypatch):
    """Two machines that each made a key file of their own, on a table that held no secret when
    they started: the first secret stored decides the key; the other host's secret is refused
    (SecretsError naming its key file) and nothing of it is written, so the table never holds
    secrets that only one of them can open; that host does not start again, nor does one
    without a key file make one, even once no secret is left in the table."""
    monkeypatch.delenv("PLUGIN_HOST_SECRET_KEY")
    tuned.add("other.js", TUNED.replace('id: "tuned", name: "Tuned"', 'id: "other", name: "Other"'))
    state = StateConfig(database=postgres_url)
    async with two_hosts(make_host, tmp_path, shared_state, state=state, pool=ONE) as (a, b):
        await a.set_config("tuned", {"apiKey": SECRET})
        with pytest.raises(SecretsError, match=r"plugin_secret_check.*secret key \(.*/b/state/secret\.key\) "
                                               r"does not match") as e:
            await b.set_config("other", {"apiKey": "sk-b-5e6f7a8b", "level": 3})
        assert "sk-b-5e6f7a8b" not in e.value.message
        with psycopg.connect(postgres_url) as db:
            assert db.execute("SELECT key FROM plugin_config WHERE key <> '#generation' ORDER BY key").fetchall() == [("tuned",)]
        assert await b.call("other", "level") == 1  # b serves on, as before
        await b.set_config("other", {"level": 3})  # and stores what is not secret
        assert await a.call("tuned", "keyIs", SECRET) is True
    with pytest.raises(SecretsError, match=r"secret key \(.*/b/state/secret\.key\) does not match"):
        async with make_host(state_dir=str(tmp_path / "b" / "state"), state=state, pool=ONE):
            pass
    with psycopg.connect(postgres_url) as db:
        db.execute("DELETE FROM plugin_config")
    c_dir = fresh_state(tmp_path / "c", shared_state)
    with pytest.raises(SecretsError, match=r"secret key file .* is missing"):
        async with make_host(state_dir=str(c_dir), state=state, pool=ONE):
            pass
    assert not (c_dir / "secret.key").exists()
