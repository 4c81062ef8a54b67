"""cc-switch usage scripts as balance plugins: each script (a ``NAME.usage.js`` file in a
plugin directory, or ``[usage_scripts.NAME]`` in host.toml) becomes a generated module under
``<state_dir>/usage_scripts/NAME/mod.js``: the script as a JSON string literal, then the
runtime's adapter (``worker_runtime/usage_adapter.js``), which reads it as cc-switch does (the
whole program, evaluated at every query, the first plan the headline) with its placeholders
filled in only ever as string values, never as code."""

from __future__ import annotations

import codecs
import functools
import json
import logging
import shutil
from pathlib import Path

from ..config import HostConfig, UsageScriptConfig
from ..errors import InvalidConfig
from ..logs import Throttle
from ..runtime import find_runtime_entry
from ..security.private_files import os_failure, write_private
from .dev import dev_entries
from .discovery import USAGE_SUFFIX, PluginSource, discover
from .manifest import ID_RE, Manifest

log = logging.getLogger("host.usage_scripts")

ADAPTER = "usage_adapter.js"
_warned: set[str] = set()  # problems already logged: the watcher rescans every second
_throttle = Throttle(log)  # a module that cannot be written: logged again while it lasts


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


@functools.cache
def _adapter() -> str:
    """The adapter, read once: it ships beside the standard worker runtime (whatever
    runtime_entry a host uses)."""
    return (find_runtime_entry().parent / ADAPTER).read_text(encoding="utf-8")


class Unreadable(Exception):
    """A script file that cannot be read as text, and what to do about it."""


def read_script(path: Path) -> str:
    """A script file's text as editors save it: UTF-8 (a BOM or not), or UTF-16 with its BOM
    (Windows Notepad's "Unicode"). Unreadable, naming the file and what to do, otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc.strerror or exc}") from None
    return text_of(raw, path)


def text_of(raw: bytes, path: Path) -> str:
    """``raw`` (the file at ``path``) as text, as ``read_script`` reads a script: UTF-8 (a BOM or
    not), or UTF-16 with its BOM; Unreadable naming the encoding otherwise."""
    wide = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        return raw.decode("utf-16" if wide else "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(f"{path} is not {'UTF-16' if wide else 'UTF-8'} text (byte {raw[exc.start]:#04x} at "
                         f"offset {exc.start}): save it as UTF-8 (an editor may have saved it as GBK or another "
                         "'ANSI' code page)") from None


def _scripts(dirs: list[Path], configured: dict[str, UsageScriptConfig],
             labels: dict[str, str]) -> dict[str, tuple[str, str, str | Unreadable]]:
    """id -> (display name, where it came from, script text or why it cannot be read); host.toml
    first, then files. ``labels``: where a configured script given as text came from, when not
    ``[usage_scripts.ID]`` (a station's)."""
    found: dict[str, tuple[str, str, str | Unreadable]] = {}
    for sid, c in configured.items():
        if c.script is not None:
            found[sid] = (c.name or sid, labels.get(sid, f"host.toml usage_scripts.{sid}"), c.script)
            continue
        assert c.file is not None
        setting = f"{labels.get(sid, f'host.toml usage_scripts.{sid}')}.file"
        found[sid] = (c.name or sid, c.file, _text(Path(c.file), setting))
    for d in dirs:
        if not d.is_dir():
            continue
        for path in sorted(d.glob("*" + USAGE_SUFFIX)):
            sid = path.name.removesuffix(USAGE_SUFFIX)
            if sid not in found:
                found[sid] = (sid, str(path), _text(path))
    return found


def _text(path: Path, setting: str | None = None) -> str | Unreadable:
    """The script's text, or why it cannot be read; ``setting``: the one that names the file."""
    try:
        return read_script(path)
    except Unreadable as exc:
        return Unreadable(f"{exc} (the file {setting} names: fix the path, or put the file back)") if setting else exc


def usage_sources(dirs: list[Path], configured: dict[str, UsageScriptConfig], out_dir: Path,
                  labels: dict[str, str] | None = None) -> list[PluginSource]:
    """Write (or refresh) the module of every usage script, remove those of scripts that are
    gone, and return them as plugin sources. A module is rewritten only when its text changes,
    so that hot reload sees an edited script and nothing else."""
    scripts = _scripts(dirs, configured, labels or {})
    sources: list[PluginSource] = []
    for sid, (name, origin, script) in sorted(scripts.items()):
        if not ID_RE.match(sid):
            _warn_once(f"usage script {sid!r} ({origin}): not a valid plugin id; skipped")
            continue
        module = out_dir / sid / "mod.js"
        text = _failing_module(sid, origin, script) if isinstance(script, Unreadable) else \
            _module_text(sid, name, origin, script)
        if not _written(module, text):
            continue  # not written yet (a full disk): a later rescan writes it and loads it
        sources.append(PluginSource(id=sid, module=module, root=module.parent, usage_script=origin))
    keep = {s.id for s in sources}
    if out_dir.is_dir():
        for stale in out_dir.iterdir():
            if stale.is_dir() and stale.name not in keep:
                shutil.rmtree(stale, ignore_errors=True)
    return sources


def _module_text(sid: str, name: str, origin: str, script: str) -> str:
    """The generated module of one script: the script and where it came from as data, then the adapter."""
    header = "".join(f"const {k} = {json.dumps(v, ensure_ascii=False)};\n" for k, v in (
        ("SCRIPT_ID", sid), ("SCRIPT_NAME", name), ("SCRIPT_SOURCE", origin), ("SCRIPT", script)))
    return f"// Generated by Plugin Host from {json.dumps(origin)}: edit that, not this.\n{header}\n{_adapter()}"


def _failing_module(sid: str, origin: str, why: Unreadable) -> str:
    """The module of a script that cannot be read: it fails to load saying why, so that the script
    is a plugin in error (in ``list``, ``balances``, the dashboard), not left out with a log line.
    Its stack names no line: the generated module is not where the mistake is."""
    message = json.dumps(f"usage script {sid}: {why}", ensure_ascii=False)
    return (f"// Generated by Plugin Host from {json.dumps(origin)}, which it cannot read.\n"
            f"const failed = new TypeError({message});\nfailed.stack = `TypeError: ${{failed.message}}`;\n"
            "throw failed;\n")


def script_source(path: Path, out_dir: Path) -> PluginSource:
    """The usage script file at ``path`` (``NAME.usage.js``) as a plugin source whose module is
    written under ``out_dir``, as a host serving it from a plugin directory would write it (for
    ``validate``). InvalidConfig when its name is no plugin id or it cannot be read."""
    sid = path.name.removesuffix(USAGE_SUFFIX)
    if not ID_RE.match(sid):
        raise InvalidConfig(f"{path}: {sid!r} is not a plugin id (letters, digits, '_', '-'): rename the file")
    try:
        script = read_script(path)
    except Unreadable as exc:
        raise InvalidConfig(f"usage script {sid}: {exc}") from None
    module = out_dir / sid / "mod.js"
    module.parent.mkdir(parents=True, exist_ok=True)
    write_private(module, _module_text(sid, sid, str(path), script).encode("utf-8"))
    return PluginSource(id=sid, module=module, root=module.parent, usage_script=str(path))


def refusal_advice(source: PluginSource, manifest: Manifest) -> dict[str, str]:
    """What a usage script's user changes when its worker is refused a host (a redirect, or a
    fetch of the extractor's): not the generated module, which is written again from the script,
    but the one host the script may reach, the host of its ``request.url``: its ``baseUrl``
    (config), or the URL the script names (``source.usage_script``). ``{entry}``: the refused host."""
    net = manifest.permissions.get("net") if isinstance(manifest.permissions, dict) else None
    if isinstance(net, list) and "{config.baseUrl}" in net:
        where = (f"usage script {source.id} may reach only the host of its baseUrl, which its request.url is "
                 f"built from: if the station answers at {{entry}} now (a redirect there is refused too), set "
                 f"baseUrl to it (`python -m host config set {source.id} baseUrl=URL`, or `python -m host "
                 f"balances set {source.id} baseUrl=URL` for a station)")
    else:
        where = (f"usage script {source.id} may reach only the host its request.url names: if the station "
                 f"answers at {{entry}} now (a redirect there is refused too), change the URL in {source.usage_script}")
    return {"net": where}


def _written(module: Path, text: str) -> bool:
    """Make ``module`` hold ``text``, replaced in one step (a full disk leaves the old module
    whole, and the workers started meanwhile load it); a failure is logged, naming the file.
    False when there is no module to load at all."""
    try:
        if module.read_text(encoding="utf-8") == text:
            return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        module.parent.mkdir(parents=True, exist_ok=True)
        write_private(module, text.encode("utf-8"))
    except OSError as exc:
        _throttle.warning(str(module), "usage script module: %s", os_failure(module, exc, "write"))
    return module.exists()


def discover_sources(config: HostConfig, stations: dict[str, UsageScriptConfig] | None = None) -> list[PluginSource]:
    """Every plugin a host with ``config`` loads: the plugin directories' modules and the
    cc-switch usage scripts (files, ``[usage_scripts]`` and the usage-script ``stations``),
    sorted by id and version. ``stations``: the host's; by default read from host.toml and
    ``<state_dir>/stations.json`` as the host would (a command run beside a server must not
    take a station's module for a stale one)."""
    if stations is None:
        from ..balances.station_files import station_scripts
        stations = station_scripts(config)
    labels = {sid: f"host.toml stations.{sid}" if sid in config.stations else
              f"station {sid}'s script (added with `balances add`)" for sid in stations if sid not in config.usage_scripts}
    scripts = usage_sources(config.plugin_dirs, {**stations, **config.usage_scripts},
                            config.state_path / "usage_scripts", labels)
    dev = dev_sources(config)
    found = [s for s in discover(config.plugin_dirs) if s.id not in {d.id for d in dev}]  # dev_plugins win
    return sorted(found + scripts + dev, key=lambda s: (s.id, s.version_hint or ""))


def dev_sources(config: HostConfig) -> list[PluginSource]:
    """host.toml's ``dev_plugins`` (plugins/dev.py); one whose path went away since the config
    was read is left out (and, if it was running, stopped as removed from disk)."""
    out = []
    for i, entry in enumerate(config.dev_plugins):
        try:
            ((name, module, root),) = dev_entries([entry], f"dev_plugins[{i}]")
        except InvalidConfig as exc:
            log.debug("dev plugin left out: %s", exc)
            continue
        out.append(PluginSource(id=name, module=module, root=root, dev=True))
    return out
