"""What the command line prints besides JSON: aligned tables, ages, a progress line on a tty,
and the Deno inspector's DevTools address."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import stat as statmod
import sys
import tomllib
import unicodedata
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import msgspec

from .balances.result import BalanceResult
from .errors import HostError
from .info import json_default
from .logs import escape, json_safe, terminal_safe
from .plugins.lifecycle import STARTING, PluginEvent
from .security.private_files import write_private

if TYPE_CHECKING:
    from .config import HostConfig
    from .plugin_host import PluginHost

# What the CLI's command modules are given by cli.py (they import nothing of the facade): a
# host started with a progress line, and the host class to start.
Started = Callable[["PluginHost", argparse.Namespace], AbstractAsyncContextManager["PluginHost"]]
MakeHost = Callable[["HostConfig"], "PluginHost"]


def table(rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> str:
    """Rows (the first is the header) in aligned columns; columns in ``right`` align right;
    trailing spaces are dropped. Each cell on one line, its control characters written out
    (``logs.escape``): a plugin's export name or error cannot add a row of its own."""
    rows = [[escape(cell) for cell in r] for r in rows]
    widths = [max(columns(r[c]) for r in rows) for c in range(len(rows[0]))]

    def pad(cell: str, c: int) -> str:
        gap = " " * (widths[c] - columns(cell))
        return gap + cell if c in right else cell + gap

    lines = ("  ".join(pad(cell, c) for c, cell in enumerate(r)) for r in rows)
    return "".join(line.rstrip() + "\n" for line in lines)


def columns(text: str) -> int:
    """The terminal columns ``text`` takes: two for a wide (CJK) character, none for a combining
    mark (a table with "积分" in a cell was misaligned: len() counts characters)."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def first_line(text: str, limit: int = 100) -> str:
    """A table cell's worth of a message: its first line, cut at ``limit`` characters."""
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def age(then: dt.datetime, now: dt.datetime | None = None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(0, int(((now or dt.datetime.now(dt.UTC)) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _amount(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def balances_table(results: list[BalanceResult]) -> str:
    rows = [["PROVIDER", "BALANCE", "CURRENCY", "USED/QUOTA", "STATUS", "AGE", "ERROR"]]
    for b in results:
        status = "invalid" if b.invalid else {"success": "ok", "timeout": "timeout", "not_configured": "not configured"}.get(
            b.status, b.error_type or "error")
        used = "-" if b.quota is None and b.used_quota is None else f"{_amount(b.used_quota)}/{_amount(b.quota)}"
        rows.append([b.provider_name if b.provider_name == b.provider else f"{b.provider_name} ({b.provider})",
                     "unlimited" if b.unlimited else _amount(b.balance), b.currency or "-", used, status + (" (cached)" if b.cached else ""),
                     age(b.last_updated), first_line(b.error_message or "", 80)])
    return table(rows, right=(1, 3))


class Progress:
    """One status line on a terminal, rewritten in place and cleared at the end; nothing at
    all when ``stream`` is not a tty (a pipe, a file, a journal)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        stream = stream or sys.stderr
        self.stream: TextIO = getattr(stream, "raw", stream)  # its own escapes, not TerminalText's
        self.on = enabled and self.stream.isatty()
        self.shown = False

    def update(self, text: str) -> None:
        if self.on:  # the text (plugin ids, states) made safe, the line's own escapes kept
            self.stream.write("\r\x1b[2K" + terminal_safe(text))
            self.stream.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False


def start_progress(progress: Progress, plugins: Callable[[], list[Any]]) -> Callable[[PluginEvent], None]:
    """A plugin-event subscriber showing ``starting plugins: 2/5 (calc running)``."""

    def on_event(event: PluginEvent) -> None:
        infos = plugins()
        done = sum(i.state not in STARTING for i in infos)
        progress.update(f"starting plugins: {done}/{len(infos)} ({event.plugin} {event.state})")

    return on_event


async def inspector_targets(address: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The targets the Deno inspector at ``address`` (loopback) lists: each with its
    ``devtoolsFrontendUrl`` and ``webSocketDebuggerUrl``. Waits for it to listen and to list its
    target (it answers an empty list for a moment after it listens)."""

    def fetch() -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://{address}/json/list", timeout=2) as r:
            return json.loads(r.read())

    with anyio.fail_after(timeout):
        while True:
            try:
                if targets := await anyio.to_thread.run_sync(fetch):
                    return targets
            except OSError:
                pass
            await anyio.sleep(0.1)


# ---------------------------------------------------------------- command-line helpers

def json_text(data: Any) -> str:
    enc = msgspec.json.encode(data, enc_hook=json_default)
    text = json.dumps(json.loads(enc), indent=2, ensure_ascii=False) + "\n"
    return json_safe(text)  # the controls json leaves as they are, as JSON escapes: the same value


def print_json(data: Any) -> None:
    sys.stdout.write(json_text(data))


VALUES_FILE_MAX = 4 * 1024 * 1024  # bytes: a config is small; /dev/zero or a log file is not


def json_value(text: str) -> Any:
    """A JSON value given on the command line, read as strictly as the HTTP API reads a body:
    Python's json.loads takes NaN, Infinity and 1e400 (as inf), which a call then turned into
    null. ValueError saying why."""
    try:
        return msgspec.json.decode(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("it is not UTF-8 text") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ValueError(str(exc) if not isinstance(exc, RecursionError) else "nested too deep") from None


def values_file(path: Path) -> dict[str, Any]:
    """``config set --file``: an object of values, from a .toml file or JSON (else)."""
    try:
        with path.open("rb") as f:
            raw = f.read(VALUES_FILE_MAX + 1)
        if len(raw) > VALUES_FILE_MAX:
            raise UsageError(f"{path}: more than {VALUES_FILE_MAX} bytes; a file of config values is smaller")
        text = raw.decode("utf-8").removeprefix("\ufeff")  # a byte order mark some editors write
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: cannot read config values ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: must hold an object of config values, found {type(data).__name__}")
    return data


def assignments(args: argparse.Namespace, schema: dict[str, Any]) -> dict[str, Any]:
    """``KEY=VALUE`` (for a string field of the plugin's schema the text as it is, else VALUE
    read as JSON when it is JSON: ``retries=3``, ``verbose=true``) and ``--from-env KEY=VAR``
    (the value from $VAR: secrets stay out of argv and shell history)."""
    values: dict[str, Any] = {}
    for item in args.values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        if schema.get(key, {}).get("type") == "string":
            values[key] = raw  # userId=42 stays "42"
            continue
        try:
            values[key] = json_value(raw)
        except ValueError:
            values[key] = raw
    if getattr(args, "file", None):  # a JSON or TOML file of values (its secrets out of argv and history)
        values.update(values_file(Path(args.file)))
    for item in args.from_env or ():
        key, sep, var = item.partition("=")
        if not sep or not key or not var:
            raise UsageError(f"--from-env: expected KEY=VARIABLE, got {item!r}")
        if var not in os.environ:
            raise UsageError(f"--from-env: ${var} is not set")
        values[key] = os.environ[var]
    if not values and not args.replace:
        raise UsageError("nothing to set: give KEY=VALUE, --from-env KEY=VAR or --file F")
    return values


def passphrase_of(args: argparse.Namespace) -> str | None:
    """The passphrase from the variable ``--passphrase-env`` names (never from argv)."""
    if args.passphrase_env is None:
        return None
    value = os.environ.get(args.passphrase_env)
    if not value:
        raise UsageError(f"--passphrase-env: ${args.passphrase_env} is not set or empty")
    return value


class UsageError(Exception):
    """A command used wrongly: exit 2 with its message."""


def write_out(path: str, data: bytes, option: str = "--out") -> None:
    """``data`` to the file ``option`` names: a regular file (new, or through a link to one)
    written as write_private writes, atomically and mode 0600; what is not one (a FIFO a script
    reads, a terminal, a device) and what /dev or /proc name (/dev/stdout: whatever the shell
    opened, appended to) written through, never replaced by a file (before: all were replaced,
    as root /dev/full itself, and `--out /dev/stdout >> app.log` lost app.log). The kind is
    read from the file opened (no create, no truncate), not from a look before. What cannot be
    written is one line naming ``option``."""
    through = path.startswith(("/dev/", "/proc/"))
    try:
        try:  # follows links: the file written is the one at their end
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | (os.O_APPEND if through else 0))
        except FileNotFoundError:
            fd = None
        except IsADirectoryError:
            raise UsageError(f"{option} {path}: is a directory; name a file") from None
        if fd is not None:
            with os.fdopen(fd, "wb", buffering=0) as f:
                if through or not statmod.S_ISREG(os.fstat(fd).st_mode):
                    view = memoryview(data)
                    while view:
                        view = view[f.write(view):]
                    return
        write_private(os.path.realpath(path), data)
    except OSError as exc:
        raise OutputFailed(f"{option} {path}: cannot write it ({exc.strerror or exc})") from None


class ListenError(Exception):
    """The server's address cannot be bound (in use, not ours): exit 1 with one line."""

    @classmethod
    def of(cls, where: str, exc: OSError, unix_socket: str | None = None) -> ListenError:
        """Why ``where`` could not be bound; a --unix path that is no socket (a file, a directory)
        is said as such, not as "Address already in use" (helper-100)."""
        import stat

        why = exc.strerror or str(exc)
        if unix_socket is not None:
            try:
                mode = os.stat(unix_socket).st_mode
            except OSError:
                mode = None
            if mode is not None and not stat.S_ISSOCK(mode):
                what = "a directory" if stat.S_ISDIR(mode) else "a file"
                why = f"{unix_socket} is {what}, not a socket: give another path (it is never replaced)"
        return cls(f"cannot listen on {where}: {why}")


class OutputFailed(HostError):
    """Standard output could not be written (``> file`` on a full disk): said in one line, exit 1."""


class TerminalText:
    """A CLI stream (``sys.stderr`` once logging has its own handle on it; ``sys.stdout`` through
    GuardedOutput) whose text has its control characters but newline and tab written out
    (``logs.terminal_safe``): what a plugin worded (an export's name, an error, its stack under
    --debug) never drives the terminal. ``raw``: the stream itself, for the progress line."""

    def __init__(self, stream: TextIO) -> None:
        self.raw = stream

    def write(self, text: str) -> int:
        return self.raw.write(terminal_safe(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class GuardedOutput(TerminalText):
    """``sys.stdout`` for the CLI, a TerminalText whose write or flush that fails is OutputFailed;
    standard output then goes to /dev/null, so that the interpreter's own flush at exit does not
    fail again."""

    def _failed(self, exc: OSError) -> OutputFailed:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.raw.fileno())
            os.close(devnull)
        return OutputFailed(f"cannot write the output: {exc.strerror or exc}")

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self.raw.flush()
        except OSError as exc:
            raise self._failed(exc) from None

