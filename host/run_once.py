"""A PluginHost runs once: its parts (registry, pools, task group) are built for one ``async
with``. Entering it again while it runs (nested, or from two tasks at once) used to replace its
task group under the running one (anyio's RuntimeError, and a close of the running host), and
entering it after its close failed deep inside ("plugin is closing"): both are a HostClosed now,
said before anything is touched."""

from __future__ import annotations

from .errors import HostClosed


class RunOnce:
    """new -> running -> closed, each step once."""

    def __init__(self) -> None:
        self.state = "new"

    def enter(self) -> None:
        """The start of ``__aenter__``: HostClosed unless this is the first entry."""
        if self.state == "running":
            raise HostClosed("this PluginHost is running already: enter it once (nested or concurrent "
                             "`async with` of one host is refused); make another PluginHost for a second")
        if self.state == "closed":
            raise HostClosed("this PluginHost has closed: a PluginHost runs once; make a new one")
        self.state = "running"

    def exit(self) -> None:
        self.state = "closed"


__all__ = ["RunOnce"]
