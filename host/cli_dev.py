"""The plugin developer's commands: ``validate PATH``, ``new NAME [--template T]`` and
``test [ID]``.

``python -m host test ID``: a plugin's own ``deno test`` files, run by the Deno the host uses
with read access to the plugin's directory only (more with flags after ``--``) and the runtime's
import map, so that ``"@plugin-host/kit"`` resolves as in a worker. A plugin with no test file
fails: a test command must never pass without testing anything."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from .cli_output import UsageError, inspector_targets, print_json
from .config import HostConfig
from .errors import InvalidConfig, places
from .plugins.discovery import SUFFIXES
from .plugins.lifecycle import PluginEvent
from .plugins.scaffold import new_plugin, validate
from .plugins.templates import TEMPLATES
from .plugins.usage_scripts import discover_sources
from .runtime import IMPORT_MAP, find_deno, find_runtime_entry

log = logging.getLogger("host.cli")

NO_TESTS = 1
TEST_SUFFIXES = tuple(f"{sep}test{ext}" for sep in ("_", ".") for ext in SUFFIXES)


def _test_files(src: Any) -> list[Path]:
    """A directory plugin's own test files (a single-file plugin has none of its own)."""
    if not src.root.is_dir() or src.module.parent == src.root.parent:
        return []
    return sorted(p for p in src.root.rglob("*") if p.name.endswith(TEST_SUFFIXES))


async def test_plugin(args: argparse.Namespace, config: HostConfig) -> int:
    """``test ID``: that plugin's tests; ``test``: every plugin's that has some, one ``deno test``
    each (with only its own directory readable), exit 1 if any fails or none has tests."""
    sources = {s.id: s for s in discover_sources(config)}
    if args.id is not None and args.id.startswith("-"):  # `test -- --flag`: no ID, flags for deno
        args.deno_args, args.id = [args.id, *args.deno_args], None
    if args.id is not None and args.id not in sources:
        raise UsageError(f"no plugin {args.id!r} in {', '.join(map(str, config.plugin_dirs))}")
    chosen = [sources[args.id]] if args.id is not None else [sources[k] for k in sorted(sources)]
    tested = {src.id: files for src in chosen if (files := _test_files(src))}
    if not tested:
        where = (f"{args.id} has no test files" if args.id is not None else "no plugin has test files") + \
            " (*_test.ts, *.test.ts, ...) in " + \
            (str(sources[args.id].root) if args.id is not None else ", ".join(map(str, config.plugin_dirs)))
        print(f"error: {where}; `python -m host new NAME` writes one", file=sys.stderr)
        return NO_TESTS
    entry = find_runtime_entry(config.runtime_entry)
    env = {**os.environ, **({} if sys.stdout.isatty() else {"NO_COLOR": "1"})}  # no escapes in a pipe or a log
    failed = []
    for pid, files in tested.items():
        src = sources[pid]
        if len(chosen) > 1:
            print(f"== {pid} ({len(files)} test file(s))", flush=True)
        # the globals the worker defines (PluginError, ErrorTypes): their types (deno.test.json
        # names plugin.d.ts) and the values themselves (test_globals.ts, run first)
        argv = [find_deno(config.deno_path), "test", "--no-prompt", "--no-remote", "--no-npm",
                f"--config={entry.parent / TEST_CONFIG}", "--no-lock", f"--import-map={entry.parent / IMPORT_MAP}",
                f"--preload={entry.parent / TEST_GLOBALS}", f"--allow-read={src.root}", *args.deno_args,
                *map(str, files)]
        if subprocess.run(argv, cwd=src.root, env=env, check=False).returncode != 0:
            failed.append(pid)
    if len(chosen) > 1:
        untested = sorted(s.id for s in chosen if s.id not in tested)
        print(f"tested {len(tested)} plugin(s), {len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
              f"{'; no test files: ' + ', '.join(untested) if untested else ''}")
    return 1 if failed else 0


TEST_CONFIG = "deno.test.json"  # beside the runtime entry
TEST_GLOBALS = "test_globals.ts"


async def validate_plugin(args: argparse.Namespace, config: HostConfig) -> int:
    report = await validate(args.path, config)
    if args.json:
        print_json(report)
    elif report.valid:
        print(f"ok: {report.id}@{report.version} ({report.path})")
        print(f"  exports: {', '.join(report.exports) or '-'}")
        shown = json.dumps(report.permissions) if report.permissions else "none"
        if report.config_net and not report.permissions:
            shown = "none until configured"
        print(f"  permissions: {shown}")
        for entry, default in report.config_net.items():  # a grant the config decides
            key = entry[len("{config."):-1]
            print(f"  net {entry}: the host of config.{key}, " + (
                f"{default} by default" if default else "granted once it is set (no default)"))
        for finding in report.findings:
            print(f"  warning: {finding}")
    else:
        print(f"invalid: {report.path}: {report.error}", file=sys.stderr)
    return 0 if report.valid else 1


async def new(args: argparse.Namespace, config: HostConfig) -> int:
    plugins_dir = args.plugins or config.plugin_dirs[0]
    try:
        made = new_plugin(args.name, plugins_dir, args.template)
    except InvalidConfig as exc:
        raise UsageError(exc.message) from None
    for path in made:
        print(f"created {path}")
    test = f"python -m pytest {made[1]}" if made[1].suffix == ".py" else f"python -m host test {args.name}"
    print(f"next: {test}" if args.template == "usage-script" else f"next: python -m host validate {made[0].parent}; {test}")
    return 0


_DENO_FRAME = re.compile(r"(?m)^[^\S\n]*\d+ \|")  # not ^\s*: 9 s on "\n" * 32768, a try at every line


def code_frame(text: str, context: int = 1) -> str:
    """The source around the first ``/file:line:column`` in ``text`` (a reason, a stack) that
    names a readable file: the line with a caret under the column, and ``context`` lines either
    side; empty when there is none."""
    for name, line, column in places(text):  # errors.py: in time proportional to the text
        path = Path(name)
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if not 0 < line <= len(lines):
            continue
        out = [f"  {path}:{line}:{column}"]
        for n in range(max(1, line - context), min(len(lines), line + context) + 1):
            out.append(f"  {'>' if n == line else ' '} {n:4} | {lines[n - 1]}")
            if n == line:
                out.append(f"         | {' ' * max(column - 1, 0)}^")
        return "\n".join(out)
    return ""


def dev_banner(event: PluginEvent, write: Callable[[str], object] | None = None) -> None:
    """``serve --dev``: what changed, in one banner a reload; a failure with the code it points at.
    ``write``: by default sys.stderr's, looked up at each banner (never at import)."""
    write = write or sys.stderr.write
    if event.kind == "reloaded":
        write(f"\n==> {event.plugin} {event.version or ''} reloaded\n")
    elif event.kind == "approval_pending":  # helper-113: else the edit seemed to change nothing
        write(f"\n==> {event.plugin} {event.version or ''} waits for approval, the version before keeps serving"
              f"\n    {event.reason}\n")
    elif event.kind == "reload_failed" or event.state == "error":
        reason = event.reason or "no reason given"
        frame = "" if _DENO_FRAME.search(reason) else code_frame(reason)  # Deno's own frame, if any
        write(f"\n==> {event.plugin}: {'reload failed, the old version keeps serving' if event.kind == 'reload_failed' else 'error'}"
              f"\n    {reason}\n" + (frame + "\n" if frame else ""))


async def announce_inspector(plugin: str, address: str, *, paused: bool = False, timeout: float = 5.0) -> None:
    """Print where DevTools attach to ``plugin``'s worker under the inspector at ``address``."""
    try:
        targets = await inspector_targets(address, timeout)
    except TimeoutError:
        print(f"inspector: nothing listens on {address} (is {plugin} running?)", file=sys.stderr)
        return
    for t in targets:
        print(f"inspector for {plugin}: {t.get('devtoolsFrontendUrl')}\n"
              f"  websocket: {t.get('webSocketDebuggerUrl')}  (or open chrome://inspect)", file=sys.stderr)
    if paused:
        print(f"  {plugin}'s worker waits for the debugger: attach, set breakpoints, resume (F8)", file=sys.stderr)


@asynccontextmanager
async def debugger_wait(args: argparse.Namespace, config: HostConfig,
                        signals: AsyncIterator[Any] | None = None) -> AsyncIterator[Callable[[], None]]:
    """The host's start (the body), ended by a stop signal from ``signals`` that comes before the
    body calls what this yields (once started): the body is then skipped (the exception leaving
    it is absorbed here). A start may wait long: on a ``[state] database`` that accepts and never
    answers (its connect deadline), or with ``--inspect-brk ID`` on a debugger: the worker runs no
    code, the handshake included, until one attaches and resumes it (meanwhile the DevTools URL
    is printed as soon as the inspector answers)."""
    helpers = anyio.CancelScope()
    brk = getattr(args, "inspect_brk", None)
    if not brk and signals is None:
        yield helpers.cancel
        return
    address = config.inspect_for(brk) if brk else None
    assert address is not None or not brk

    async def stop_on_signal(startup: anyio.CancelScope) -> None:
        assert signals is not None
        async for sig in signals:
            if brk:
                print(f"stopped while {brk} waited for the debugger", file=sys.stderr)
            else:
                log.info("received %s while starting: stopping", signal.Signals(sig).name)
            startup.cancel()
            return

    async def help_while_waiting(startup: anyio.CancelScope) -> None:
        with helpers:  # cancelled once the host has started
            async with anyio.create_task_group() as tg:
                if brk:
                    tg.start_soon(lambda: announce_inspector(brk, address or "", paused=True, timeout=float("inf")))
                if signals is not None:
                    tg.start_soon(stop_on_signal, startup)

    failed: Exception | None = None
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as startup:
            tg.start_soon(help_while_waiting, startup)
            try:
                yield helpers.cancel
            except Exception as exc:  # raised as it is, not in the task group's ExceptionGroup
                failed = exc
            finally:
                helpers.cancel()
    if failed is not None:
        raise failed


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    s = add("validate", "check a plugin as the host would load it, without starting a host")
    s.add_argument("path", help="the plugin's file or directory")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=validate_plugin)

    s = add("new", "scaffold a working plugin (mod.ts) and its test (mod_test.ts)")
    s.add_argument("name", help="the plugin id: lowercase letters, digits, - and _")
    s.add_argument("--template", choices=TEMPLATES, default="basic",
                   help="basic (a function), balance (a relay station's balance, tested with pytest against a "
                        "fake), event (onEvent), usage-script (a cc-switch usage script, tested likewise)")
    s.set_defaults(run=new)

    s = sub.add_parser("test", help="run a plugin's own deno test files, or every plugin's that has some "
                       "(exit 1 if one fails or there are none)", parents=[common])
    s.add_argument("id", nargs="?", help="the plugin (default: every plugin with test files)")
    s.add_argument("deno_args", nargs="*", metavar="DENO_FLAG",
                   help="more flags for deno test after --, e.g. -- --allow-net=api.example.com")
    s.set_defaults(run=test_plugin)


__all__ = ["announce_inspector", "code_frame", "debugger_wait", "dev_banner", "register", "test_plugin"]
