"""What a plugin granted `run` starts dies with its worker and with the host, even when it left
the worker's process group: `setsid -f` (a session of its own, its parent gone at once), as a
daemon's double fork does. Before, only the worker's process group was killed (on a timeout, at
the host's close, by the reaper after a SIGKILL), and such a process lived on under PID 1."""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time

import anyio
import pytest
from support.processes import live_processes

from host import CallTimeout, WorkerLimits
from host.process_cgroup import own_cgroup_dir


def cgroup_v2_writable() -> bool:
    """A cgroup v2 hierarchy with this process's cgroup in it writable (root, or delegated)."""
    own = own_cgroup_dir()
    return own is not None and os.access(own, os.W_OK) and os.access(os.path.join(own, "cgroup.procs"), os.W_OK)


pytestmark = pytest.mark.skipif(not cgroup_v2_writable(), reason="no cgroup v2 hierarchy this user may write in")

ESCAPER = """
export const metadata = { id: "escaper", name: "escaper", version: "1.0.0", apiVersion: "1.0",
  permissions: { run: ["setsid", "sleep"] } };
export async function start(tag) {
  await new Deno.Command("setsid", { args: ["-f", "sleep", tag], stdout: "null", stderr: "null" }).output();
  return Deno.pid;
}
export async function startAndSpin(tag) {  // its worker is killed at the call's deadline
  await start(tag);
  while (true) {}
}
"""


def tagged(tag: str) -> list[int]:
    """Live processes running ``sleep TAG`` (a zombie is gone)."""
    return live_processes(lambda argv: argv == [b"sleep", tag.encode()])


def wait_gone(tag: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


async def await_gone(tag: str, timeout: float) -> list[int]:
    """``wait_gone`` for a test whose host runs in this event loop (it must go on running)."""
    with anyio.move_on_after(timeout):
        while tagged(tag):
            await anyio.sleep(0.02)
    return tagged(tag)


def started(tag: str, timeout: float = 5) -> bool:
    """``setsid -f`` returns before its child has exec'd ``sleep``."""
    deadline = time.monotonic() + timeout
    while not tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(tagged(tag))


def unique_tag() -> str:
    return f"{random.randint(1000, 9000)}.{random.randint(100000, 999999)}"


def kill_tagged(*tags: str) -> None:
    for tag in tags:
        for pid in tagged(tag):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_process_in_a_session_of_its_own_dies_with_its_worker_and_the_host(plugin_dir, make_host,
                                                                                   anyio_backend):
    plugin_dir.add("escaper.js", ESCAPER)
    first, second = unique_tag(), unique_tag()
    try:
        async with make_host(limits=WorkerLimits(call_timeout=2.0)) as h:
            seen: list[int] = []

            async def watch() -> None:  # it runs before the deadline kills its worker
                with anyio.move_on_after(2):
                    while not seen:
                        seen.extend(tagged(first))
                        await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                with pytest.raises(CallTimeout):
                    await h.call("escaper", "startAndSpin", first)  # its worker SIGKILLed at 2 s
            assert seen, "setsid -f sleep did not start"
            assert not await await_gone(first, 3), "the plugin's child outlived its killed worker"
            await h.call("escaper", "start", second)
            assert started(second)
        assert not wait_gone(second, 3), "the plugin's child outlived the host"
    finally:
        kill_tagged(first, second)


SIGKILLED_HOST = """
import json, sys
import anyio
from host import HostConfig, PluginHost, PoolConfig

async def main(plugins, state, tag):
    cfg = HostConfig(plugins_dir=plugins, state_dir=state, pool=PoolConfig(min_workers=1, max_workers=1))
    async with PluginHost(cfg) as h:
        await h.call("escaper", "start", tag)
        print(json.dumps([w.pid for w in h.plugin("escaper").workers]), flush=True)
        await anyio.sleep_forever()

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.timeout(60)
def test_a_process_in_a_session_of_its_own_dies_with_a_sigkilled_host(plugin_dir, tmp_path, shared_state):
    plugin_dir.add("escaper.js", ESCAPER)
    script = tmp_path / "host_main.py"
    script.write_text(SIGKILLED_HOST)
    tag = unique_tag()
    proc = subprocess.Popen([sys.executable, str(script), str(plugin_dir.root), str(shared_state), tag],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "no report from the host"
        workers = json.loads(proc.stdout.readline())
        assert started(tag) and workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        assert not wait_gone(tag, 5), "the plugin's child outlived the SIGKILLed host"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_tagged(tag)


def spawn_with_pid(pid: int, argv: list[str], tries: int = 50) -> subprocess.Popen | None:
    """A process with number ``pid`` (free now), as the kernel gives a number used before again:
    the next one it hands out is set (root; another process forking meanwhile takes it: tried again)."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        proc = subprocess.Popen(argv)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK),
                    reason="choosing a pid needs root")
def test_a_worker_given_the_pid_of_one_whose_cgroup_was_not_removed_yet_is_not_killed_later():
    # Before: the old worker's cgroup, waiting to be removed (a killed child not yet out of it),
    # stayed on the list of those retried at each worker's end after a new worker with the same
    # pid had taken it over, and the next worker's end killed the new one.
    from host.process_cgroup import Cgroups

    cg = Cgroups.create()
    assert cg is not None
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(20):  # until a removal finds its killed processes still in the cgroup
            old = subprocess.Popen(["sleep", "60"])
            child = subprocess.Popen(["sleep", "60"])  # what the worker started, in its cgroup
            procs += [old, child]
            assert cg.enter(old.pid)
            with open(os.path.join(cg.path(old.pid), "cgroup.procs"), "w") as f:
                f.write(str(child.pid))
            old.kill()
            old.wait()
            cg.remove(old.pid)
            child.wait()
            if os.path.isdir(cg.path(old.pid)):
                break
        else:
            pytest.skip("every killed process left its cgroup at once")
        new = spawn_with_pid(old.pid, ["sleep", "60"])
        if new is None:  # another process (the other test process, say) took the number each time
            pytest.skip("the pid could not be handed out again")
        procs.append(new)
        assert cg.enter(new.pid)
        other = subprocess.Popen(["sleep", "60"])
        procs.append(other)
        assert cg.enter(other.pid)
        other.kill()
        other.wait()
        cg.remove(other.pid)  # another worker's end
        time.sleep(0.2)
        assert new.poll() is None, "the new worker was killed with the old one's cgroup"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        cg.close()
