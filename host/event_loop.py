"""The event loop the command line runs on (``[server] event_loop``).

``"auto"`` (the default) takes uvloop when it is installed (a dependency of the package on
Linux and macOS): its loop and socket callbacks are C; bench/bench_core.py measures it beside
asyncio in one run (bench/RESULTS.md: 3-21 % less host CPU for one caller on 2026-12-07). ``"asyncio"`` keeps
the standard library's loop; ``"uvloop"`` insists on uvloop. An embedding application chooses
its own loop: ``anyio.run(main, backend_options={"use_uvloop": True})``."""

from __future__ import annotations

from typing import Any, Literal

from .errors import InvalidConfig

EventLoop = Literal["auto", "uvloop", "asyncio"]


def run_options(choice: EventLoop) -> dict[str, Any]:
    """``anyio.run``'s keyword arguments for ``choice``; InvalidConfig when uvloop is asked for
    and cannot be imported."""
    if choice == "asyncio":
        return {"backend": "asyncio"}
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        if choice == "uvloop":
            raise InvalidConfig(f'server.event_loop = "uvloop", but uvloop cannot be imported ({exc}): install it '
                                '(pip install uvloop) or set server.event_loop = "asyncio"') from None
        return {"backend": "asyncio"}
    return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}


def loop_name() -> str:
    """The running loop, as serve's first line says it: "uvloop", "asyncio" or "trio"."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


__all__ = ["EventLoop", "loop_name", "run_options"]


def mark_asyncio() -> None:
    """On asyncio, say so to sniffio in the current context, as ``anyio.run`` does and
    ``asyncio.run`` (and uvicorn, an application's own loop) does not: anyio (4.14 on) makes a
    cancel scope for every task it starts, which asks sniffio for the loop, and from a raw loop
    callback (the frames read by FrameSocket's reader) nothing else tells it. Without this, under
    ``asyncio.run`` every host call of a plugin, and every worker recycled, crashed its worker
    (NoEventLoopError). A callback or task made from this context on inherits it."""
    try:
        import asyncio

        import sniffio
    except ImportError:  # no sniffio: anyio looks at the running loop itself
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # trio, or no loop
    if sniffio.current_async_library_cvar.get() is None:
        sniffio.current_async_library_cvar.set("asyncio")
