"""``python -m host test ID``: a plugin's own ``deno test`` files, run by the Deno the host uses
with read access to the plugin's directory only (more with flags after ``--``) and the runtime's
import map, so that ``"@plugin-host/kit"`` resolves as in a worker. A plugin with no test file
fails: a test command must never pass without testing anything."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .cli_output import UsageError
from .config import HostConfig
from .plugins.discovery import SUFFIXES
from .plugins.usage_scripts import discover_sources
from .runtime import IMPORT_MAP, find_deno, find_runtime_entry

NO_TESTS = 1
TEST_SUFFIXES = tuple(f"{sep}test{ext}" for sep in ("_", ".") for ext in SUFFIXES)


async def test_plugin(args: argparse.Namespace, config: HostConfig) -> int:
    sources = {s.id: s for s in discover_sources(config)}
    src = sources.get(args.id)
    if src is None:
        raise UsageError(f"no plugin {args.id!r} in {', '.join(map(str, config.plugin_dirs))}")
    files = sorted(p for p in src.root.rglob("*") if p.name.endswith(TEST_SUFFIXES)) if src.root.is_dir() else []
    if src.module.parent == src.root.parent or not files:  # a single-file plugin has no test files of its own
        print(f"error: {args.id} has no test files (*_test.ts, *.test.ts, ...) in {src.root}; "
              f"`python -m host new NAME` writes one", file=sys.stderr)
        return NO_TESTS
    entry = find_runtime_entry(config.runtime_entry)
    argv = [find_deno(config.deno_path), "test", "--no-prompt", "--no-remote", "--no-npm", "--no-config", "--no-lock",
            f"--import-map={entry.parent / IMPORT_MAP}", f"--allow-read={src.root}", *args.deno_args, *map(str, files)]
    env = {**os.environ, **({} if sys.stdout.isatty() else {"NO_COLOR": "1"})}  # no escapes in a pipe or a log
    return subprocess.run(argv, cwd=src.root, env=env, check=False).returncode


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("test", help="run a plugin's own deno test files (exit 1 if it has none)", parents=[common])
    s.add_argument("id")
    s.add_argument("deno_args", nargs="*", metavar="DENO_FLAG",
                   help="more flags for deno test after --, e.g. -- --allow-net=api.example.com")
    s.set_defaults(run=test_plugin)


__all__ = ["register", "test_plugin"]
