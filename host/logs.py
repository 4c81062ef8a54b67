"""How the command line logs: text lines (the plugin prefix coloured on a tty) or JSON lines,
at a chosen level. Worker messages carry ``[plugin:ID#N]`` in their text, so they read the
same under an application's own logging setup, and ``plugin``/``worker`` attributes for the
JSON lines."""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import sys
import threading
import time
from typing import Any, TextIO

# The levels, defined once: the host's own (``--log-level``, the plugin log's filter), and those
# a worker's console and ``ctx.log`` use, with the logging level each is written at.
LEVELS = ("debug", "info", "warning", "error")
CONSOLE_LEVELS = frozenset({"log", "info", "warn", "error", "debug"})
WORKER_LEVELS = CONSOLE_LEVELS | {"exception"}  # plus what the runtime reports of an uncaught error
LOGGING_LEVEL = {
    "debug": logging.DEBUG, "log": logging.INFO, "info": logging.INFO, "warn": logging.WARNING,
    "warning": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
}
FORMATS = ("text", "json")
_COLOURS = (36, 32, 35, 33, 34, 96, 92, 95)  # ANSI foreground colours for plugin prefixes
_LEVEL_COLOURS = {logging.WARNING: 33, logging.ERROR: 31, logging.CRITICAL: 31}


# What a terminal acts on past C0: DEL, C1 (\x9b is CSI), the bidirectional controls and the two
# Unicode line separators. With C0 (line breaks, escape sequences), what escape() writes out.
_PAST_C0 = "\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
_UNSAFE = re.compile(f"[\x00-\x1f{_PAST_C0}]")


def escape(text: str) -> str:
    """``text`` on one line with every control character written out (``\\n``, ``\\x1b``,
    ``\\u202e``): what a plugin prints can neither start a forged log line nor send a terminal
    escape sequence."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        m.group(), f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"), text)


# The same, but newline and tab: text that may keep its line breaks.
_TERMINAL = re.compile(f"[\x00-\x08\x0b-\x1f{_PAST_C0}]")
# What JSON leaves as it is (json.dumps escapes C0, quotes and backslashes only).
_JSON_UNSAFE = re.compile(f"[{_PAST_C0}]")


def json_safe(text: str) -> str:
    """JSON ``text`` with those characters as ``\\uXXXX`` escapes: the same value to a program, plain
    text to a terminal or a log viewer."""
    if not _JSON_UNSAFE.search(text):
        return text
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def terminal_safe(text: str) -> str:
    """``text`` with its line breaks and tabs, every other control character written out as
    ``escape`` does: what the CLI prints (a plugin's export names, errors, a balance's currency)
    cannot clear the operator's screen, set the terminal's title or clipboard (OSC 52), or
    rewrite a line."""
    if not _TERMINAL.search(text):
        return text
    return _TERMINAL.sub(lambda m: escape(m.group()), text)


class Throttle:
    """One warning per ``key`` every ``every`` seconds at most; the ones held back are counted and
    said with the next (a storage down answers every call with the same failure)."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger, self.every = logger, every
        self._seen: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        last, held = self._seen.get(key, (-self.every, 0))
        if now - last < self.every:
            self._seen[key] = (last, held + 1)
            return
        if len(self._seen) > 1000:  # keys are few; never let them grow without bound
            self._seen.clear()
        self._seen[key] = (now, 0)
        if held:
            msg += f" ({held} more like it in the last {now - last:.0f}s)"
        self.logger.warning(msg, *args, extra=extra)


def worker_extra(plugin_id: str, worker: str) -> dict[str, Any]:
    """``extra=`` for a log record about one worker (``worker`` as ``ID#N``)."""
    return {"plugin": plugin_id, "worker": worker, "label": worker}


def plugin_extra(plugin_id: str, key: str) -> dict[str, Any]:
    """``extra=`` for a log record about one plugin version (``key`` as ``ID@VERSION``)."""
    return {"plugin": plugin_id, "label": key}


def _prefix(record: logging.LogRecord) -> str:
    label = getattr(record, "label", None)
    return f"[plugin:{label}] " if label else ""


class TextFormatter(logging.Formatter):
    """``HH:MM:SS.mmm LEVEL message``; on a tty the plugin prefix takes a colour per plugin and
    warnings and errors their own."""

    def __init__(self, colour: bool) -> None:
        super().__init__()
        self.colour = colour

    def format(self, record: logging.LogRecord) -> str:
        message = escape(record.getMessage())  # plugin text cannot forge lines or drive the terminal
        if record.exc_info:  # (an exception's text may be a plugin's words too)
            message += "\n" + terminal_safe(self.formatException(record.exc_info))
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        level = record.levelname
        if self.colour:
            prefix = _prefix(record)
            if prefix and message.startswith(prefix):
                plugin = str(getattr(record, "plugin", ""))
                code = _COLOURS[sum(plugin.encode()) % len(_COLOURS)]
                message = f"\x1b[{code}m{prefix}\x1b[0m{message[len(prefix):]}"
            if record.levelno in _LEVEL_COLOURS:
                level = f"\x1b[{_LEVEL_COLOURS[record.levelno]}m{level}\x1b[0m"
        return f"{stamp} {level} {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ISO 8601, UTC), level, logger, message, and plugin/worker
    for worker records (the text prefix left out of the message)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if (plugin := getattr(record, "plugin", None)) is not None:
            out["plugin"] = plugin
            if (worker := getattr(record, "worker", None)) is not None:
                out["worker"] = worker
            message = message.removeprefix(_prefix(record))
        out["message"] = message
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json_safe(json.dumps(out, ensure_ascii=False))


MAX_WAITING = 10_000  # log lines waiting for a stream that is not read; more are dropped, counted


class WriterHandler(logging.Handler):
    """Formats each record where it is logged and hands the line to a thread of its own that
    writes it: a stream nobody reads (a log pipe whose reader stopped, a stuck journald) blocks
    that thread, never the event loop. Before, after ~64 KiB of log every call, /healthz and even
    SIGTERM's drain waited on a pipe write (helper-100). At most MAX_WAITING lines wait; more are
    dropped and counted, and the count is written once the stream takes lines again."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lines: queue.Queue[str | None] = queue.Queue(MAX_WAITING)
        self._dropped = 0
        self._thread = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self._dropped += 1

    def _write(self) -> None:
        while True:
            line = self._lines.get()
            try:
                if line is None:
                    return
                dropped, self._dropped = self._dropped, 0
                if dropped:
                    self.stream.write(f"({dropped} log lines dropped: the log was not read in time)\n")
                self.stream.write(line)
                self.stream.flush()
            except Exception:  # a closed or full stream: the line is lost, the host goes on
                pass
            finally:
                self._lines.task_done()

    def drain(self, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout`` seconds) until every line handed over has been written."""
        end = time.monotonic() + timeout
        with self._lines.all_tasks_done:
            while self._lines.unfinished_tasks and (left := end - time.monotonic()) > 0:
                self._lines.all_tasks_done.wait(left)

    def close(self) -> None:
        self.drain(0.5)  # (the CLI drained them already; a stream nobody reads does not hold the exit twice)
        try:
            self._lines.put_nowait(None)
        except queue.Full:
            pass
        super().close()


def drain_logs(timeout: float = 2.0) -> None:
    """Let the CLI's log lines reach their stream before the process exits (at most ``timeout``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, WriterHandler):
            handler.drain(timeout)


def setup_logging(level: str = "warning", fmt: str = "text", *, debug: bool = False,
                  stream: TextIO | None = None) -> None:
    """Configure the root logger for the CLI. ``debug`` shows everything, the plugins' console
    and the workers' lifecycle included; otherwise a plugin's console shows from warnings up."""
    stream = stream or sys.stderr
    handler = WriterHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        colour = stream.isatty() and "NO_COLOR" not in os.environ
        handler.setFormatter(TextFormatter(colour))
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, WriterHandler):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper()))
    quiet = logging.DEBUG if debug else max(root.level, logging.WARNING)
    for name in ("host.plugin", "host.worker"):
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("aiohttp.access").setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
