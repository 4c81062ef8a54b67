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


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0 if "serve" in sys.argv[1:] else 128 + signum)


def install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _stop)


def release() -> None:
    """The command runs now: its signals as Python's defaults have them (serve sets its own)."""
    for sig in SIGNALS:
        if signal.getsignal(sig) is _stop:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)


def is_cli() -> bool:
    """Whether this process is the host's CLI: ``python -m host`` or the ``plugin-host`` script."""
    argv = getattr(sys, "orig_argv", [])
    module = argv.index("-m") + 1 if "-m" in argv else 0
    return (0 < module < len(argv) and argv[module] == "host") or sys.argv[0].endswith("plugin-host")
