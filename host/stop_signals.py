"""The signals ``serve`` stops on, and those it says and ignores (cli_serve.py, and the
parent of ``serve --processes``, multiproc.py)."""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator

log = logging.getLogger("host.cli")

# Signals a habit sends (logrotate's `postrotate kill -USR1`) that ended serve at once, its calls in
# flight cut and not a line said: said and ignored (logs and the audit log need no signal).
IGNORED = (signal.SIGUSR1, signal.SIGUSR2)


class Stops:
    """The stop signals among ``received``; each ignored one said in the log and skipped. (Not a
    generator: a wait for the next one that is cancelled leaves it to be asked again.)"""

    def __init__(self, received: AsyncIterator[int]) -> None:
        self._received = received

    def __aiter__(self) -> Stops:
        return self

    async def __anext__(self) -> int:
        while True:
            sig = await self._received.__anext__()
            if sig not in IGNORED:
                return sig
            log.warning("received %s: ignored (serve drains and stops on SIGTERM, SIGINT or SIGHUP)",
                        signal.Signals(sig).name)


__all__ = ["IGNORED", "Stops"]
