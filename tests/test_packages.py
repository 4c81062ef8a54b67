"""Plugin packages on a running host (host/plugins/packages.py, ``PluginHost.packages``): a
verified archive installs and serves at once; a refused one leaves nothing; an update keeps the
old version serving until the new one runs (waiting for approval when it asks for more, swapped
back when it fails to start); uninstall stops the workers and removes only what was installed."""

from __future__ import annotations

import json

import anyio
import pytest
from support.packages import plugin_source, plugin_tar, sha256, tar_gz, zip_of
from support.processes import process_gone, wait_for

from host import PluginNotFound, PoolConfig
from host.config import ReloadConfig
from host.plugins.package_archive import Package, PackageRefused

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60), pytest.mark.one_backend]
ONE = PoolConfig(min_workers=1, max_workers=1)
SLOW = 'export async function slow(ms) { console.log("slow started"); await new Promise((r) => setTimeout(r, ms)); return "slow done"; }\n'


def package(data: bytes, name: str = "hello.tar.gz") -> Package:
    return Package(name, data, sha256=sha256(data))


def audit(state) -> list[dict]:
    return [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]


def pids(h, pid: str) -> set[int]:
    return {w.pid for w in h.plugin(pid).workers if w.pid is not None}


async def test_a_verified_archive_installs_and_serves_at_once(plugin_dir, make_host, state_dir):
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        report = await h.packages.install(package(plugin_tar("hello", "1.0.0")), by="python")
        assert report["state"] == "running" and report["verified_by"] == "sha256"
        assert await h.call("hello", "version") == "1.0.0"
        assert (plugin_dir.root / "hello" / "mod.js").is_file()
        with pytest.raises(PackageRefused, match="installed already") as again:
            await h.packages.install(package(plugin_tar("hello", "1.0.1")), by="python")
        assert again.value.status == 409
    assert [e["event"] for e in audit(state_dir) if e["event"].startswith("package_")] == [
        "package_install", "package_refused"]


async def test_refused_packages_leave_nothing_behind(plugin_dir, make_host, state_dir):
    good = plugin_tar("hello", "1.0.0")
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        tampered = good[:-1] + bytes([good[-1] ^ 1])
        with pytest.raises(PackageRefused, match="sha256 mismatch"):
            await h.packages.install(Package("hello.tar.gz", tampered, sha256=sha256(good)), by="python")
        evil = tar_gz({"hello/mod.js": plugin_source("hello", "1.0.0"), "../escape.js": "x"})
        with pytest.raises(PackageRefused, match=r"'\.\.' is not allowed"):
            await h.packages.install(package(evil), by="python")
        broken = tar_gz({"hello/mod.js": "export const metadata = { id: 'hello' };"})
        with pytest.raises(PackageRefused, match=r"hello\.tar\.gz!/hello/mod\.js: metadata\.name: is required"):
            await h.packages.install(package(broken), by="python")
        with pytest.raises(PluginNotFound):
            h.plugin("hello")
    assert list(plugin_dir.root.iterdir()) == [] and not (plugin_dir.root.parent / "escape.js").exists()
    assert not (state_dir / "packages.json").exists()
    assert [e["event"] for e in audit(state_dir) if e["event"].startswith("package_")] == ["package_refused"] * 3


async def test_an_update_keeps_the_old_version_serving_until_the_new_one_runs(plugin_dir, make_host, state_dir):
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        await h.packages.install(package(plugin_tar("hello", "1.0.0", SLOW)), by="python")
        old = pids(h, "hello")
        started = anyio.Event()
        h.add_log_listener(lambda plugin, worker, msg: started.set() if msg.message == "slow started" else None)
        answers: list[str] = []

        async def in_flight() -> None:
            answers.append(await h.call("hello", "slow", 1500))

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_flight)
            await started.wait()
            report = await h.packages.update("hello", package(plugin_tar("hello", "2.0.0", SLOW)), by="python")
            assert report["action"] == "updated" and report["version"] == "2.0.0"
            assert await h.call("hello", "version") == "2.0.0"  # new calls: the new version
        assert answers == ["slow done"]  # the call on the old version finished there
        await wait_for(lambda: all(process_gone(p) for p in old), timeout=15)


async def test_an_update_asking_for_more_waits_for_approval_and_a_failing_one_is_swapped_back(
        plugin_dir, make_host, state_dir):
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        await h.packages.install(package(plugin_tar("hello", "1.0.0")), by="python")
        wider = plugin_tar("hello", "1.1.0", net=["api.example.com"])
        report = await h.packages.update("hello", package(wider), by="python")
        assert report["action"] == "pending_approval" and "api.example.com" in report["detail"]
        assert await h.call("hello", "version") == "1.0.0"  # the old version keeps serving
        assert await h.approve("hello") is True
        assert await h.call("hello", "version") == "1.1.0"

        needs = ', configSchema: { apiKey: { type: "string", required: true } }'
        failing = plugin_tar("hello", "1.2.0", net=["api.example.com"], extra=needs)
        with pytest.raises(PackageRefused, match="failed to start"):
            await h.packages.update("hello", package(failing), by="python")
        assert await h.call("hello", "version") == "1.1.0"
        assert '"1.1.0"' in (plugin_dir.root / "hello" / "mod.js").read_text()  # its files are back
        assert h.packages.installed()["hello"]["version"] == "1.1.0"  # and its record


async def test_uninstall_stops_the_workers_and_purge_forgets_the_config(plugin_dir, make_host, state_dir, calc):
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        body = 'export function region(ctx) { return ctx.config.region; }\n'
        schema = ', configSchema: { region: { type: "string", default: "eu" } }'
        await h.packages.install(package(plugin_tar("hello", "1.0.0", body, extra=schema)), by="python")
        await h.set_config("hello", {"region": "us"})
        workers = pids(h, "hello")
        assert workers
        with pytest.raises(PackageRefused, match="not installed with `install`"):
            await h.packages.uninstall("calc", by="python")  # a plugin placed by hand stays
        with pytest.raises(PluginNotFound, match="no installed package"):
            await h.packages.uninstall("nope", by="python")
        report = await h.packages.uninstall("hello", by="python", purge=True)
        assert report == {"id": "hello", "action": "uninstalled", "version": "1.0.0", "purged": True}
        await wait_for(lambda: all(process_gone(p) for p in workers), timeout=15)
        with pytest.raises(PluginNotFound):
            await h.call("hello", "version")
        assert await h.call("calc", "add", 1, 2) == 3
    assert [p.name for p in plugin_dir.root.iterdir()] == ["calc.js"]
    assert "hello" not in json.loads((state_dir / "config.json").read_text())


async def test_a_package_claiming_another_plugins_id_never_runs_under_it(plugin_dir, make_host, state_dir):
    plugin_dir.add("keeper.js", 'export function seen() { return localStorage.getItem("owned"); }\n')
    claim = tar_gz({"keeper/mod.js": 'localStorage.setItem("owned", "yes");\n' + plugin_source("keeper", "9.0.0")})
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        with pytest.raises(PackageRefused, match="installed already"):
            await h.packages.install(package(claim), by="python")
        assert await h.call("keeper", "seen") is None  # its storage origin untouched
        with pytest.raises(PackageRefused, match="not installed with `install`"):
            await h.packages.update("keeper", package(claim), by="python")
    assert not (state_dir / "data").exists() or not any(
        p.name.startswith("package-") for p in (state_dir / "data").iterdir())


async def test_a_single_module_and_a_flat_zip_install_and_update_in_place(plugin_dir, make_host, state_dir):
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        v1 = plugin_source("solo", "1.0.0").encode()
        report = await h.packages.install(package(v1, "solo-1.0.0.js"), by="python")
        assert report["kind"] == "file" and (plugin_dir.root / "solo.js").is_file()
        flat = zip_of({"mod.js": plugin_source("flat", "1.0.0"), "lib/util.js": "export const x = 1;"})
        assert (await h.packages.install(package(flat, "flat.zip"), by="python"))["kind"] == "directory"
        assert await h.call("flat", "version") == "1.0.0"
        as_dir = zip_of({"solo/mod.js": plugin_source("solo", "2.0.0")})
        with pytest.raises(PackageRefused, match="installed as a single file"):
            await h.packages.update("solo", package(as_dir, "solo.zip"), by="python")
        v2 = plugin_source("solo", "2.0.0").encode()
        assert (await h.packages.update("solo", package(v2, "solo-2.0.0.js"), by="python"))["action"] == "updated"
        assert await h.call("solo", "version") == "2.0.0"
    assert sorted(p.name for p in plugin_dir.root.iterdir()) == ["flat", "solo.js"]


async def test_strict_refuse_refuses_a_package_with_risky_grants(plugin_dir, make_host, state_dir):
    from host.config import SecurityConfig

    risky = plugin_tar("wide", "1.0.0", net=[f"h{i}.example.com" for i in range(12)])  # over max_net_hosts
    async with make_host(state_dir=str(state_dir), security=SecurityConfig(strict="refuse"),
                         reload=ReloadConfig(enabled=False)) as h:
        with pytest.raises(PackageRefused, match=r'security\.strict = "refuse"'):
            await h.packages.install(package(risky), by="python")
    assert list(plugin_dir.root.iterdir()) == []


async def test_a_record_that_cannot_be_written_leaves_the_install_and_update_undone(
        plugin_dir, make_host, state_dir, monkeypatch):
    import errno

    import host.plugins.packages as packages_module

    real = packages_module.write_private

    def full_disk(path, data, **kw):  # the state file system full: what ENOSPC does to a write
        raise OSError(errno.ENOSPC, "No space left on device")

    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        monkeypatch.setattr(packages_module, "write_private", full_disk)
        with pytest.raises(PackageRefused, match=r"could not be recorded in packages\.json") as e:
            await h.packages.install(package(plugin_tar("hello", "1.0.0")), by="python")
        assert e.value.status == 503 and not (plugin_dir.root / "hello").exists()
        monkeypatch.setattr(packages_module, "write_private", real)
        await h.packages.install(package(plugin_tar("hello", "1.0.0")), by="python")  # not stranded
        monkeypatch.setattr(packages_module, "write_private", full_disk)
        with pytest.raises(PackageRefused, match="could not be recorded"):
            await h.packages.update("hello", package(plugin_tar("hello", "2.0.0")), by="python")
        assert '"1.0.0"' in (plugin_dir.root / "hello" / "mod.js").read_text()  # the old files, in place
        assert await h.call("hello", "version") == "1.0.0"


@pytest.mark.parametrize("pid", ["calc.usage", "load_test", "widget.test"])
async def test_an_id_discovery_would_read_back_as_another_is_refused(plugin_dir, make_host, state_dir, pid):
    # as one module, "calc.usage.js" is read as a cc-switch usage script with id calc, and
    # "load_test.js" is skipped as a test file: neither would be the plugin installed
    data = plugin_source(pid, "1.0.0").encode()
    async with make_host(pool=ONE, state_dir=str(state_dir), reload=ReloadConfig(enabled=False)) as h:
        with pytest.raises(PackageRefused, match="would be read back as"):
            await h.packages.install(Package(f"{pid}.js", data, sha256=sha256(data)), by="python")
    assert list(plugin_dir.root.iterdir()) == [] and "package_install" not in (state_dir / "audit.jsonl").read_text()


@pytest.mark.timeout(20)
def test_install_of_a_fifo_or_a_device_is_a_usage_error_not_a_wait(tmp_path):
    """`install` read the path before looking at what it is: a FIFO waited for a writer for ever,
    /dev/zero was read until memory ran out (helper-71's finding)."""
    import os

    from host.cli_output import UsageError
    from host.cli_packages import read_package

    fifo = tmp_path / "plugin.ts"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/zero"):
        with pytest.raises(UsageError, match="not a package file"):
            read_package(str(path), None)
