"""Tests for bench.proxy: delay, per-connection rate caps, half-close, shutdown, command line."""

from __future__ import annotations

import contextlib
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bench.proxy import ShapingProxy

ROOT = Path(__file__).resolve().parents[1]


class ThreadedServer:
    """A loopback TCP server running ``handle(conn)`` in one thread per connection."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.handle = handle
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError):
                self.handle(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


def sink(conn: socket.socket) -> None:
    """Read to EOF, then answer with the byte count (so EOF must have come through)."""
    n = 0
    while data := conn.recv(1 << 20):
        n += len(data)
    conn.sendall(b"got %d" % n)


@pytest.fixture
def echo_server() -> Iterator[ThreadedServer]:
    server = ThreadedServer(echo)
    yield server
    server.close()


@pytest.fixture
def sink_server() -> Iterator[ThreadedServer]:
    server = ThreadedServer(sink)
    yield server
    server.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_all(s: socket.socket) -> bytes:
    parts = []
    while data := s.recv(65536):
        parts.append(data)
    return b"".join(parts)


def send_and_count(port: int, size: int) -> tuple[bytes, float]:
    """Send ``size`` bytes, half-close, read the sink's answer; return it and the elapsed time."""
    start = time.perf_counter()
    with connect(port) as s:
        s.sendall(bytes(size))
        s.shutdown(socket.SHUT_WR)
        answer = recv_all(s)
    return answer, time.perf_counter() - start


def test_round_trip_adds_twice_the_delay(echo_server: ThreadedServer) -> None:
    with (
        ShapingProxy("127.0.0.1", echo_server.port, delay_ms=20) as proxy,
        connect(proxy.port) as s,
    ):
        rtts = []
        for _ in range(6):
            t = time.perf_counter()
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            rtts.append(time.perf_counter() - t)
    # The first exchange also waits for the emulated handshake (one more round trip).
    assert 0.038 <= statistics.median(rtts[1:]) <= 0.055, rtts
    assert rtts[0] >= 0.078, rtts


def test_long_stream_rate_does_not_depend_on_delay(sink_server: ThreadedServer) -> None:
    delay = 0.1
    with ShapingProxy(
        "127.0.0.1", sink_server.port, delay_ms=delay * 1000, rate_bytes_per_s=1_000_000
    ) as proxy:
        answer, elapsed = send_and_count(proxy.port, 2_000_000)
    assert answer == b"got 2000000"
    # handshake (2 d) + 2 MB at 1 MB/s + data one way (d) + answer back (d) = 2.4 s; a proxy that
    # waited out the delay per slice instead of pipelining would take 100 slices x 0.1 s more
    # (12 s). The upper bound leaves room for a loaded machine.
    assert 2.2 <= elapsed <= 6.0, elapsed


def test_each_connection_gets_its_own_cap(sink_server: ThreadedServer) -> None:
    results: list[tuple[bytes, float]] = []
    with ShapingProxy(
        "127.0.0.1", sink_server.port, delay_ms=5, rate_bytes_per_s=1_000_000
    ) as proxy:
        threads = [
            threading.Thread(target=lambda: results.append(send_and_count(proxy.port, 1_000_000)))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert proxy.connections_accepted == 4
    assert [a for a, _ in results] == [b"got 1000000"] * 4
    # 1 MB each at 1 MB/s each: about 1 s, not the 4 s a shared 1 MB/s cap would give.
    assert all(0.9 <= t <= 2.5 for _, t in results), results


def test_many_concurrent_connections(echo_server: ThreadedServer) -> None:
    with ShapingProxy("127.0.0.1", echo_server.port, delay_ms=50) as proxy:
        socks = [connect(proxy.port) for _ in range(48)]
        try:
            start = time.perf_counter()
            for i, s in enumerate(socks):
                s.sendall(b"%04d" % i)
            for i, s in enumerate(socks):
                assert s.recv(4) == b"%04d" % i
            elapsed = time.perf_counter() - start
        finally:
            for s in socks:
                s.close()
        assert proxy.connections_accepted == 48
    # All handshakes and echoes overlap: about two round trips (0.2 s), not 48 (4.8 s); the
    # bound leaves room for a loaded machine.
    assert elapsed < 2.4, elapsed


def test_half_close_propagates_both_ways(sink_server: ThreadedServer) -> None:
    with ShapingProxy("127.0.0.1", sink_server.port, delay_ms=2, rate_bytes_per_s=None) as proxy:
        answer, _ = send_and_count(proxy.port, 300_000)
    assert answer == b"got 300000"  # the sink saw EOF, and we saw its close after the answer


def test_stop_closes_open_connections(echo_server: ThreadedServer) -> None:
    proxy = ShapingProxy("127.0.0.1", echo_server.port, delay_ms=1).start()
    port = proxy.port
    with connect(port) as s:
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        start = time.perf_counter()
        proxy.stop()
        assert time.perf_counter() - start < 2
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(10) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    proxy.stop()  # stopping twice is harmless


def test_unreachable_target_closes_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        dead_port = probe.getsockname()[1]
    with (
        ShapingProxy("127.0.0.1", dead_port, delay_ms=1) as proxy,
        connect(proxy.port) as s,
        contextlib.suppress(ConnectionResetError),
    ):
        assert s.recv(10) == b""


def test_command_line(echo_server: ThreadedServer) -> None:
    cmd = [sys.executable, "-m", "bench.proxy", "--listen", "0"]
    cmd += ["--target", f"127.0.0.1:{echo_server.port}", "--delay-ms", "1", "--rate", "0"]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("proxy port="), line
            with connect(int(line.split("=")[1])) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_rejects_negative_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        ShapingProxy("127.0.0.1", 1, delay_ms=-1)
    with pytest.raises(RuntimeError, match="not started"):
        _ = ShapingProxy("127.0.0.1", 1).port


def _send_together(port: int, n: int, size: int) -> tuple[list[float], float]:
    """``n`` connections each send ``size`` bytes at once; their finish times and the total."""
    finished: list[float] = []
    answers: list[bytes] = []
    barrier = threading.Barrier(n)
    lock = threading.Lock()
    start = time.perf_counter()

    def one() -> None:
        barrier.wait()
        answer, elapsed = send_and_count(port, size)
        with lock:
            answers.append(answer)
            finished.append(elapsed)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [b"got %d" % size] * n
    return finished, time.perf_counter() - start


def test_total_cap_is_shared_fairly_and_one_connection_keeps_its_own_rate(
    sink_server: ThreadedServer,
) -> None:
    rate, total, n, size = 2_000_000, 4_000_000, 8, 500_000
    with ShapingProxy(
        "127.0.0.1",
        sink_server.port,
        delay_ms=5,
        rate_bytes_per_s=rate,
        total_rate_bytes_per_s=total,
    ) as proxy:
        _, alone = send_and_count(proxy.port, 1_000_000)
        finished, together = _send_together(proxy.port, n, size)
    # Alone, a connection gets its own cap (1 MB at 2 MB/s: 0.5 s), not the total (0.25 s) and
    # not a 1/n share of it (2 s).
    assert 0.48 <= alone < 1.5, alone
    # Together the n connections move n x size = 4 MB through the 4 MB/s total: at least 1 s,
    # whatever the per-connection caps (8 x 2 MB/s) would allow.
    assert together >= 0.97 * n * size / total, together
    # Fair: all finish near the end, none starved while others ran at their own cap (which
    # would finish the first after 0.25 s and the last after 1 s).
    assert min(finished) >= 0.8 * n * size / total, finished
    assert max(finished) - min(finished) <= 0.3 * max(finished), finished


def test_named_profiles_from_the_command_line(sink_server: ThreadedServer) -> None:
    from bench.proxy import PROFILES

    assert PROFILES["wan"].total_rate_bytes_per_s is None
    assert PROFILES["wan-cap12"].total_rate_bytes_per_s == 12_000_000
    cmd = [sys.executable, "-m", "bench.proxy", "--target", f"127.0.0.1:{sink_server.port}"]
    cmd += ["--profile", "wan-cap4", "--delay-ms", "1", "--rate", "0", "--total-rate", "2e6"]
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("proxy port="), line
            port = int(line.split("=")[1])
            finished, _ = _send_together(port, 2, 500_000)
            # 1 MB through the 2 MB/s total given on the command line: about 0.5 s each.
            assert min(finished) >= 0.45, finished
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_sender_cannot_run_far_ahead_of_the_link(sink_server: ThreadedServer) -> None:
    """Bytes handed over but not yet carried stay few, as in front of a real bottleneck, for a
    sender that keeps its own unsent bytes low (xio sets TCP_NOTSENT_LOWAT): what it decides
    (to compress, say) reaches the link soon."""
    with (
        ShapingProxy(
            "127.0.0.1", sink_server.port, delay_ms=20, rate_bytes_per_s=1_000_000
        ) as proxy,
        connect(proxy.port) as s,
    ):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 128 << 10)
        s.settimeout(0.05)
        written, chunk = 0, b"x" * 65536
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline:
            with contextlib.suppress(TimeoutError):
                written += s.send(chunk)
    # About 2 MB carried in two seconds plus ~0.3 MB queued; with the kernel's loopback
    # buffers as the queue it was 4.4 MB.
    assert written < 3_000_000, written
