"""The seed's db examples over ``POST /execute`` against the real server (``python -m host serve``
in a subprocess) and a real PostgreSQL named by ``DATABASE_URL``, as the seed sets it up: a
select, an insert with ``returning()``, a write refused without ``db:write``, and neither the
server's log nor any answer carrying the URL's password."""

from __future__ import annotations

import psycopg
import pytest
from support.servers import serve_process

EXECUTE = ("--enable-execute", "--insecure-no-token")


@pytest.mark.timeout(120)
def test_seed_db_examples_on_postgresql_over_http(tmp_path, shared_state, postgres_url, postgres_server):
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE)")
        db.execute("INSERT INTO users (name, email) VALUES ('Alice', 'a@x'), ('Bob', 'b@x')")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "host.toml").write_text("[execute]\ndb_writes = true\n")
    with serve_process(tmp_path, "--plugins", "plugins", "--state-dir", str(shared_state), "--config", "host.toml",
                       *EXECUTE, env={"DATABASE_URL": postgres_url}) as srv:
        def execute(body: dict) -> dict:
            status, out = srv.request("POST", "/execute", body)
            assert status == 200, out
            return out

        out = execute({"code": "export default async function() { const users = await db.users.select().limit(10); "
                               "return { total: users.length, users: users.map(u => ({ id: u.id, name: u.name })) }; }",
                       "tools": ["db"]})
        assert out["result"] == {"total": 2, "users": [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]}, out

        out = execute({"code": "export default async (userData) => { const result = await db.users.insert({ name: "
                               "userData.name, email: userData.email }).returning(); return result[0]; }",
                       "input": {"name": "Carol", "email": "c@x"}, "tools": ["db:write"]})
        assert out["result"] == {"id": 3, "name": "Carol", "email": "c@x"}, out

        out = execute({"code": "export default async ({ id, name }) => { const { eq } = db.operators; const updated = "
                               "await db.users.update({ name }).where(eq(db.users.id, id)).returning(); return updated[0]; }",
                       "input": {"id": 1, "name": "Alicia"}, "tools": ["db"]})
        assert out["ok"] is False and out["logs"][-1]["name"] == "GrantRefused", out

        out = execute({"code": "export default async () => { const { eq } = db.operators; "
                               "return await db.users.insert({ name: 'Dup', email: 'a@x' }); }", "tools": ["db:write"]})
        assert out["logs"][-1]["name"] == "DbError" and "unique" in out["logs"][-1]["message"], out
        assert postgres_server.password not in str(out)
        log = srv.log()
    with psycopg.connect(postgres_url) as db:
        assert db.execute("SELECT name FROM users ORDER BY id").fetchall() == [("Alice",), ("Bob",), ("Carol",)]
    assert postgres_server.password not in log
