"""``[server] event_loop``: serve runs on uvloop when it is installed (bench/bench_core.py
measures it beside asyncio), on the standard loop when asked, and a uvloop that cannot be
imported is a typed error naming the setting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support.plugins import CALC
from support.servers import run_cli, serve_process

from host import InvalidConfig
from host.event_loop import run_options

pytestmark = pytest.mark.timeout(60)


def test_auto_and_uvloop_take_uvloop_when_it_is_installed():
    assert run_options("auto") == run_options("uvloop") == {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    assert run_options("asyncio") == {"backend": "asyncio"}


def test_a_missing_uvloop_is_named_when_asked_for_and_skipped_by_auto(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert run_options("auto") == {"backend": "asyncio"}
    with pytest.raises(InvalidConfig, match=r'server\.event_loop = "uvloop".*pip install uvloop.*"asyncio"'):
        run_options("uvloop")


@pytest.mark.parametrize("setting, loop", [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_serve_runs_on_the_loop_chosen_and_serves_calls(tmp_path, plugin_dir, setting, loop):
    plugin_dir.add("calc.js", CALC)
    args = ["--plugins", str(plugin_dir.root), "--state-dir", str(tmp_path / "state")]
    if setting is not None:
        (tmp_path / "host.toml").write_text(f'[server]\nevent_loop = "{setting}"\n')
        args += ["--config", "host.toml"]
    with serve_process(tmp_path, *args) as srv:
        srv.wait_logged(f"(event loop: {loop})")
        status, answer = srv.request("POST", "/api/plugins/calc/call/add", {"args": [40, 2]})
        assert (status, answer) == (200, {"ok": True, "result": 42})


def test_an_unknown_event_loop_is_refused_naming_the_setting(tmp_path, plugin_dir):
    (tmp_path / "host.toml").write_text('[server]\nevent_loop = "tokio"\n')
    done = run_cli("list", "--plugins", str(plugin_dir.root), "--config", "host.toml", cwd=tmp_path)
    assert done.returncode == 2
    assert "event_loop" in done.stderr and "tokio" in done.stderr, done.stderr


ASYNCIO_RUN = """
import asyncio, json, sys
from host import ExecuteConfig, HostConfig, PluginHost, PoolConfig

async def main():
    config = HostConfig(plugins_dir=sys.argv[1], state_dir=sys.argv[2],
                        pool=PoolConfig(min_workers=1, max_workers=1, max_calls_per_worker=2),
                        execute=ExecuteConfig(pooled=False))
    async with PluginHost(config) as h:
        calls = [await h.call("cached", "f", i) for i in range(5)]  # host calls; a worker recycled twice
        runs = [(await h.execute("export default (x) => x * 2", i)).result for i in range(2)]  # a worker each
        print(json.dumps({"calls": calls, "runs": runs, "crashes": h.plugin("cached").crashes}))

asyncio.run(main())  # not anyio.run: what an application (uvicorn, a script) runs the host on
"""


def test_the_host_under_asyncio_run_serves_host_calls_and_recycles_workers(tmp_path, plugin_dir):
    """Under asyncio.run (an application's own loop, uvicorn's too) anyio could not tell the loop
    from the frame reader's callback (anyio.run tells sniffio; asyncio.run does not): every host
    call of a plugin (ctx.cache, ctx.storage) crashed its worker with NoEventLoopError, as did
    every worker recycled after max_calls_per_worker and every fresh /execute worker."""
    plugin_dir.add("cached.js", "export async function f(x, ctx) { await ctx.cache.set('k', x); "
                                "return await ctx.cache.get('k'); }\n")
    script = tmp_path / "app.py"
    script.write_text(ASYNCIO_RUN)
    out = subprocess.run([sys.executable, str(script), str(plugin_dir.root), str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {"calls": [0, 1, 2, 3, 4], "runs": [0, 2], "crashes": 0}, out.stderr[-3000:]
    assert "NoEventLoopError" not in out.stderr and "never awaited" not in out.stderr
