"""A TCP port forwarder on 127.0.0.1 for tests: another port of this machine that reaches a
server, as pgbouncer, an ssh tunnel or a container's published port would. Threads copy bytes
both ways; everything is closed (and the threads joined) when the context ends."""

from __future__ import annotations

import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _pump(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not stop.is_set():
                for key, _ in sel.select(0.1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):  # one side ended: so does the other
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def forwarded(port: int) -> Iterator[int]:
    """A free port on 127.0.0.1 whose connections go on to 127.0.0.1:``port``: its number."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    conns: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.1)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", port), timeout=5)
            conns.extend((client, server))
            t = threading.Thread(target=_pump, args=(client, server, stop), daemon=True)
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        acceptor.join(5)
        for t in threads:
            t.join(5)
        for s in [listener, *conns]:
            s.close()


__all__ = ["forwarded"]
