"""``python -m host``: serve plugins over HTTP, or call and inspect them from the shell.
Exit codes: 0 ok, 1 plugin or call failure, 2 usage error."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

import anyio
import msgspec

from .config import HostConfig
from .config_file import load_config
from .errors import HostError, InvalidConfig
from .info import json_default
from .plugin_host import PluginHost
from .private_files import write_private
from .scaffold import new_plugin, validate

log = logging.getLogger("host.cli")


def _config(args: argparse.Namespace) -> HostConfig:
    """The config file (``--config`` or $PLUGIN_HOST_CONFIG) and the environment, with the
    flags that were given on top; a flag not given leaves the file's value."""
    overrides: dict[str, Any] = {"plugins_dir": args.plugins, "state_dir": args.state_dir}
    server = {k: getattr(args, k, None) for k in ("host", "port", "admin_token", "enable_execute")}
    overrides["server"] = {k: v for k, v in server.items() if v is not None} or None  # None: not given
    return load_config(args.config, **overrides)


def _json_text(data: Any) -> str:
    enc = msgspec.json.encode(data, enc_hook=json_default)
    return json.dumps(json.loads(enc), indent=2, ensure_ascii=False) + "\n"


def _print_json(data: Any) -> None:
    sys.stdout.write(_json_text(data))


async def _serve(args: argparse.Namespace, config: HostConfig) -> int:
    from aiohttp import web

    from .server import DRAINING, create_app

    srv = config.server
    host = PluginHost(config)
    app = create_app(host, admin_token=srv.admin_token, enable_execute=srv.enable_execute,
                     max_body=srv.max_body_bytes)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=srv.shutdown_grace)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        # HTTP first: /healthz/live answers while the plugins start, /healthz/ready says 503.
        await runner.setup()
        try:
            await web.TCPSite(runner, srv.host, srv.port).start()
            async with host:
                if srv.enable_execute:
                    await host.warm_execute()
                names = ", ".join(f"{i.id} ({i.state})" for i in host.plugins()) or "none"
                log.warning("serving on http://%s:%s  plugins: %s", srv.host, srv.port, names)
                async for sig in signals:
                    log.warning("received %s: draining and stopping", signal.Signals(sig).name)
                    break
                app[DRAINING].set()
                await runner.cleanup()  # stop accepting, let calls in flight finish (shutdown_grace)
        finally:
            await runner.cleanup()
    return 0


async def _list(args: argparse.Namespace, config: HostConfig) -> int:
    async with PluginHost(config) as host:
        infos = host.plugins()
    if args.json:
        _print_json(infos)
        return 0
    rows = [("ID", "STATE", "VERSION", "EXPORTS", "ERROR")]
    rows += [(i.id, i.state, i.version or "-", ",".join(i.exports), i.error or "") for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in range(4)) + ("  " + r[4] if r[4] else ""))
    return 0


async def _info(args: argparse.Namespace, config: HostConfig) -> int:
    async with PluginHost(config) as host:
        info = host.plugin(args.id)  # PluginNotFound: exit 1
    _print_json(info)
    return 0 if info.state in ("running", "degraded") else 1


async def _call(args: argparse.Namespace, config: HostConfig) -> int:
    try:
        call_args = [json.loads(a) for a in args.args]
    except ValueError as exc:
        raise _UsageError(f"arguments must be JSON values: {exc}") from None
    async with PluginHost(config) as host:
        result = await host.call(args.id, args.fn, *call_args, timeout=args.timeout)
    _print_json(result)
    return 0


async def _execute(args: argparse.Namespace, config: HostConfig) -> int:
    if args.file == "-":
        code = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            code = f.read()
    try:
        input_ = json.loads(args.input) if args.input is not None else None
    except ValueError as exc:
        raise _UsageError(f"--input must be JSON: {exc}") from None
    async with PluginHost(config) as host:
        out = await host.execute(code, input_, entry=args.entry, timeout=args.timeout)
    _print_json(out)
    return 0 if out.ok else 1


async def _validate(args: argparse.Namespace, config: HostConfig) -> int:
    report = await validate(args.path, config)
    if args.json:
        _print_json(report)
    elif report.valid:
        print(f"ok: {report.id}@{report.version} ({report.path})")
        print(f"  exports: {', '.join(report.exports) or '-'}")
        print(f"  permissions: {json.dumps(report.permissions) if report.permissions else 'none'}")
        for finding in report.findings:
            print(f"  warning: {finding}")
    else:
        print(f"invalid: {report.path}: {report.error}", file=sys.stderr)
    return 0 if report.valid else 1


async def _new(args: argparse.Namespace, config: HostConfig) -> int:
    plugins_dir = args.plugins or config.plugin_dirs[0]
    try:
        made = new_plugin(args.name, plugins_dir)
    except InvalidConfig as exc:
        raise _UsageError(exc.message) from None
    for path in made:
        print(f"created {path}")
    print(f"next: python -m host validate {made[0].parent}")
    return 0


def _passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase from the variable ``--passphrase-env`` names (never from argv)."""
    if args.passphrase_env is None:
        return None
    value = os.environ.get(args.passphrase_env)
    if not value:
        raise _UsageError(f"--passphrase-env: ${args.passphrase_env} is not set or empty")
    return value


class _UsageError(Exception):
    pass


async def _config_export(args: argparse.Namespace, config: HostConfig) -> int:
    passphrase = _passphrase(args)
    async with PluginHost(config) as host:
        document = await host.export_config(args.plugin, passphrase=passphrase)
    if args.out:
        write_private(args.out, _json_text(document).encode())
    else:
        _print_json(document)
    return 0


async def _config_import(args: argparse.Namespace, config: HostConfig) -> int:
    passphrase = _passphrase(args)
    try:
        if args.file == "-":
            document = json.loads(sys.stdin.read())
        else:
            with open(args.file, encoding="utf-8") as f:
                document = json.load(f)
    except (OSError, ValueError) as exc:
        raise _UsageError(f"{args.file}: cannot read a JSON document ({exc})") from None
    async with PluginHost(config) as host:
        stored = await host.import_config(document, passphrase=passphrase, replace=args.replace)
    _print_json(stored)  # secrets masked
    return 0


def _common_options(ap: argparse.ArgumentParser, *, defaults: bool) -> None:
    keep = {} if defaults else {"default": argparse.SUPPRESS}
    # None: not given, so the config file's value (or the default) stands.
    ap.add_argument("--config", metavar="FILE",
                    help="host.toml to read (default: $PLUGIN_HOST_CONFIG, else none)",
                    **({"default": None} if defaults else keep))
    ap.add_argument("--plugins", help="plugin directory (default: the config's, else ./plugins)",
                    **({"default": None} if defaults else keep))
    ap.add_argument("--state-dir", help="state directory (default: ~/.local/state/plugin-host)",
                    **({"default": None} if defaults else keep))
    ap.add_argument("--debug", action="store_true", help="stream every worker's console to stderr",
                    **({} if defaults else keep))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m host", description="Plugin Host: sandboxed Deno plugins.")
    _common_options(ap, defaults=True)
    # The same options are accepted after the command too (`serve --plugins DIR`).
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    sub = ap.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    s = add("serve", "serve the plugins over HTTP")
    s.add_argument("--host", help="address to bind (default: [server] host, else 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: [server] port, else 8787)")
    s.add_argument("--admin-token", help="token required by mutating endpoints and /execute")
    s.add_argument("--enable-execute", action=argparse.BooleanOptionalAction, default=None,
                   help="enable POST /execute (default: [server] enable_execute, else off)")
    s.set_defaults(run=_serve)

    s = add("list", "list plugins and their state")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_list)

    s = add("info", "one plugin as JSON: state, version, exports, permissions, workers, counters")
    s.add_argument("id", help="ID or ID@VERSION")
    s.set_defaults(run=_info)

    s = add("call", "call a plugin function; prints the result as JSON")
    s.add_argument("id")
    s.add_argument("fn")
    s.add_argument("args", nargs="*", help="arguments, each a JSON value")
    s.add_argument("--timeout", type=float)
    s.set_defaults(run=_call)

    s = add("execute", "run a module's default export (seed 001's /execute)")
    s.add_argument("file", help="a .js file, or - for stdin")
    s.add_argument("--input", help="JSON input")
    s.add_argument("--entry", default="default")
    s.add_argument("--timeout", type=float)
    s.set_defaults(run=_execute)

    s = add("validate", "check a plugin as the host would load it, without starting a host")
    s.add_argument("path", help="the plugin's file or directory")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_validate)

    s = add("new", "scaffold a working plugin (mod.ts) and its test (mod_test.ts)")
    s.add_argument("name", help="the plugin id: lowercase letters, digits, - and _")
    s.set_defaults(run=_new)

    s = add("config", "plugin configs: export and import (secrets stay encrypted)")
    config_sub = s.add_subparsers(dest="config_command", required=True)
    passphrase_help = ("encrypt the secrets with a passphrase read from this environment variable "
                       "(default: the host key, usable only by hosts that share it)")
    c = config_sub.add_parser("export", help="print (or --out) the plugins' configs as JSON", parents=[common])
    c.add_argument("--plugin", metavar="ID", help="only this plugin (default: every plugin with a config)")
    c.add_argument("--passphrase-env", metavar="VAR", help=passphrase_help)
    c.add_argument("--out", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    c.set_defaults(run=_config_export)
    c = config_sub.add_parser("import", help="validate, store and apply an export", parents=[common])
    c.add_argument("file", help="a file written by `config export`, or - for stdin")
    c.add_argument("--passphrase-env", metavar="VAR", help="the variable holding the export's passphrase")
    c.add_argument("--replace", action="store_true",
                   help="replace each plugin's config (default: merge into the stored one)")
    c.set_defaults(run=_config_import)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.debug:
        logging.getLogger("host.plugin").setLevel(logging.DEBUG)
    try:
        config = _config(args)
    except InvalidConfig as exc:  # a bad config file or variable is a usage error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return anyio.run(args.run, args, config)
    except _UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
