"""A TCP proxy that shapes each connection like a wide-area link (``tc netem`` is not available).

Every connection accepted on the listening port is forwarded to one target. Each direction of each
connection is shaped on its own:

- **Bandwidth**: a token bucket of ``rate_bytes_per_s`` with a small burst. Bytes are read from the
  sender only as fast as the bucket allows, so TCP flow control pushes back on the sender exactly
  as a slow link would, and the proxy holds at most about one bandwidth-delay product per
  direction.
- **Total capacity** (optional): ``total_rate_bytes_per_s`` caps all connections together, per
  direction, as a real link or server does. Every slice that passed its own connection's bucket
  then books a departure on one shared schedule, in the order the slices asked. A connection has
  at most one slice waiting there, so N busy connections take turns (round robin) and each gets
  about 1/N of the total: none can starve another.
- **Delay**: a delay line. A slice of bytes that leaves the bucket at time *t* is written to the
  receiver at *t* + ``delay_ms``. Slices are in flight together, so a long stream's throughput is
  set by the rate alone, whatever the delay.
- **Handshake**: forwarding starts one round trip (2 x delay) after the client connects, as the
  TCP three-way handshake would make it.
- **Queue**: a shaped connection's receive buffer is kept small (64 KiB set), so the bytes a
  sender has handed over but the link has not carried stay few, as in front of a real bottleneck
  (a sender that keeps its own unsent bytes low, as xio does with ``TCP_NOTSENT_LOWAT``, then has
  about 0.3 MB per connection queued instead of 2.5 MB).

End-of-stream (half-close) travels through the delay line like data; a reset on one side aborts
the other.

The event loop runs in a background thread, so a test or benchmark uses the proxy from ordinary
synchronous code::

    with ShapingProxy("127.0.0.1", server_port, delay_ms=20, rate_bytes_per_s=1_000_000) as proxy:
        client.get(f"http://127.0.0.1:{proxy.port}/...")

Named profiles (:data:`PROFILES`) bundle these settings: ``wan`` (1 MB/s per connection, no
total cap), ``wan-cap12`` (0.93 MB/s per connection, 12 MB/s in total) and ``wan-cap4``.

Command line::

    python -m bench.proxy --listen 0 --target 127.0.0.1:8080 --delay-ms 20 --rate 1000000
    python -m bench.proxy --target 127.0.0.1:8080 --profile wan-cap12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from types import TracebackType

__all__ = ["PROFILES", "LinkProfile", "ShapingProxy", "main"]


@dataclass(frozen=True)
class LinkProfile:
    """A named link model for the shaping proxy.

    Attributes
    ----------
    name
        What ``--profile`` takes.
    delay_ms
        One-way delay added in each direction.
    rate_bytes_per_s
        Cap per connection and direction.
    total_rate_bytes_per_s
        Cap for all connections together, per direction; None for none.
    summary
        One line for tables and docs.
    """

    name: str
    delay_ms: float
    rate_bytes_per_s: float
    total_rate_bytes_per_s: float | None
    summary: str


#: The link models the benchmarks use. ``wan`` is the original profile, kept for comparison: each
#: connection is capped, the link as a whole is not, so more connections are faster without end.
#: The capped ones follow the seed's own figures: 15,000 files (2.5 GB) took 45 min on one stream
#: (0.93 MB/s) and 3.5 min with 42 workers (about 12 MB/s in total, far below 42 x 0.93).
PROFILES: dict[str, LinkProfile] = {
    p.name: p
    for p in (
        LinkProfile("wan", 20.0, 1_000_000, None, "20 ms each way, 1 MB/s per connection"),
        LinkProfile(
            "wan-cap12",
            20.0,
            930_000,
            12_000_000,
            "20 ms each way, 0.93 MB/s per connection, 12 MB/s in total",
        ),
        LinkProfile(
            "wan-cap4",
            20.0,
            930_000,
            4_000_000,
            "20 ms each way, 0.93 MB/s per connection, 4 MB/s in total",
        ),
    )
}

# A delivered slice is at most this many seconds of traffic at the shaped rate: small enough for a
# smooth stream, large enough that 45 connections do not flood the loop with wake-ups.
_SLICE_SECONDS = 0.02
#: Receive buffer of each shaped connection's client side (Linux doubles what is set). A real
#: bottleneck queues about a bandwidth-delay product; the kernel's loopback buffers (megabytes
#: per connection) would model a badly bloated link, where what a sender decides (to compress,
#: say) reaches the link only after megabytes it had already handed over.
_QUEUE_BYTES = 64 * 1024
_MIN_SLICE = 4096
_MAX_SLICE = 256 * 1024
_DEFAULT_BURST = 16 * 1024


class _TokenBucket:
    """Token bucket that may go into debt: ``reserve`` returns when the bytes may leave."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp: float | None = None

    def reserve(self, n: int, now: float) -> float:
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return now if self.tokens >= 0 else now - self.tokens / self.rate


class _SharedSchedule:
    """One departure schedule for all connections (GCRA, the virtual-clock form of a bucket).

    ``book(n, ready)`` gives the time a slice of ``n`` bytes ready at ``ready`` may leave: never
    before ``ready``, and never so soon that the bytes booked so far exceed ``burst`` plus
    ``rate`` times the elapsed time. Bookings are served in call order, which (with one pending
    slice per connection) is round robin between the busy connections.
    """

    __slots__ = ("busy_until", "rate", "tolerance")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.tolerance = burst / rate
        self.busy_until: float | None = None

    def book(self, n: int, ready: float) -> float:
        start = ready if self.busy_until is None else max(ready, self.busy_until)
        self.busy_until = start + n / self.rate
        return max(ready, self.busy_until - self.tolerance)


class ShapingProxy:
    """Forward TCP connections to a target with added one-way delay and a per-direction rate cap.

    Parameters
    ----------
    target_host, target_port
        Where every accepted connection is forwarded.
    delay_ms
        One-way delay added in each direction, in milliseconds (round trip adds twice this).
    rate_bytes_per_s
        Bandwidth cap per connection and per direction, in bytes per second; ``None`` or 0 means
        no cap (delay only).
    total_rate_bytes_per_s
        Cap for all connections together, per direction (client to server, and back), in bytes
        per second; ``None`` or 0 means no total cap. Shared fairly between busy connections.
    burst_bytes
        Depth of the token bucket: how many bytes an idle direction may send at once.
    listen_host, listen_port
        Where to listen; port 0 lets the OS choose (read it from :attr:`port`).

    Attributes
    ----------
    connections_accepted
        Number of client connections accepted so far.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_ms: float = 20.0,
        rate_bytes_per_s: float | None = 1_000_000,
        total_rate_bytes_per_s: float | None = None,
        burst_bytes: int = _DEFAULT_BURST,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        if delay_ms < 0:
            raise ValueError("delay_ms must not be negative")
        self.target_host = target_host
        self.target_port = target_port
        self.delay = delay_ms / 1000.0
        self.rate = float(rate_bytes_per_s) if rate_bytes_per_s else None
        self.total_rate = float(total_rate_bytes_per_s) if total_rate_bytes_per_s else None
        self.burst = max(burst_bytes, 1)
        # One schedule per direction: uploads and downloads do not share capacity.
        self._shared: dict[bool, _SharedSchedule] = {}
        if self.total_rate is not None:
            self._shared = {
                upstream: _SharedSchedule(self.total_rate, self.burst) for upstream in (True, False)
            }
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.connections_accepted = 0
        cap = min(r for r in (self.rate, self.total_rate, float("inf")) if r is not None)
        if cap == float("inf"):
            self._slice = _MAX_SLICE
            self._queue_slots = 64
        else:
            self._slice = int(min(_MAX_SLICE, max(_MIN_SLICE, cap * _SLICE_SECONDS)))
            # Room for the bytes in flight on the delay line, plus some slack.
            self._queue_slots = int(cap * self.delay / self._slice) + 8
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on (available after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the proxy is not started")
        return self._port

    def start(self) -> ShapingProxy:
        """Start listening; returns once the port is bound. Returns ``self``."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._handle,
                        self.listen_host,
                        self.listen_port,
                        limit=self._slice,
                        reuse_address=True,
                    )
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to the caller of start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="shaping-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, then end the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may already be closing
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout)
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = self._server = None

    def __enter__(self) -> ShapingProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        rate = "unlimited" if self.rate is None else f"{self.rate:.0f} B/s"
        total = "" if self.total_rate is None else f", total={self.total_rate:.0f} B/s"
        return (
            f"ShapingProxy(port={self._port}, target={self.target_host}:{self.target_port}, "
            f"delay={self.delay * 1000:.1f} ms, rate={rate}{total})"
        )

    # -- inside the loop thread ----------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers))
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections_accepted += 1
        try:
            await self._forward(c_reader, c_writer)
        except asyncio.CancelledError:
            # Only stop() cancels handlers. Ending normally keeps asyncio's stream callback from
            # logging the cancellation as an error.
            pass
        finally:
            self._handlers.discard(task)

    async def _forward(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        u_writer: asyncio.StreamWriter | None = None
        clean = False
        client = c_writer.get_extra_info("socket")
        if client is not None and (self.rate or self.total_rate):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _QUEUE_BYTES)
        try:
            if self.delay:
                await asyncio.sleep(2 * self.delay)  # the TCP handshake's round trip
            try:
                u_reader, u_writer = await asyncio.open_connection(
                    self.target_host, self.target_port, limit=self._slice
                )
            except OSError:
                return  # target down: the client sees its connection closed
            for writer in (c_writer, u_writer):
                sock = writer.get_extra_info("socket")
                if sock is not None:  # the proxy itself must not add Nagle delays
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._direction(c_reader, u_writer, upstream=True))
                    group.create_task(self._direction(u_reader, c_writer, upstream=False))
                clean = True
            except* (OSError, EOFError):
                pass  # one side reset or vanished; both are aborted below
        finally:
            for w in (c_writer, u_writer):
                if w is None:
                    continue
                if clean:
                    w.close()
                else:
                    w.transport.abort()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await w.wait_closed()

    async def _direction(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """Shape one direction: a rate-limited reader feeding a delay line, and its writer."""
        line: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(self._queue_slots)
        tasks = {
            asyncio.create_task(self._ingest(src, line, self._shared.get(upstream))),
            asyncio.create_task(self._deliver(line, dst)),
        }
        try:
            # Either side failing (reset, receiver gone) must end both, not leave one blocked.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()

    async def _ingest(
        self,
        src: asyncio.StreamReader,
        line: asyncio.Queue[tuple[float, bytes | None]],
        shared: _SharedSchedule | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        bucket = _TokenBucket(self.rate, self.burst) if self.rate else None
        while True:
            data = await src.read(self._slice)
            now = loop.time()
            if not data:
                await line.put((now + self.delay, None))
                return
            depart = bucket.reserve(len(data), now) if bucket else now
            if depart > now:
                await asyncio.sleep(depart - now)
            if shared is not None:
                # Booked only once this connection's own cap lets the slice go, so a slow
                # connection never holds a place on the shared schedule it cannot use.
                ready = loop.time()
                depart = shared.book(len(data), ready)
                if depart > ready:
                    await asyncio.sleep(depart - ready)
            await line.put((depart + self.delay, data))

    async def _deliver(
        self, line: asyncio.Queue[tuple[float, bytes | None]], dst: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await line.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                if dst.can_write_eof():
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()


def _parse_address(text: str, default_host: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    return (host if sep and host else default_host), int(port)


def main(argv: list[str] | None = None) -> int:
    """Run the proxy until interrupted; print ``proxy port=<PORT>`` once listening.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The process exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bench.proxy", description="TCP proxy with added delay and a rate cap."
    )
    parser.add_argument("--listen", default="0", help="[HOST:]PORT to listen on (0: any free)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="a named link model (sets delay, rate and total rate unless those are given)",
    )
    parser.add_argument("--delay-ms", type=float, help="one-way delay (ms; default 20)")
    parser.add_argument(
        "--rate", type=float, help="bytes/s per connection and direction; 0: none (default 1e6)"
    )
    parser.add_argument(
        "--total-rate",
        type=float,
        help="bytes/s for all connections together, per direction; 0: none (default)",
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile or "wan"]
    delay_ms = profile.delay_ms if args.delay_ms is None else args.delay_ms
    rate = profile.rate_bytes_per_s if args.rate is None else args.rate
    total = profile.total_rate_bytes_per_s if args.total_rate is None else args.total_rate
    listen_host, listen_port = _parse_address(args.listen, "127.0.0.1")
    target_host, target_port = _parse_address(args.target, "127.0.0.1")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    proxy = ShapingProxy(
        target_host,
        target_port,
        delay_ms=delay_ms,
        rate_bytes_per_s=rate or None,
        total_rate_bytes_per_s=total or None,
        listen_host=listen_host,
        listen_port=listen_port,
    )
    with proxy:
        print(f"proxy port={proxy.port}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
