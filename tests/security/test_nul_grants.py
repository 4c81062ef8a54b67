"""A plugin whose grants hold a NUL (or another control character) is refused with the file and
the field named, and loading is structural: whatever one plugin's load raises leaves that plugin
in `error`, never the host or the other plugins, and the watcher reports it once per change of
the file, not at every rescan (B9)."""

from __future__ import annotations

import logging
import os

import anyio
import pytest
from support.processes import wait_for

from host import PoolConfig
from host.config import ReloadConfig

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

ONE = PoolConfig(min_workers=1, max_workers=1)
GOOD = "export function ok() { return 'ok'; }\n"


def with_grant(pid: str, perms: str) -> str:
    return (f'export const metadata = {{ id: "{pid}", name: "{pid}", version: "1.0.0", apiVersion: "1.0",\n'
            f"  permissions: {perms} }};\n" + GOOD)


# Each kind of grant, each with a control character Deno or the operator would be fooled by.
BAD = {
    "nul_read": ('{ read: ["/tmp/x\\u0000"] }', "permissions.read: entry '/tmp/x\\x00'", "U+0000"),
    "nul_write": ('{ write: ["out\\u0000/../../x"] }', "permissions.write: entry", "U+0000"),
    "newline_net": ('{ net: ["api.example.com\\nevil.example"] }', "permissions.net: entry", "U+000A"),
    "escape_env": ('{ env: ["HOME\\u001b[2K"] }', "permissions.env: entry", "U+001B"),
    "nul_run": ('{ run: ["/bin/true\\u0000"] }', "permissions.run: entry", "U+0000"),
    "del_sys": ('{ sys: ["hostname\\u007f"] }', "permissions.sys: entry", "U+007F"),
    "nul_ffi": ('{ ffi: ["lib\\u0000.so"] }', "permissions.ffi: entry", "U+0000"),
    "bidi_net": ('{ net: ["moc.elgoog\\u202e.evil.example"] }', "permissions.net: entry", "U+202E"),
}


def rescan_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "rescan failed" in r.getMessage()]


async def test_a_host_with_control_characters_in_a_plugins_grants_starts_and_serves(plugin_dir, make_host):
    plugin_dir.add("good.js", GOOD)
    for pid, (perms, _, _) in BAD.items():
        plugin_dir.add(f"{pid}.js", with_grant(pid, perms))
    async with make_host(pool=ONE) as h:
        assert await h.call("good", "ok") == "ok"
        for pid, (_, field, char) in BAD.items():
            info = h.plugin(pid)
            assert info.state == "error" and info.workers == [], pid
            assert f"{pid}.js: metadata.permissions: {field}" in info.error, info.error
            assert f"control character {char}" in info.error, info.error


async def test_a_bad_grant_dropped_in_while_running_is_reported_once(plugin_dir, make_host, caplog):
    plugin_dir.add("good.js", GOOD)
    async with make_host(pool=ONE, reload=ReloadConfig(interval=0.05)) as h:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            plugin_dir.add("bad.js", with_grant("bad", BAD["nul_read"][0]))
            await wait_for(lambda: "bad" in h.states() and h.states()["bad"] == "error", timeout=10)
            await anyio.sleep(0.5)  # ten rescans of the same unchanged file
            assert "bad.js: metadata.permissions: permissions.read" in h.plugin("bad").error
            assert await h.call("good", "ok") == "ok"
        assert rescan_failures(caplog) == []
        assert len([r for r in caplog.records if "-> error" in r.getMessage() and "[plugin:bad" in r.getMessage()]) == 1


async def test_a_plugin_file_named_in_bytes_that_are_not_utf8_stays_out_and_the_others_serve(
        plugin_dir, make_host, caplog):
    # A file name that is not UTF-8 (copied from a Latin-1 system): once a plugin in error (its
    # id and paths, which no listing could encode, then broke /healthz and /api/plugins: helper-111),
    # it is left out with one warning naming it, at start and when dropped in while running.
    plugin_dir.add("good.js", GOOD)
    latin = os.path.join(os.fsencode(plugin_dir.root), b"caf\xe9.js")
    with open(latin, "w") as f:
        f.write(GOOD)
    async with make_host(pool=ONE, reload=ReloadConfig(interval=0.05)) as h:
        assert await h.call("good", "ok") == "ok"
        assert list(h.states()) == ["good"]
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            second = os.path.join(os.fsencode(plugin_dir.root), b"na\xefve.js")
            with open(second, "w") as f:
                f.write(GOOD)
            await wait_for(lambda: any("na\\xefve.js: left out" in r.getMessage() for r in caplog.records),
                           timeout=10)
            await anyio.sleep(0.5)  # ten rescans of the same file
            assert await h.call("good", "ok") == "ok"
        assert rescan_failures(caplog) == []
        assert [r for r in caplog.records if r.exc_info is not None] == []
        assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 1  # once, not at every rescan
        assert h.states() == {"good": "running"}
