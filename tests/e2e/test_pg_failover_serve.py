"""``serve`` with ``[state] database`` on a PostgreSQL that fails over to a read-only standby, or
restarts: real postgres (one of this module's own: restarting it would end other tests' sessions),
real ``serve`` subprocesses."""

from __future__ import annotations

import os
import re
import signal

import pytest
from support.plugins import fresh_state
from support.postgres import set_read_only
from support.servers import serve_process

pytestmark = pytest.mark.timeout(180)

KEEPER = """
export async function put(key, value, ctx) { await ctx.storage.set(key, value); return true; }
export async function get(key, ctx) { return (await ctx.storage.get(key)) ?? null; }
export const metadata = { id: "keeper", name: "Keeper", version: "1.0.0", apiVersion: "1.0", configSchema: { region: { type: "string" } } };
"""


@pytest.fixture
def url(own_postgres_url: str) -> str:
    return own_postgres_url


def test_serve_started_on_a_read_only_database_serves_reads_and_refuses_writes_saying_why(
        tmp_path, shared_state, plugin_dir, own_postgres, url):
    # Before: serve (or a serve process its parent started again) could not start while the
    # database was read-only: creating the tables came first, and the server refused it.
    plugin_dir.add("keeper.js", KEEPER)
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{url}"\n')
    common = ("--plugins", str(plugin_dir.root), "--config", "host.toml", "--insecure-no-token",
              "--state-dir", str(fresh_state(tmp_path / "s", shared_state)))
    with serve_process(tmp_path, *common) as primary:
        primary.wait_running("keeper")
        status, out = primary.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", "v1"]})
        assert status == 200, (out, primary.log()[-3000:])
    set_read_only(own_postgres, url, True)
    with serve_process(tmp_path, *common) as standby:
        standby.wait_running("keeper")
        status, out = standby.request("POST", "/api/plugins/keeper/call/get", {"args": ["k"]})
        assert (status, out.get("result")) == (200, "v1"), (out, standby.log()[-3000:])
        status, out = standby.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", "v2"]})
        assert status >= 400 and "read-only" in str(out), out
        status, out = standby.request("PUT", "/api/plugins/keeper/config", {"region": "eu"})
        assert status == 503 and "read-only" in str(out), out
        set_read_only(own_postgres, url, False)  # promoted: writes go through again, no restart
        status, out = standby.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", "v2"]})
        assert status == 200, (out, standby.log()[-3000:])
        logs = standby.log()
    assert own_postgres.password not in logs and "Traceback" not in logs


def test_serve_processes_answer_every_call_after_a_database_restart(tmp_path, shared_state, plugin_dir,
                                                                     own_postgres, url):
    # Before: the first statement of each kind of state in each serve process after the restart
    # failed on the connection the server had ended (503s and failed storage calls on a
    # database that was up again).
    plugin_dir.add("keeper.js", KEEPER)
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{url}"\n')
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--config", "host.toml", "--insecure-no-token",
                       "--state-dir", str(fresh_state(tmp_path / "s", shared_state)), "--processes", "2") as srv:
        srv.wait_running("keeper")
        for n in range(6):  # each process has used its connections
            status, out = srv.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", f"v{n}"]})
            assert status == 200, (out, srv.log()[-3000:])
        own_postgres.restart()
        answers = [srv.request("POST", "/api/plugins/keeper/call/get", {"args": ["k"]}) for _ in range(8)]
        assert all(a == (200, {"ok": True, "result": "v5"}) for a in answers), (answers, srv.log()[-3000:])
        status, out = srv.request("PUT", "/api/plugins/keeper/config", {"region": "eu"})
        assert status == 200, out
        logs = srv.log()
    assert own_postgres.password not in logs and "Traceback" not in logs


def test_a_serve_process_that_cannot_start_while_the_database_is_down_never_stops_its_siblings(
        tmp_path, shared_state, plugin_dir, own_postgres, url):
    # Before: a serve process killed (the OOM killer) while the database was down failed each
    # start on it, and after 5 such exits within 60 s the parent stopped every process, the
    # one still serving too: the whole service down until someone restarted it by hand.
    plugin_dir.add("keeper.js", KEEPER)
    (tmp_path / "host.toml").write_text(f'[state]\ndatabase = "{url}"\n[server]\nprocess_timeout = 2\n')
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--config", "host.toml", "--insecure-no-token",
                       "--state-dir", str(fresh_state(tmp_path / "s", shared_state)), "--processes", "2") as srv:
        srv.poll(lambda: True if len(re.findall(r"serve process \d \(pid \d+\) is up", srv.log())) == 2 else None,
                 "both serve processes up")
        status, out = srv.request("POST", "/api/plugins/keeper/call/put", {"args": ["k", "v"]})
        assert status == 200, out
        victim = int(re.findall(r"serve process 1 started \(pid (\d+)\)", srv.log())[-1])
        own_postgres.stop()
        try:
            os.kill(victim, signal.SIGKILL)
            srv.poll(lambda: True if len(re.findall(r"serve process 1 exited 75", srv.log())) >= 5 else None,
                     "five failed starts of process 1", timeout=90)
            status, out = srv.request("GET", "/healthz/live")
            assert status == 200, out  # process 0 serves on
            status, out = srv.request("POST", "/api/plugins/keeper/call/get", {"args": ["k"]})
            assert status >= 500 and "cannot connect" in str(out), out  # typed, at once
        finally:
            own_postgres.start()
        srv.poll(lambda: True if len(re.findall(r"serve process 1 \(pid \d+\) is up", srv.log())) == 2 else None,
                 "process 1 serving again", timeout=60)
        answers = [srv.request("POST", "/api/plugins/keeper/call/get", {"args": ["k"]}) for _ in range(6)]
        assert all(a == (200, {"ok": True, "result": "v"}) for a in answers), answers
        assert "stopping all" not in srv.log()
