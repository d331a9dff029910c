"""A TCP relay that counts the connections a client holds open to a server.

The sandbox keeps no count of its connections, so the upload-many tests and ``bench/many.py``
measure them from outside the client: the client connects to the relay, which forwards every
connection to the server and counts it until the client closes it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

__all__ = ["CountingProxy", "Gauge"]


class Gauge:
    """Connections open now, the most ever open at once, and how many there were in all.

    When a connection arrives, the connections already counted are looked at in the kernel
    (a non-blocking peek): one whose client has closed it counts no more, even if the relay
    thread has not yet noticed. Without this, a client that closes one connection and then
    opens the next could be seen holding both.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self.peak = 0
        self.total = 0

    @property
    def open(self) -> int:
        with self._lock:
            return sum(not _closed_by_peer(s) for s in self._live)

    def up(self, client: socket.socket) -> None:
        with self._lock:
            self.total += 1
            now = 1 + sum(not _closed_by_peer(s) for s in self._live)
            self._live.add(client)
            self.peak = max(self.peak, now)

    def down(self, client: socket.socket) -> None:
        with self._lock:
            self._live.discard(client)


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


class CountingProxy:
    """A TCP relay in front of a server that measures, from outside the client, how many
    connections the client has open to the server at once (the sandbox keeps no such count).

    A connection counts from the moment the relay accepted it (and opened its upstream
    connection) until the client closes it (see :class:`Gauge`). The server may see a closed
    connection for a moment longer, while the close travels to it.
    """

    def __init__(self, port: int, gauge: Gauge | None = None, host: str = "127.0.0.1") -> None:
        self.target = (host, port)
        self.gauge = gauge or Gauge()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._accept = threading.Thread(target=self._serve, name="counting-proxy", daemon=True)
        self._accept.start()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self._accept.join(5)
        for t in list(self._threads):
            t.join(5)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._relay, args=(client,), daemon=True)
            self._threads.append(t)
            t.start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._socks.update((client, upstream))
        self.gauge.up(client)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)  # returns when the client has closed the connection
        self.gauge.down(client)
        back.join()
        with self._lock:
            self._socks.difference_update((client, upstream))
        client.close()
        upstream.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
