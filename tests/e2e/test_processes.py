"""``serve --processes N`` (issue 20): N host processes accept on one socket, share the state
directory (a config set through the CLI is served by all), give one /metrics view, a child that
dies is started again, and SIGTERM to the parent drains and stops them all, leaving no worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.plugins import fresh_state
from support.processes import deno_children, descendants, process_gone
from support.servers import run_cli, serve_process

pytestmark = pytest.mark.timeout(120)

WHO = """
export const metadata = { id: "who", name: "Who", version: "1.0.0", apiVersion: "1.0",
  configSchema: { tag: { type: "string", default: "first" } } };
export function who(ctx) { return [Deno.ppid, ctx.config.tag]; }
"""


def _serving_pids(srv, want: int, tag: str = "first") -> set[int]:
    """Call until ``want`` distinct host processes have answered with ``tag`` (each request on a
    connection of its own, so the kernel hands them to whichever process accepts first)."""
    seen: set[int] = set()

    def enough() -> set[int] | None:
        status, body = srv.request("POST", "/api/plugins/who/call/who", {})
        if status == 200 and body["result"][1] == tag:
            seen.add(body["result"][0])
        return seen if len(seen) >= want else None

    return srv.poll(enough, f"{want} processes answering with tag {tag!r}", timeout=60)


def _children(srv) -> dict[int, int]:
    """Serve process index -> pid, as the parent logged them (the latest start of each)."""
    return {int(k): int(pid) for k, pid in re.findall(r"serve process (\d+) started \(pid (\d+)\)", srv.log())}


def test_two_processes_share_the_socket_the_state_and_one_metrics_view(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("who.js", WHO)
    state = fresh_state(tmp_path, shared_state)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(state)]
    with serve_process(tmp_path, *common, "--processes", "2") as srv:
        children = _children(srv)
        assert sorted(children) == [0, 1]
        assert _serving_pids(srv, 2) == set(children.values())  # both accept from the one socket

        status, text = srv.request("GET", "/metrics")
        assert status == 200
        for k in (0, 1):  # one view: each process's workers, labelled
            assert re.search(rf'plugin_host_workers\{{plugin="who",version="1.0.0",process="{k}"\}} 1\.0', text)

        # the CLI's change goes through the control socket (process 0) and into the shared
        # state; the other process picks it up from there
        out = run_cli("config", "set", "who", "tag=second", *common, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert _serving_pids(srv, 2, "second") == set(children.values())

        # a child that dies is started again; the service goes on meanwhile
        victim = children[1]
        os.kill(victim, signal.SIGKILL)
        srv.poll(lambda: True if _children(srv).get(1, victim) != victim else None, "process 1 restarted")
        assert "serve process 1 exited -9 (the others serve on): starting it again" in srv.log()
        assert _serving_pids(srv, 2, "second") == set(_children(srv).values())

        everything = descendants(lambda name: True, srv.proc.pid)
        assert len(deno_children(srv.proc.pid)) >= 2
    assert srv.proc.returncode == 0  # SIGTERM: every process drained and exited 0
    assert all(process_gone(pid) for pid in everything)


def test_a_bad_process_count_or_a_taken_port_is_a_one_line_error(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("who.js", WHO)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state))]
    for bad in ("0", "many", "65"):
        out = subprocess.run([sys.executable, "-m", "host", "serve", *common, "--processes", bad],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 2 and "--processes (or [server] processes) must be a number from 1 to 64" in out.stderr
    with serve_process(tmp_path, *common) as one:
        port = one.base.rsplit(":", 1)[1]
        out = subprocess.run([sys.executable, "-m", "host", "serve", *common, "--port", port, "--processes", "2"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_sighup_stops_them_all_and_a_killed_parents_leftovers_are_swept(plugin_dir, tmp_path, shared_state):
    import glob
    import tempfile

    plugin_dir.add("who.js", WHO)
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state))]
    where = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    with serve_process(tmp_path, *common, "--processes", "2") as srv:
        peers = glob.glob(os.path.join(where, f"plugin-host-{srv.proc.pid}-*-peers-*"))
        assert len(peers) == 1
        everything = descendants(lambda name: True, srv.proc.pid)
        srv.proc.send_signal(signal.SIGHUP)  # as a terminal closing would: a drain, not a crash
        assert srv.proc.wait(timeout=60) == 0
    assert all(process_gone(pid) for pid in everything) and not os.path.exists(peers[0])

    stale = os.path.join(where, "plugin-host-999999999-peers-x")  # a parent that was SIGKILLed
    os.makedirs(stale, exist_ok=True)
    with serve_process(tmp_path, *common, "--processes", "2"):
        assert not os.path.exists(stale)


LAZY = """
await new Promise((resolve) => setTimeout(resolve, 1500));  // a module slow to load: 1.5 s per worker
export const metadata = { id: "lazy", name: "Lazy", version: "1.0.0", apiVersion: "1.0" };
export function who() { return Deno.ppid; }
"""


def test_a_serve_process_started_again_takes_no_call_before_its_plugins_run(tmp_path, shared_state, plugin_dir):
    # Before: a child started again (killed by the OOM killer, say) accepted at once on the shared
    # socket, and every call it took while its plugin loaded was a 503 "plugin is loaded",
    # although its sibling was serving and idle.
    plugin_dir.add("lazy.js", LAZY)
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                       str(fresh_state(tmp_path, shared_state)), "--processes", "2") as srv:
        srv.wait_running("lazy")
        srv.poll(lambda: True if re.search(r"serve process 0 \(pid \d+\) is up", srv.log()) else None,
                 "the parent seeing process 0 up")  # what tells it a sibling serves
        victim = int(re.findall(r"serve process 1 started \(pid (\d+)\)", srv.log())[-1])
        os.kill(victim, signal.SIGKILL)
        srv.wait_logged("serve process 1 exited")
        answers: list[tuple[int, object]] = []

        def restarted() -> bool | None:
            status, body = srv.request("POST", "/api/plugins/lazy/call/who", {})
            answers.append((status, body["result"] if status == 200 else body))
            return True if len(re.findall(r"\[process 1\] serving on", srv.log())) == 2 else None

        srv.poll(restarted, "process 1 serving again", timeout=60)
        assert answers and all(a[0] == 200 for a in answers), [a for a in answers if a[0] != 200]  # no 503 "loaded"
        assert victim not in {a[1] for a in answers}
        new = int(re.findall(r"serve process 1 started \(pid (\d+)\)", srv.log())[-1])
        seen: set[int] = set()
        srv.poll(lambda: seen.add(srv.request("POST", "/api/plugins/lazy/call/who", {})[1]["result"])
                 or (True if new in seen else None), "the new process answering", timeout=60)


def test_a_stop_while_a_serve_process_started_again_waits_for_its_plugins_is_prompt(tmp_path, shared_state,
                                                                                     plugin_dir):
    # The process that joins late still hears SIGTERM while it waits for its plugins: serve
    # stops in the time the plugins take to stop, not after [server] shutdown_grace + 15 s.
    plugin_dir.add("lazy.js", LAZY.replace("1500", "20000"))  # 20 s per worker: the wait outlasts the stop
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                       str(fresh_state(tmp_path, shared_state)), "--processes", "2", ready=False) as srv:
        srv.wait_logged("[process 1] serving on")
        srv.poll(lambda: True if re.search(r"serve process 0 \(pid \d+\) is up", srv.log()) else None,
                 "the parent seeing process 0 up")
        victim = int(re.findall(r"serve process 1 started \(pid (\d+)\)", srv.log())[-1])
        os.kill(victim, signal.SIGKILL)
        srv.poll(lambda: True if len(re.findall(r"serve process 1 started", srv.log())) == 2 else None,
                 "process 1 started again")
        srv.poll(lambda: True if srv.log().count("[process 1] [plugin:lazy") >= 2 else None,
                 "the new process 1 running its host")  # it waits for the plugin now
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0, srv.log()
        assert time.monotonic() - t0 < 10, srv.log()
        assert srv.log().count("[process 1] received SIGTERM") == 1
    assert not deno_children()


def test_serve_processes_that_died_together_both_accept_again_at_once(tmp_path, shared_state, plugin_dir):
    # Neither waits for the other to serve: a process joins late only beside one that accepts.
    plugin_dir.add("lazy.js", LAZY)
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                       str(fresh_state(tmp_path, shared_state)), "--processes", "2") as srv:
        srv.wait_running("lazy")
        pids = [int(p) for p in re.findall(r"serve process \d started \(pid (\d+)\)", srv.log())]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        srv.poll(lambda: True if srv.log().count("serving on") == 4 else None, "both serving again", timeout=20)
        assert srv.log().count(" exited -9") == 2
        status, body = srv.request("POST", "/api/plugins/lazy/call/who", {})
        assert status == 200 and body["result"] not in pids


SECRETIVE = """
export const metadata = { id: "cfg", name: "Cfg", version: "1.0.0", apiVersion: "1.0",
  configSchema: { apiKey: { type: "string", secret: true }, n: { type: "integer", default: 1 } } };
export function n(ctx) { return ctx.config.n; }
"""


def test_a_serve_process_that_cannot_start_again_leaves_its_sibling_serving(tmp_path, shared_state, plugin_dir):
    """A lasting fault (here the secret key file replaced by another key) that fails every start
    of a process killed meanwhile: before, 5 failed starts in 60 s stopped them all, the sibling
    that served throughout with them. Now it is started again with the backoff, uncounted."""
    from cryptography.fernet import Fernet

    plugin_dir.add("cfg.js", SECRETIVE)
    state = fresh_state(tmp_path, shared_state)
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir", str(state),
                       "--processes", "2") as srv:
        srv.wait_running("cfg")
        assert srv.request("PUT", "/api/plugins/cfg/config", {"apiKey": "sk-sealed-1", "n": 2})[0] == 200
        (state / "secret.key").write_bytes(Fernet.generate_key())  # every new start now fails
        os.kill(_children(srv)[1], signal.SIGKILL)
        srv.poll(lambda: True if srv.log().count("the others serve on") >= 5 else None,
                 "five failed starts of process 1 (the old limit)", timeout=60)
        assert "stopping all" not in srv.log() and srv.proc.poll() is None
        assert "[process 1] error:" in srv.log()  # its one line says which process it is
        assert srv.request("POST", "/api/plugins/cfg/call/n", {}) == (200, {"ok": True, "result": 2})


def test_a_process_started_again_reads_host_toml_as_the_others_were_started_with_it(
        tmp_path, shared_state, plugin_dir):
    """helper-79's findings: a restarted child read host.toml afresh, so an edit made since
    held on that process only (another tag, another rate limit), and an edit with a typo made
    it exit 2, which stopped every process, the one serving included. The children now read
    the file as it was when the parent started; a child that exits 2 while a sibling serves is
    started again with the backoff, as other faults are."""
    plugin_dir.add("who.js", WHO)
    state = fresh_state(tmp_path, shared_state)
    config = tmp_path / "host.toml"
    config.write_text('[plugins.who]\nconfig = { tag = "started" }\n')
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir", str(state), "--processes", "2",
                       env={"PLUGIN_HOST_CONFIG": str(config)}) as srv:
        _serving_pids(srv, 2, "started")
        config.write_text('[plugins.who]\nconfig = { tag = "edited" }\n')
        victim = _children(srv)[1]
        os.kill(victim, signal.SIGKILL)
        srv.poll(lambda: True if _children(srv).get(1, victim) != victim else None, "process 1 restarted")
        assert _serving_pids(srv, 2, "started") == set(_children(srv).values())

        config.write_text('[plugins.who]\nconfig = { tag = "oops\n')  # a typo: no process reads it
        victim = _children(srv)[1]
        os.kill(victim, signal.SIGKILL)
        srv.poll(lambda: True if _children(srv).get(1, victim) != victim else None, "process 1 restarted again")
        assert _serving_pids(srv, 2, "started") == set(_children(srv).values())

        # with the copy swept from /tmp, a restarted child reads the file and its typo: it exits 2,
        # and the sibling serves on (before: "stopping all")
        victim = _children(srv)[1]
        argv = Path(f"/proc/{victim}/cmdline").read_bytes().split(b"\0")
        copy = argv[argv.index(b"--config-snapshot") + 1].decode()
        os.unlink(copy)
        os.kill(victim, signal.SIGKILL)
        srv.poll(lambda: True if "a usage or config error; the others serve on" in srv.log() else None,
                 "process 1 exiting 2 beside a serving sibling")
        assert "stopping all" not in srv.log() and srv.proc.poll() is None
        status, body = srv.request("POST", "/api/plugins/who/call/who", {})
        assert status == 200 and body["result"][1] == "started", body
        config.write_text('[plugins.who]\nconfig = { tag = "fixed" }\n')  # fixed: it serves again
        srv.poll(lambda: True if "is up" in srv.log().rsplit("a usage or config error", 1)[1] else None,
                 "process 1 up again")


def test_a_new_connection_while_serve_processes_drain_is_refused_at_once(tmp_path, shared_state, plugin_dir):
    """Before: it queued on the parent's copy of the socket, which nobody accepted from any
    more, and was reset when the drain ended (9 s here)."""
    plugin_dir.add("slow.js", 'export const metadata = { id: "slow", name: "Slow", version: "1.0.0", apiVersion: "1.0" };\n'
                   "export async function nap() { await new Promise(r => setTimeout(r, 4000)); return 1; }\n")
    (tmp_path / "host.toml").write_text("[server]\nshutdown_grace = 10.0\n")
    with serve_process(tmp_path, "--plugins", str(plugin_dir.root), "--state-dir",
                       str(fresh_state(tmp_path, shared_state)), "--processes", "2", "--config", "host.toml") as srv:
        srv.wait_running("slow")
        port = int(srv.base.rsplit(":", 1)[1])
        import socket
        import threading

        answers: list = []
        calls = [threading.Thread(target=lambda: answers.append(srv.request("POST", "/api/plugins/slow/call/nap", {})))
                 for _ in range(2)]
        for t in calls:
            t.start()
        srv.poll(lambda: sum(w["inflight"] for w in srv.request("GET", "/api/plugins/slow")[1]["workers"]) == 2
                 or None, "both calls in flight (4 s each)")
        srv.proc.send_signal(signal.SIGTERM)
        srv.poll(lambda: True if srv.log().count("draining") >= 3 else None, "both processes draining")
        started = time.monotonic()

        def refused() -> bool:  # a process logs "draining" just before it stops accepting: poll a moment
            try:
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
            except ConnectionRefusedError:
                return True
            return False
        while not refused():
            assert time.monotonic() - started < 1, "a new connection was still taken 1 s into the drain"
            time.sleep(0.02)
        assert time.monotonic() - started < 1
        for t in calls:
            t.join(30)
        assert answers == [(200, {"ok": True, "result": 1})] * 2  # the calls in flight finished
        assert srv.proc.wait(30) == 0


@pytest.mark.timeout(120)
def test_a_serve_process_killed_for_not_draining_is_said(plugin_dir, tmp_path, shared_state):
    """helper-100: a serve process stopped (SIGSTOP) vanished from the others' view of a plugin,
    and was SIGKILLed at the end of the stop with no log line; whatever it served cut short unsaid."""
    plugin_dir.add("who.js", WHO)
    (tmp_path / "host.toml").write_text("[server]\nshutdown_grace = 0.5\n")
    common = ["--plugins", str(plugin_dir.root), "--state-dir", str(fresh_state(tmp_path, shared_state)),
              "--config", str(tmp_path / "host.toml")]
    with serve_process(tmp_path, *common, "--processes", "2") as srv:
        _serving_pids(srv, 2)
        child = _children(srv)[0]
        os.kill(child, signal.SIGSTOP)
        # the view from the process that answers says the stopped one did not (it vanished before)
        status, body = srv.request("GET", "/api/plugins/who")
        assert status == 200 and [(p["process"], p["state"]) for p in body["processes"]] == [
            (0, "unanswered"), (1, "running")], body["processes"]
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
        assert process_gone(child)
        said = srv.log()
    assert re.search(rf"process 0 \(pid {child}\) did not finish draining within [\d.]+ s .*killed", said), said[-2000:]
