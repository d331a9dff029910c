"""An XNAT that can be overloaded: an opt-in model of the server's limits on the import path.

``xio sandbox --ingest-profile xnat`` (or ``SandboxConfig(ingest_profile="xnat")``) puts this
model in front of the sandbox's own, much faster, import. Every constant comes from XNAT's
defaults or from the seed's measured figures; docs/sandbox.md ("An XNAT that can be overloaded")
gives each one and its source. In XNAT's own terms (docs/xnat-behaviour.md §3.9 item 4, §8):

- **the proxy** in front of Tomcat buffers a request's whole body before passing it on (nginx's
  ``proxy_request_buffering``, on by default) and answers **504** when the server has not
  answered within its read timeout (100 s in XNAT's reference nginx, §8 item 1); the server does
  not notice and finishes the import;
- **request threads** (Tomcat's ``maxThreads``, 200): every request holds one from start to end;
  requests beyond wait in a queue of ``accept_count`` (Tomcat's ``acceptCount``, 100); past
  that, the proxy answers **503** at once;
- **the database pool** (``DatabaseConfig``: 40 connections; DBCP waits without a limit): a file
  holds one connection while it is imported;
- **the per-file cost**: each file spends ``lock_seconds`` inside the one global lock around
  finding or creating its session, then ``file_seconds`` outside it (reading, writing,
  bookkeeping), while holding its request thread and database connection.

Times are given in XNAT seconds and multiplied by ``time_scale`` on the sandbox's clock (0.2:
five times as fast), so that benchmarks finish quickly while every ratio between them, and so
the shape of a worker sweep, stays that of the modelled server.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xnatio.sandbox.bodies import CHUNK, BodyReader
from xnatio.sandbox.stats import Gauge, IngestStats

__all__ = [
    "DEFAULT_TIME_SCALE",
    "PROFILES",
    "IngestModel",
    "IngestProfile",
    "Overloaded",
    "ingest_profile",
    "model_of",
    "proxy_buffered",
]

log = logging.getLogger(__name__)

#: Sandbox seconds per XNAT second in the named profiles: the sandbox runs 5x as fast as the
#: XNAT it models (docs/sandbox.md explains the choice).
DEFAULT_TIME_SCALE = 0.2


@dataclass(frozen=True)
class IngestProfile:
    """The constants of the ingest model; times in XNAT seconds (see the module docstring).

    Parameters
    ----------
    name
        Shown in stats and logs.
    file_seconds
        Per file, outside the session lock, holding a request thread and a database connection.
    lock_seconds
        Per file, inside the one global lock around finding or creating the session.
    request_threads
        Requests served at once (Tomcat ``maxThreads``).
    accept_count
        Requests that may wait for a thread (Tomcat ``acceptCount``); beyond them, 503.
    db_connections
        The database pool; a file holds one connection while it is imported.
    proxy_read_timeout
        The modelled proxy's read timeout, after which it answers 504; None: no proxy.
    time_scale
        Sandbox seconds per XNAT second (0.2: the sandbox is 5x as fast).
    """

    name: str = "xnat"
    file_seconds: float = 0.167
    lock_seconds: float = 0.014
    request_threads: int = 200
    accept_count: int = 100
    db_connections: int = 40
    proxy_read_timeout: float | None = 100.0
    time_scale: float = DEFAULT_TIME_SCALE

    def __post_init__(self) -> None:
        for label, value in (("file_seconds", self.file_seconds),
                             ("lock_seconds", self.lock_seconds)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"{label} must be 0 or more (got {value})")
        if self.request_threads < 1 or self.db_connections < 1 or self.accept_count < 0:
            raise ValueError(
                "request_threads and db_connections must be at least 1, accept_count 0 or more"
            )
        if self.proxy_read_timeout is not None and not self.proxy_read_timeout > 0:
            raise ValueError(f"proxy_read_timeout must be positive (got {self.proxy_read_timeout})")
        if not 0 < self.time_scale < float("inf"):
            raise ValueError(f"time_scale must be positive (got {self.time_scale})")

    def seconds(self, xnat_seconds: float) -> float:
        """Sandbox seconds for a duration in XNAT seconds."""
        return xnat_seconds * self.time_scale


#: The named profiles (``--ingest-profile``).
PROFILES: dict[str, IngestProfile] = {"xnat": IngestProfile()}


def ingest_profile(spec: str | IngestProfile, *, time_scale: float | None = None) -> IngestProfile:
    """A profile by name (:data:`PROFILES`) or as given, with its time scale replaced if asked.

    Raises
    ------
    ValueError
        For an unknown name or a bad time scale.
    """
    if isinstance(spec, str):
        if spec not in PROFILES:
            raise ValueError(f"unknown ingest profile {spec!r} (known: {', '.join(PROFILES)})")
        spec = PROFILES[spec]
    if time_scale is not None:
        spec = dataclasses.replace(spec, time_scale=time_scale)
    return spec


class Overloaded(Exception):
    """Every request thread is busy and the queue is full: the modelled proxy answers 503."""


class IngestModel:
    """The modelled server's capacity, shared by every request of one sandbox.

    Parameters
    ----------
    profile
        The constants.

    Attributes
    ----------
    session_lock
        Guards the global session lock's bookings (:meth:`file`). A test may hold it to stop
        every import at that point, then count who waits (:attr:`lock_waiting`).
    threads, queued, db_connections, db_waiting, lock_waiting
        Gauges: requests holding a thread, requests waiting for one, files holding a database
        connection, files waiting for one, files (holding a connection) waiting for the session
        lock.
    """

    def __init__(self, profile: IngestProfile) -> None:
        self.profile = profile
        self.session_lock = threading.Lock()
        self.threads = Gauge()
        self.queued = Gauge()
        self.db_connections = Gauge()
        self.db_waiting = Gauge()
        self.lock_waiting = Gauge()
        self._admit = threading.Condition()
        self._line: deque[object] = deque()
        self._busy = 0
        self._pool = threading.Semaphore(profile.db_connections)
        self._counts = threading.Lock()
        self._files = self._refused = self._timeouts = self._late = 0
        self._deadlines = _Deadlines()
        self._closed = threading.Event()
        self._lock_free = 0.0  # when the session lock's last booked turn ends

    def __repr__(self) -> str:
        return f"IngestModel({self.profile!r})"

    def close(self) -> None:
        """Let the server stop: pending timeouts never fire, nothing waits or costs any more,
        and requests still in the queue are refused."""
        self._closed.set()
        self._deadlines.close()
        with self._admit:
            self._admit.notify_all()

    # -- requests -------------------------------------------------------------------------------

    @contextmanager
    def request(self, on_timeout: Callable[[], bool]) -> Iterator[None]:
        """Serve one request in the block: wait for a thread, hold it, give it back.

        Parameters
        ----------
        on_timeout
            Called from another thread when the modelled proxy's read timeout runs out before
            the block ends; it answers 504 and returns whether it did (the request's own answer
            may have gone first). The block carries on either way.

        Raises
        ------
        Overloaded
            At once, when every thread is busy and the queue is full.
        """
        state = _Timing()
        key = None
        if self.profile.proxy_read_timeout is not None:
            delay = self.profile.seconds(self.profile.proxy_read_timeout)
            key = self._deadlines.add(delay, lambda: self._timed_out(state, on_timeout))
        try:
            self._take_thread()
            try:
                yield
            finally:
                self._give_thread()
        finally:
            if key is not None:
                self._deadlines.cancel(key)
            with self._counts:
                state.ended = True
                if state.answered:
                    self._late += 1

    def _timed_out(self, state: _Timing, on_timeout: Callable[[], bool]) -> None:
        with self._counts:
            if state.ended:
                return
        if on_timeout():
            self._answered(state)

    def _answered(self, state: _Timing) -> None:
        with self._counts:
            state.answered = True
            self._timeouts += 1
            if state.ended:  # the request ended while the 504 went out
                self._late += 1

    def _take_thread(self) -> None:
        limit = self.profile.request_threads
        with self._admit:
            if self._busy < limit and not self._line:
                self._busy += 1
                self.threads.up()
                return
            if len(self._line) >= self.profile.accept_count:
                with self._counts:
                    self._refused += 1
                raise Overloaded
            me = object()
            self._line.append(me)
            self.queued.up()
            try:
                while self._line[0] is not me or self._busy >= limit:
                    if self._closed.is_set():
                        raise Overloaded
                    self._admit.wait()
            finally:
                self._line.remove(me)
                self.queued.down()
                self._admit.notify_all()  # the next in line may have room too
            self._busy += 1
            self.threads.up()

    def _give_thread(self) -> None:
        with self._admit:
            self._busy -= 1
            self.threads.down()
            self._admit.notify_all()

    # -- files ----------------------------------------------------------------------------------

    @contextmanager
    def file(self) -> Iterator[None]:
        """Charge one imported file; the block is the sandbox's own import of it.

        Takes a database connection, passes the session lock (``lock_seconds``), runs the
        block, and gives the connection back ``file_seconds`` after the block began: the
        sandbox's own work counts as part of that time instead of adding to it.
        """
        profile = self.profile
        with self.db_waiting.held():
            self._pool.acquire()  # released below; DBCP waits without a limit
        self.db_connections.up()
        try:
            with self.lock_waiting.held():
                turn = self._lock_turn(profile.seconds(profile.lock_seconds))
                self._wait_until(turn)
            self._wait_until(turn + profile.seconds(profile.lock_seconds))
            began = time.monotonic()
            yield
            self._wait_until(began + profile.seconds(profile.file_seconds))
        finally:
            self.db_connections.down()
            self._pool.release()
            with self._counts:
                self._files += 1

    def _lock_turn(self, seconds: float) -> float:
        """Book the session lock for ``seconds``: when this file's turn starts.

        Turns are booked back to back on the clock rather than by sleeping while holding a
        lock, so the lock passes exactly ``1 / lock_seconds`` files a second however late
        Python wakes each thread; the real lock is held only to book.
        """
        with self.session_lock:
            turn = max(time.monotonic(), self._lock_free)
            self._lock_free = turn + seconds
            return turn

    def _wait_until(self, moment: float) -> None:
        left = moment - time.monotonic()
        if left > 0:
            self._closed.wait(left)

    # -- statistics -----------------------------------------------------------------------------

    def stats(self) -> IngestStats:
        """The load since the last :meth:`reset`."""
        with self._counts:
            files, refused, timeouts, late = self._files, self._refused, self._timeouts, self._late
        return IngestStats(
            profile=dataclasses.asdict(self.profile),
            threads=self.threads.reading(),
            queued=self.queued.reading(),
            db_connections=self.db_connections.reading(),
            db_waiting=self.db_waiting.reading(),
            lock_waiting=self.lock_waiting.reading(),
            files=files,
            refused=refused,
            gateway_timeouts=timeouts,
            finished_after_timeout=late,
        )

    def reset(self) -> None:
        """Start a new measurement (peaks become current values, counts zero)."""
        gauges = (
            self.threads,
            self.queued,
            self.db_connections,
            self.db_waiting,
            self.lock_waiting,
        )
        for gauge in gauges:
            gauge.reset()
        with self._counts:
            self._files = self._refused = self._timeouts = self._late = 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no request holds or waits for a thread; False if ``timeout`` ran out.

        After a 504 the import carries on: this is how a test or a benchmark waits for it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        return self.queued.wait_for(lambda n: n == 0, left()) and self.threads.wait_for(
            lambda n: n == 0, left()
        )


def model_of(app: object) -> IngestModel | None:
    """The ingest model of a running sandbox (``app.ingest``), or None without one."""
    model = getattr(app, "ingest", None)
    return model if isinstance(model, IngestModel) else None


@contextmanager
def proxy_buffered(body: BodyReader, spool_dir: Path) -> Iterator[BodyReader]:
    """The body as the modelled proxy passes it on: read to its end first, then replayed.

    A chunked body stays chunked (one chunk per read), so the import sees the same request.
    Errors while reading (a dropped connection, bad chunking) are raised here, before the
    request reaches the server.
    """
    if body.at_eof:
        yield body
        return
    with tempfile.TemporaryFile(dir=spool_dir, prefix="proxy-") as spool:
        chunked = body.length is None
        while data := body.read(CHUNK):
            if chunked:
                spool.write(b"%x\r\n" % len(data) + data + b"\r\n")
            else:
                spool.write(data)
        if chunked:
            spool.write(b"0\r\n\r\n")
        spool.seek(0)
        yield BodyReader(spool, body.length)


@dataclass
class _Timing:
    """One request against its proxy timeout; guarded by the model's count lock."""

    ended: bool = False
    answered: bool = False


class _Deadlines:
    """One thread that runs callbacks at their deadlines (the proxy's read timeouts)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._live: set[int] = set()
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, delay: float, callback: Callable[[], None]) -> int:
        """Run ``callback`` in ``delay`` seconds unless cancelled; returns the key to cancel."""
        with self._cond:
            key = next(self._keys)
            heapq.heappush(self._heap, (time.monotonic() + delay, key, callback))
            self._live.add(key)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="sandbox-proxy-timeouts", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return key

    def cancel(self, key: int) -> None:
        """Forget a deadline (a no-op once it has fired)."""
        with self._cond:
            self._live.discard(key)

    def close(self) -> None:
        """Stop the thread; nothing fires any more."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._live.clear()
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, key, callback = heapq.heappop(self._heap)
                if key not in self._live:
                    continue
                self._live.discard(key)
            try:
                callback()
            except Exception:
                log.exception("sandbox: a proxy timeout failed")
