"""``python -m host``: serve plugins over HTTP, or call and inspect them from the shell.
Exit codes: 0 ok, 1 plugin or call failure, 2 usage error."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import msgspec

from . import _early_stop
from .balances.ccswitch_link import is_link
from .balances.result import BALANCE_CAPABILITY
from .cli_ccswitch import import_cc_switch
from .cli_commands import approve as _approve
from .cli_completion import finish_parser
from .cli_dev import announce_inspector, code_frame, debugger_wait
from .cli_dev import register as register_dev
from .cli_doctor import doctor
from .cli_grants import register as register_grants
from .cli_one_off import LOAD_GRACE, one_off
from .cli_output import (
    GuardedOutput,
    ListenError,
    Progress,
    TerminalText,
    UsageError,
    assignments,
    balances_table,
    json_text,
    json_value,
    passphrase_of,
    print_json,
    write_out,
)
from .cli_packages import register as register_packages
from .cli_plugins import register as register_plugins
from .cli_serve import serve
from .cli_serve import started as _started
from .cli_stations import register as register_stations
from .config import HostConfig, PluginSettings, check_inspect
from .config_file import load_config
from .control import control_client
from .errors import HostError, InvalidArguments, InvalidCode, InvalidConfig
from .event_loop import run_options
from .logs import FORMATS, LEVELS, drain_logs, setup_logging, terminal_safe
from .plugin_host import PluginHost
from .plugins.discovery import check_plugin_dirs
from .plugins.settings import redacted
from .runtime import check_runtime_paths

log = logging.getLogger("host.cli")


def _config(args: argparse.Namespace) -> HostConfig:
    """The config file (``--config`` or $PLUGIN_HOST_CONFIG) and the environment, with the
    flags that were given on top; a flag not given leaves the file's value."""
    overrides: dict[str, Any] = {"plugins_dir": args.plugins, "state_dir": args.state_dir}
    server = {k: getattr(args, k, None) for k in ("host", "port", "admin_token", "enable_execute", "read_token",
                                                  "insecure_no_token", "allowed_hosts")}
    server["unix_socket"] = getattr(args, "unix", None)
    overrides["server"] = {k: v for k, v in server.items() if v is not None} or None  # None: not given
    return load_config(args.config, snapshot=getattr(args, "config_snapshot", None), **overrides)


async def _import_cc_switch(args: argparse.Namespace, config: HostConfig) -> int:
    return await import_cc_switch(args, config, _started, PluginHost)


async def _balances(args: argparse.Namespace, config: HostConfig) -> int:
    async with _started(PluginHost(config), args) as host:
        progress = Progress(enabled=not args.debug)
        stations = [i.id for i in host.plugins() if BALANCE_CAPABILITY in i.capabilities]
        progress.update(f"querying {len(stations)} balance plugin(s)...")
        try:
            results = await host.query_balances(refresh=args.refresh, timeout=args.timeout)
        finally:
            progress.clear()
    if args.json:
        print_json(results)
    elif results:
        sys.stdout.write(balances_table(results))
    else:
        print("no balance plugins (none declares the \"balance\" capability)", file=sys.stderr)
    return 0 if all(b.usable for b in results) else 1


async def _call(args: argparse.Namespace, config: HostConfig) -> int:
    call_args = []
    for i, a in enumerate(args.args, 1):
        try:
            call_args.append(json_value(a))
        except ValueError as exc:  # a bare word was meant as a string (helper-113: no hint said so)
            quoted = f"; a string is quoted as JSON, in the shell's quotes: '{msgspec.json.encode(a[:40]).decode()}'" if a.strip() and (
                a.strip()[0].isalpha() or a.strip()[0] == "_") else ""
            raise UsageError(f"argument {i} ({a[:40]!r}) must be a JSON value: {exc}{quoted}") from None
    async with debugger_wait(args, config) as started, _started(PluginHost(config), args) as host:
        started()
        if args.inspect:
            await announce_inspector(args.inspect, config.inspect_for(args.inspect) or "")
        if args.with_config:  # the config its workers got (secrets opened), never printed
            await host._registry.settle(args.id)  # loaded in the background (_run)
            call_args.insert(0, host.effective_config(args.id))
        result = await host.call(args.id, args.fn, *call_args, timeout=args.timeout)
        print_json(redacted(result, host.masked))  # an answer echoing its config: its secrets masked (as HTTP)
        await host.settled(LOAD_GRACE)
    return 0


async def _execute(args: argparse.Namespace, config: HostConfig) -> int:
    try:  # UTF-8, a BOM or not: stdin's locale decoding let bytes that are not through as surrogates
        if args.file == "-":
            code = sys.stdin.buffer.read().decode("utf-8-sig")
        else:
            with open(args.file, encoding="utf-8-sig") as f:
                code = f.read()
    except UnicodeDecodeError as exc:
        raise UsageError(f"{args.file}: the code is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read the code ({exc})") from None
    try:
        input_ = json_value(args.input) if args.input is not None else msgspec.UNSET
    except ValueError as exc:
        raise UsageError(f"--input must be a JSON value: {exc}") from None
    try:
        permissions = json_value(args.permissions) if args.permissions is not None else None
    except ValueError as exc:
        raise UsageError(f"--permissions must be JSON: {exc}") from None
    async with _started(PluginHost(config), args) as host:
        try:
            out = await host.execute(code, input_, entry=args.entry, timeout=args.timeout, permissions=permissions,
                                     tools=args.tool, by="cli",  # a .ts file is TypeScript
                                     language="typescript" if args.file.endswith((".ts", ".mts")) else "javascript")
        except InvalidConfig as exc:  # an unknown tool, a malformed --permissions: a usage error
            raise UsageError(exc.message) from None
        print_json(out)
        await host.settled(LOAD_GRACE)
    return 0 if out.ok else 1


async def _config_get(args: argparse.Namespace, config: HostConfig) -> int:
    async with _started(PluginHost(config), args) as host:
        values = host.get_config(args.id)  # secrets masked
    if args.key is None:
        print_json(values)
    elif args.key in values:
        print_json(values[args.key])
    else:
        print(f"error: {args.id} has no config value {args.key!r}", file=sys.stderr)
        return 1
    return 0


async def _config_set(args: argparse.Namespace, config: HostConfig) -> int:
    async with control_client(config.state_path) as server:
        if server is not None:  # a server runs on this state directory: it stores and applies it
            values = assignments(args, await server.request("GET", f"/api/plugins/{quote(args.id)}/schema"))
            stored = await server.request("PUT", f"/api/plugins/{quote(args.id)}/config"
                                          + ("?replace=1" if args.replace else ""), values)
        else:
            async with _started(PluginHost(config), args) as host:
                values = assignments(args, host.config_schema(args.id))
                stored = await host.set_config(args.id, values, replace=args.replace)
    print_json(stored)  # secrets masked
    return 0


async def _config_export(args: argparse.Namespace, config: HostConfig) -> int:
    passphrase = passphrase_of(args)
    async with _started(PluginHost(config), args) as host:
        document = await host.export_config(args.plugin, passphrase=passphrase)
    if args.out:
        write_out(args.out, json_text(document).encode())
    else:
        print_json(document)
    return 0


async def _config_import(args: argparse.Namespace, config: HostConfig) -> int:
    passphrase = passphrase_of(args)
    try:
        if args.file == "-":
            document = json_value(sys.stdin.read())
        else:
            with open(args.file, encoding="utf-8") as f:
                document = json_value(f.read())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{args.file}: cannot read a JSON document ({exc})") from None
    async with control_client(config.state_path) as server:
        if server is not None:  # over the owner-only control socket: the passphrase stays local
            stored = await server.request("POST", "/api/config/import", {
                "document": document, "passphrase": passphrase, "replace": args.replace})
        else:
            async with _started(PluginHost(config), args) as host:
                stored = await host.import_config(document, passphrase=passphrase, replace=args.replace)
    print_json(stored)  # secrets masked
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
    ap.add_argument("--debug", action="store_true",
                    help="stream every worker's console and lifecycle to stderr, prefixed [plugin:ID#N]",
                    **({} if defaults else keep))
    ap.add_argument("--log-level", choices=LEVELS,
                    help="least severe level logged (default: $PLUGIN_HOST_LOG_LEVEL, else info for "
                         "serve and warning for the other commands)", **({"default": None} if defaults else keep))
    ap.add_argument("--log-format", choices=FORMATS,
                    help="text lines, or one JSON object a line (default: $PLUGIN_HOST_LOG_FORMAT, else text)",
                    **({"default": None} if defaults else keep))
    ap.add_argument("--inspect", metavar="ID",
                    help="run plugin ID as one worker under the Deno inspector on 127.0.0.1 and print "
                         "the DevTools URL", **({"default": None} if defaults else keep))
    ap.add_argument("--inspect-brk", metavar="ID", help="like --inspect, but the worker waits for the debugger "
                    "before running any code", **({"default": None} if defaults else keep))
    ap.add_argument("--inspect-port", type=int, metavar="PORT", help="the inspector's port (default: 9229)",
                    **({"default": 9229} if defaults else keep))


def program_name() -> str:
    """The name the CLI was invoked by: ``plugin-host`` (the installed script) or ``python -m host``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("__main__.py", "-c") and not name.endswith(".py") else "python -m host"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=program_name(), description="Plugin Host: sandboxed Deno plugins.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    s.add_argument("--unix", metavar="PATH",
                   help="listen on this Unix socket (mode 0600) instead of --host/--port")
    s.add_argument("--admin-token", help="token required by mutating endpoints and /execute, and to read "
                   "(prefer $PLUGIN_HOST_ADMIN_TOKEN: argv is visible to local users)")
    s.add_argument("--read-token", help="a token that may read (GET /api/..., /metrics) but change nothing "
                   "(prefer $PLUGIN_HOST_READ_TOKEN)")
    s.add_argument("--allowed-host", dest="allowed_hosts", action="append", metavar="HOST[:PORT]",
                   help="a Host name the server may be reached by besides its own addresses (a reverse "
                        "proxy's); repeatable (default: [server] allowed_hosts)")
    s.add_argument("--enable-execute", action=argparse.BooleanOptionalAction, default=None,
                   help="enable POST /execute (default: [server] enable_execute, else off); needs an admin "
                        "token unless on --unix or with --insecure-no-token")
    s.add_argument("--dev", action="store_true",
                   help="for plugin authors: --debug, the plugin directories rescanned every 0.25 s, a banner for "
                        "each reload, and a failure shown with the code it points at")
    s.add_argument("--insecure-no-token", action="store_true", default=None,
                   help="allow --enable-execute without an admin token: anyone who reaches the port can run code")
    s.add_argument("--processes", metavar="N|auto", help="host processes sharing the address and the state "
                   "directory, each with its own workers (default: [server] processes, else 1; auto: one per core)")
    for option in ("--listen-fd", "--process-index", "--peers-dir", "--config-snapshot"):  # --processes's children
        s.add_argument(option, type=int if option in ("--listen-fd", "--process-index") else str,
                       help=argparse.SUPPRESS)
    s.add_argument("--join-late", action="store_true", help=argparse.SUPPRESS)  # a child started again
    s.set_defaults(run=serve)


    s = add("balances", "every station's balance, as a table (exit 1 if any failed or says its key is invalid); "
                        "stations|add|set|rm|test manage the stations")
    s.add_argument("--refresh", action="store_true", help="ask every station now, bypassing the cache")
    s.add_argument("--json", action="store_true")
    s.add_argument("--timeout", type=float, help="seconds per station (default: [balances] timeout)")
    s.set_defaults(run=_balances)
    register_stations(s, common, _started, PluginHost)

    s = add("import-cc-switch", "turn the usage queries of cc-switch's providers into balance plugins and stations")
    s.add_argument("--db", type=lambda text: text if is_link(text) else Path(text),
                   help="cc-switch's database, its SQL export, a 3.6-3.7 config.json or a provider's "
                        "ccswitch://v1/import deep link (default: ~/.cc-switch/cc-switch.db)")
    s.add_argument("--dry-run", action="store_true", help="show what would be created; write nothing")
    s.set_defaults(run=_import_cc_switch)

    s = add("call", "call a plugin function; prints the result as JSON")
    s.add_argument("id")
    s.add_argument("fn")
    s.add_argument("args", nargs="*", help="arguments, each a JSON value")
    s.add_argument("--timeout", type=float)
    s.add_argument("--with-config", action="store_true",
                   help="pass the plugin's stored config (secrets included, never printed) as the first argument, "
                        "as the host calls queryBalance: `call deepseek queryBalance --with-config`")
    s.set_defaults(run=_call)

    s = add("execute", "run a module's default export (Isolate's /execute)")
    s.add_argument("file", help="a .js file, a .ts file (TypeScript), or - for stdin (JavaScript)")
    s.add_argument("--input", help="the entry's argument, as JSON (default: undefined)")
    s.add_argument("--entry", default="default", help="the export to call (default: default)")
    s.add_argument("--timeout", type=float, help="seconds (default: [execute] timeout, 3)")
    s.add_argument("--tool", action="append", metavar="NAME", help="a tool the code may use ([execute.tools] too)")
    s.add_argument("--permissions", metavar="JSON",
                   help='what the code may do, e.g. \'{"net": ["api.example.com"]}\' (default: nothing)')
    s.set_defaults(run=_execute)

    s = add("approve", "approve the grants a plugin's new version asks for beyond its approved ones "
                       "(a running server applies it at its next rescan)")
    s.add_argument("id", help="the plugin id")
    s.set_defaults(run=_approve)

    s = add("config", "plugin configs: get, set, export and import (secrets stay masked or encrypted)")
    config_sub = s.add_subparsers(dest="config_command", required=True)
    c = config_sub.add_parser("get", help="a plugin's config as JSON, secrets masked", parents=[common])
    c.add_argument("id")
    c.add_argument("key", nargs="?", help="only this value")
    c.set_defaults(run=_config_get)
    c = config_sub.add_parser("set", help="validate, store and apply config values (restarts the plugin)",
                              parents=[common])
    c.add_argument("id")
    c.add_argument("values", nargs="*", metavar="KEY=VALUE", help="VALUE is read as JSON if it is JSON, "
                   "else as a string: region=us retries=3 verbose=true")
    c.add_argument("--from-env", action="append", metavar="KEY=VAR",
                   help="take KEY's value from $VAR (for secrets: not on the command line); repeatable")
    c.add_argument("--file", metavar="F", help="values from a JSON (or .toml) file, before KEY=VALUE and --from-env")
    c.add_argument("--replace", action="store_true", help="replace the stored config (default: merge)")
    c.set_defaults(run=_config_set)
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
    register_plugins(sub, config_sub, common, _started, PluginHost)
    register_grants(sub, common, _started, PluginHost)
    register_dev(sub, common)
    register_packages(sub, common)
    s = add("doctor", "check what a host on this configuration needs: deno, the state directory, the secret "
                      "key, [state] database, plugin directories, redis, the port (exit 1 if something fails)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=doctor)
    finish_parser(ap, common)  # `completion`, and the examples under every command's help
    return ap


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("plugin-host")
    except PackageNotFoundError:
        return "(source tree)"


STACK_LINES = 8  # of a plugin's stack under --debug
READS_PLUGINS = ("list", "info", "call", "balances")  # commands whose answer comes from the plugins
# commands whose answer is the workers a host starts (list and info without a server: a plugin
# whose workers cannot start is in error there); every other one starts them only as it calls
SHOWS_WORKERS = ("serve", "list", "info", "status", "doctor")


def stdio_open() -> None:
    """File descriptors 0-2 open, on /dev/null where the caller closed them (``serve >&-``), and
    sys.stdin/stdout/stderr set: else the next socket the host opens takes fd 1 or 2 (uvloop then
    aborted `serve` at its exit closing it, and log lines would go into that socket), and every
    command failed at its first word to a ``None`` stderr, with nothing said."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False,  # noqa: SIM115 (for the process)
                                    errors="backslashreplace"))
        elif fd and hasattr(stream := getattr(sys, name), "reconfigure"):
            # a stdout in an encoding that cannot hold a plugin's "✓" (LANG=en_US.ISO-8859-1,
            # PYTHONIOENCODING=latin-1) wrote a traceback instead of the answer (helper-111)
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    stdio_open()
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if args.command != "serve":  # serve keeps them until it listens for its own (cli_serve.py)
        _early_stop.release()
    args.argv = list(sys.argv[1:] if argv is None else argv)  # serve --processes: its children's
    # KEY=VALUE after an option (`balances add x --plugin p baseUrl=...`): argparse leaves a
    # nargs="*" positional behind once it has matched it empty; they are the command's values.
    if extra and isinstance(getattr(args, "values", None), list) and all(
            "=" in e and not e.startswith("-") for e in extra):
        args.values += extra
    elif extra:
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    level = args.log_level or os.environ.get("PLUGIN_HOST_LOG_LEVEL") or (
        "info" if args.command == "serve" else "warning")
    fmt = args.log_format or os.environ.get("PLUGIN_HOST_LOG_FORMAT") or "text"
    for value, given, where, allowed in (
            (level, args.log_level, "PLUGIN_HOST_LOG_LEVEL", LEVELS), (fmt, args.log_format, "PLUGIN_HOST_LOG_FORMAT", FORMATS)):
        if value not in allowed:  # which setting says so: the flag, or a variable set long ago
            setting = ("--log-level" if where.endswith("LEVEL") else "--log-format") if given else f"${where}"
            print(f"error: {setting} is {terminal_safe(value)!r}: it must be one of {', '.join(allowed)}", file=sys.stderr)
            return 2
    args.debug = args.debug or getattr(args, "dev", False)
    setup_logging(level, fmt, debug=args.debug)
    # what is printed from here on: a full disk under `> file` is one line (GuardedOutput), and a
    # plugin's words never drive the terminal (both; logging holds the stream itself)
    stdout, sys.stdout = sys.stdout, GuardedOutput(sys.stdout)
    stderr, sys.stderr = sys.stderr, TerminalText(sys.stderr)
    try:
        return _run(args)
    finally:
        drain_logs()
        sys.stdout, sys.stderr = stdout, stderr


def _run(args: argparse.Namespace) -> int:
    """The command, its config read first; errors said in one line, with their exit code."""
    try:
        config = _config(args)
        if inspected := args.inspect or args.inspect_brk:
            check_inspect(address := f"127.0.0.1:{args.inspect_port}", "--inspect-port")
            settings = msgspec.structs.replace(config.plugins.get(inspected) or PluginSettings(), inspect=address,
                                               inspect_brk=bool(args.inspect_brk))
            config.plugins = {**config.plugins, inspected: settings}
        if args.command not in SHOWS_WORKERS:
            config = one_off(config, args.command, getattr(args, "id", None))
        missing = [d for d in config.plugin_dirs if not d.is_dir()]
        if args.command in READS_PLUGINS and missing:  # else an empty list, exit 0, would hide a typo
            what = "is a file, not a directory" if missing[0].exists() else "does not exist"
            raise InvalidConfig(f"plugins directory {missing[0]} {what} (--plugins, or plugins_dir in the config file)")
        if args.command == "serve":  # serve: one made later is watched
            check_plugin_dirs(config.plugin_dirs)
        if args.command != "doctor":  # doctor says it among its checks
            check_runtime_paths(config)
        loop = run_options(config.server.event_loop)
    except InvalidConfig as exc:  # a bad config file or variable is a usage error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        code = anyio.run(args.run, args, config, **loop)
        sys.stdout.flush()  # here, where a failure is still an answer
        return code
    except UsageError as exc:
        drain_logs()  # what was logged before comes before the error
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (HostError, ListenError) as exc:
        drain_logs()
        where = getattr(exc, "where", None)  # where a plugin threw: the line to look at
        one = f"[process {args.process_index}] " if getattr(args, "process_index", None) is not None else ""
        print(f"{one}error: {exc}" + (f"\n  at {where}" if where else ""), file=sys.stderr)
        stack = getattr(exc, "stack", None)
        if args.debug and stack:  # the first frames, as the plugin's runtime saw them, and the code
            print("\n".join("  " + line.strip() for line in stack.splitlines()[1:STACK_LINES + 1]), file=sys.stderr)
            if frame := code_frame(where or ""):
                print(frame, file=sys.stderr)
        return 2 if isinstance(exc, InvalidArguments) and not isinstance(exc, InvalidCode) else 1  # a wrong call
    except KeyboardInterrupt:
        return 130
