"""``[server] event_loop``: serve runs on uvloop when it is installed (bench/bench_core.py
measures it beside asyncio), on the standard loop when asked, and a uvloop that cannot be
imported is a typed error naming the setting."""

from __future__ import annotations

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
