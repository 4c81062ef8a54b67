"""``python -m host serve``: the HTTP API over one PluginHost (or, with ``--processes N``, the
parent of N of them), its control socket, draining on SIGTERM; and ``started``, the host of a
CLI command with a progress line while its plugins start."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import msgspec

from .cli_dev import announce_inspector, debugger_wait, dev_banner
from .cli_output import ListenError, Progress, UsageError, start_progress
from .config import HostConfig, ServerConfig
from .config_file import ENV_CONFIG
from .control import start_control_site, take_over_control_site
from .errors import StateUnavailable
from .event_loop import loop_name
from .plugin_host import PluginHost
from .sd_notify import Notifier
from .serve_notify import OneServer, notifying
from .stop_signals import IGNORED, Stops

log = logging.getLogger("host.cli")

DEV_RELOAD_INTERVAL = 0.25  # seconds between rescans under serve --dev
DRAIN_MARGIN = 10.0  # seconds past shutdown_grace and the onStop hooks for the workers to stop (STOPPING=1's bound)
LATE_JOIN_WAIT = 60.0  # seconds a process started again waits for its plugins when process_start_timeout is 0


def _check_execute_token(srv: ServerConfig) -> None:
    """/execute runs any code: refuse to serve it without an admin token, unless on a Unix
    socket (only its owner can connect) or the operator said ``--insecure-no-token``."""
    if not srv.enable_execute or srv.admin_token or srv.unix_socket is not None:
        return
    if not srv.insecure_no_token:
        raise UsageError("/execute is enabled without an admin token: set one (--admin-token, "
                          "server.admin_token or $PLUGIN_HOST_ADMIN_TOKEN), serve on --unix PATH, or "
                          "pass --insecure-no-token to let anyone who reaches the port run code")
    log.warning("/execute is enabled without an admin token (--insecure-no-token): anyone who "
                "reaches %s:%s can run code", srv.host, srv.port)


async def serve(args: argparse.Namespace, config: HostConfig) -> int:
    from .multiproc import EXIT_UNAVAILABLE, number_log_lines, process_count, supervise

    srv = config.server
    _check_execute_token(srv)
    # systemd's $NOTIFY_SOCKET and $WATCHDOG_*, taken out of the environment here: no serve
    # process, Deno worker or helper started from now on inherits them (sd_notify.py)
    notifier = Notifier.from_environ()
    if args.listen_fd is None and (count := process_count(args.processes or srv.processes)) > 1:
        if inspected := ("--inspect" if args.inspect else "--inspect-brk" if args.inspect_brk else None):
            raise UsageError(f"{inspected} runs one worker on one inspector port: serve it with "
                             f"--processes 1, not {count}")
        path = args.config or os.environ.get(ENV_CONFIG) or None
        return await supervise(args.argv, srv, count, notifier, config_path=path)  # N of these, on one socket
    if not args.peers_dir:
        return await _serve(args, config, notifier)
    number_log_lines(args.process_index)  # one of those N
    try:
        return await _serve(args, config)
    except StateUnavailable as exc:  # the parent starts it again, and waits while a sibling serves
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


async def _serve(args: argparse.Namespace, config: HostConfig, notifier: Notifier | None = None) -> int:
    """One server: the HTTP API on its socket, the control socket, until a stop signal;
    ``notifier``: systemd's, told READY=1 once /healthz/ready says 200 (serve_notify.py)."""
    from aiohttp import web

    from .http_guard import connection_cap
    from .multiproc import inherited_address, inherited_site, join_siblings
    from .server import DRAINING, PrivateUnixSite, Runner, create_app, drain

    srv = config.server
    if args.dev:  # edit, save, see: a quick rescan, and a banner for each reload
        config.reload = msgspec.structs.replace(config.reload, enabled=True, interval=DEV_RELOAD_INTERVAL)
    if config.load == "auto":  # listening first, /healthz/ready says 503 until every plugin settled
        config.load = "wait" if args.inspect_brk else "background"  # --inspect-brk: the start waits for the debugger
    host = PluginHost(config)
    if args.dev:
        host.subscribe(dev_banner)
    app = create_app(host, admin_token=srv.admin_token, read_token=srv.read_token,
                     enable_execute=srv.enable_execute, max_body=srv.max_body_bytes,
                     allowed_hosts=srv.allowed_hosts, body_timeout=srv.body_timeout)
    limits = {"header_timeout": srv.header_timeout, "keepalive_timeout": srv.keepalive_timeout,
              "send_timeout": srv.send_timeout,
              "max_connections": connection_cap(srv.max_connections), "handle_signals": False, "shutdown_timeout": srv.shutdown_grace}
    runner = Runner(app, **limits)
    # The control socket: the CLI's changes go through this server (no token: the socket is 0600).
    control = Runner(create_app(host, max_body=srv.max_body_bytes, via="cli", body_timeout=srv.body_timeout),
                     **limits)
    peers = None
    taking: asyncio.Future[None] | None = None
    # SIGHUP too: the terminal that started serve closing must drain it, not end it mid-call.
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *IGNORED) as received:
        signals = Stops(received)
        # HTTP first: /healthz/live answers while the plugins start, /healthz/ready says 503.
        await runner.setup()
        await control.setup()
        try:
            site = (inherited_site(runner, args.listen_fd) if args.listen_fd is not None
                    else PrivateUnixSite(runner, srv.unix_socket) if srv.unix_socket is not None
                    else web.TCPSite(runner, srv.host, srv.port))
            # a serve process started again beside one that serves: it accepts once its plugins
            # settled, so no call it takes meanwhile is answered 503 "loading" (the sibling's to take)
            late = args.listen_fd is not None and args.join_late
            if late:
                addresses = [a for a in [inherited_address(args.listen_fd)] if a is not None]
            else:
                try:
                    await site.start()
                except OSError as exc:
                    where = f"unix:{srv.unix_socket}" if srv.unix_socket is not None else f"{srv.host}:{srv.port}"
                    raise ListenError.of(where, exc, srv.unix_socket) from None
                addresses = [a for a in runner.addresses if isinstance(a, tuple)]
            for address in addresses:  # the API itself: no plugin may reach it
                host.reserve_address(srv.host if srv.host in ("", "0.0.0.0", "::") else address[0], address[1])
            service = OneServer(host, app, lambda: site.name)
            async with notifying(notifier or Notifier(), service) as notice, \
                    debugger_wait(args, config, signals) as attached, started(host, args):  # makes the state dir
                attached()
                if not args.process_index and await start_control_site(control, config.state_path) is None:
                    # one control socket per state directory: another server's, until it stops
                    taking = asyncio.ensure_future(take_over_control_site(control, config.state_path))
                if args.peers_dir:
                    peers = await join_siblings(app, host, args.process_index, args.peers_dir, control.app,
                                                accepting=lambda: not late)
                if srv.enable_execute:
                    await host.warm_execute()
                # its siblings' parent sees it live meanwhile (the peer socket answers)
                wait = srv.process_start_timeout / 2 or LATE_JOIN_WAIT
                stopped = await _settled_or_signal(host, wait, signals) if late else None
                if stopped is None:
                    if late:
                        try:
                            await site.start()
                        except OSError as exc:  # the inherited socket closed under it, say
                            raise ListenError(f"cannot accept on the inherited socket: {exc.strerror or exc}") from None
                        late = False  # /live says it accepts: a sibling started again may join late
                    names = ", ".join(f"{i.id} ({i.state})" for i in host.plugins()) or "none"
                    log.info("serving on %s  plugins: %s  (event loop: %s)", site.name, names, loop_name())
                    if args.inspect:
                        await announce_inspector(args.inspect, config.inspect_for(args.inspect) or "")
                    async for sig in signals:
                        stopped = sig
                        break
                log.info("received %s: draining and stopping", signal.Signals(stopped).name)
                app[DRAINING].set()
                notice.stopping(f"draining (received {signal.Signals(stopped).name})",
                                srv.shutdown_grace + config.limits.hook_timeout + DRAIN_MARGIN)
                # stop accepting, let calls in flight finish (shutdown_grace), answer the others 503
                if taking is not None:
                    taking.cancel()
                await control.cleanup()
                await drain(runner, srv.shutdown_grace)
                await runner.cleanup()
        finally:
            if taking is not None:
                taking.cancel()
            await control.cleanup()
            await runner.cleanup()
            if peers is not None:
                await peers.cleanup()
    return 0


async def _settled_or_signal(host: PluginHost, timeout: float, signals: AsyncIterator[int]) -> int | None:
    """Wait until the host's plugins settled (at most ``timeout``); the stop signal that came
    first, if one did."""
    stopped: int | None = None
    async with anyio.create_task_group() as tg:
        async def on_signal() -> None:
            nonlocal stopped
            async for sig in signals:
                stopped = sig
                tg.cancel_scope.cancel()

        tg.start_soon(on_signal)
        await host.settled(timeout)
        tg.cancel_scope.cancel()
    return stopped


@asynccontextmanager
async def started(host: PluginHost, args: argparse.Namespace) -> AsyncIterator[PluginHost]:
    """``async with host``, with a progress line on a tty while the plugins start."""
    progress = Progress(enabled=not args.debug)
    unsubscribe = host.subscribe(start_progress(progress, host.plugins))
    try:
        async with host:
            unsubscribe()
            progress.clear()
            yield host
    finally:
        progress.clear()


__all__ = ["DEV_RELOAD_INTERVAL", "serve", "started"]
