"""A stop signal that reaches the CLI while it is still importing (the first ~0.5 s of
``python -m host serve``, before serve listens for its signals) ends it quietly: before, SIGTERM
and SIGHUP killed it (exit 143, 129) with nothing logged and SIGINT printed a KeyboardInterrupt
traceback from some import (helper-111), where the README promises that a stop signal during
the start ends serve at once with exit 0. Nothing has started yet then: there is nothing to
drain. Installed by ``host/__init__.py`` only when the process is the CLI (``python -m host``,
``plugin-host``); an embedding application's signals are its own."""

from __future__ import annotations

import signal
import sys

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
COMMANDS = ("serve", "call", "execute", "list", "status", "config", "validate", "test", "new", "doctor")
_before: dict[int, object] = {}  # what each signal was handled by before install()


def _command() -> str | None:
    """The command named on the command line (its first word that is one), before argparse."""
    return next((a for a in sys.argv[1:] if a in COMMANDS), None)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0 if _command() == "serve" else 128 + signum)


def install() -> None:
    for sig in SIGNALS:
        before = signal.getsignal(sig)
        if before is signal.SIG_IGN:  # nohup's SIGHUP, a background job's SIGINT: still ignored
            continue
        _before[sig] = before
        signal.signal(sig, _stop)


def release() -> None:
    """The command runs now: its signals as they were handled before (serve sets its own)."""
    for sig, before in _before.items():
        if signal.getsignal(sig) is _stop:
            signal.signal(sig, before if before is not None else signal.SIG_DFL)  # type: ignore[arg-type]


def is_cli() -> bool:
    """Whether this process is the host's CLI: ``python -m host`` or the ``plugin-host`` script."""
    argv = getattr(sys, "orig_argv", [])
    module = argv.index("-m") + 1 if "-m" in argv else 0
    return (0 < module < len(argv) and argv[module] == "host") or sys.argv[0].endswith("plugin-host")
