"""``[server]``: what ``python -m host serve`` listens on, who may use it, and how its
processes are kept (serve --processes)."""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from .config_types import Count, Delay, Port, Seconds
from .errors import InvalidConfig
from .event_loop import EventLoop


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``python -m host serve`` (``[server]``)."""

    host: str = "127.0.0.1"
    port: Port = 8787
    admin_token: str | None = None   # when set, mutating endpoints and /execute need it
    enable_execute: bool = False     # POST /execute is off unless enabled
    max_body_bytes: Count = 2 * 1024 * 1024
    shutdown_grace: Delay = 10.0     # on SIGTERM, in-flight calls get this long to finish
    # Host headers accepted besides the addresses the server listens on (and localhost on its
    # port): names a reverse proxy or the operator's browser uses to reach it, e.g.
    # ["plugins.example.internal:8787"]. Anything else is refused (DNS rebinding).
    allowed_hosts: list[str] = []
    # A token that may read (GET logs, config, balances, metrics) but not change anything;
    # admin_token reads too. When neither is set, reads are open to whoever reaches the port.
    read_token: str | None = None
    unix_socket: str | None = None   # listen on this Unix socket path instead of host:port
    # /execute is refused at start without admin_token, unless serving on a Unix socket or this
    # is set (``--insecure-no-token``): anyone reaching the port could then run code.
    insecure_no_token: bool = False
    header_timeout: Seconds = 10.0    # seconds a connection may take to send a request's head
    body_timeout: Seconds = 30.0      # seconds a request's whole body may take to arrive after its head
    keepalive_timeout: Seconds = 30.0  # seconds an idle kept-alive connection stays open
    # seconds a client may take to accept each 64 KiB of an answer waiting for it (else aborted)
    send_timeout: Seconds = 30.0
    # connections open at once; past it a new one closes the longest idle one (or itself)
    max_connections: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    # host processes sharing the address and the state directory (serve --processes); "auto": one per core
    processes: Annotated[int, Meta(ge=1, le=64)] | Literal["auto"] = 1
    process_timeout: Delay = 30.0  # serve --processes: one answering no liveness probe this long is killed (0: never)
    # serve --processes: one that has not answered its first probe this long after it started is
    # killed too (a start stuck on a lock, a stopped process; 0: never)
    process_start_timeout: Delay = 120.0
    # the command line's event loop: "auto" (uvloop when installed), "uvloop" or "asyncio" (host/event_loop.py)
    event_loop: EventLoop = "auto"


def check_server(srv: ServerConfig) -> None:
    """Tokens that make sense together, Host names a browser sends, a Unix socket path that fits."""
    from urllib.parse import urlsplit

    if srv.read_token and not srv.admin_token:
        raise InvalidConfig("server.read_token needs server.admin_token too: without it every "
                            "mutating route would be open while reads need a token")
    if srv.read_token and srv.read_token == srv.admin_token:
        raise InvalidConfig("server.read_token must differ from server.admin_token")
    for entry in srv.allowed_hosts:
        try:
            parts = urlsplit(f"//{entry}")
            ok = bool(parts.hostname) and parts.port != 0 and parts.netloc == entry and not (
                parts.path or parts.query or parts.fragment or "@" in entry)
        except ValueError:  # a port that is not a number or out of range
            ok = False
        if not ok:
            raise InvalidConfig(f"server.allowed_hosts: {entry!r} is not HOST or HOST:PORT "
                                "(a name as a browser sends it in the Host header, no scheme or path)")
    if srv.unix_socket is not None and not 0 < len(os.fsencode(srv.unix_socket)) <= 107:
        raise InvalidConfig(f"server.unix_socket must be a path of 1 to 107 bytes, got {srv.unix_socket!r}")


__all__ = ["ServerConfig", "check_server"]
