"""The link to one XNAT server as the uploads see it: bodies in flight, windows, decisions.

One :class:`Link` serves every upload that goes through the same
:class:`~xnatio.xnat.session.XnatSession` (one ``xio upload-dicom``, or all sessions of an
``xio upload-many`` run, which share one session and one connection budget). It

- counts what each request body has sent (:class:`Stream`), sampled by :meth:`Link.tick`, which
  the uploads' main threads call a few times a second, and closes a
  :class:`~xnatio.transport.window.Window` about every half second;
- hands each window to the compression policy (``--compress auto``) and to the worker
  controller (``--upload-workers auto``), so that one decision serves all uploads of the run;
- holds the run's ``--bwlimit`` rate limiter, shared by every connection.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from xnatio.transport.adaptive import WorkerController
from xnatio.transport.compression import CompressionPolicy
from xnatio.transport.ratelimit import RateLimiter
from xnatio.transport.window import Answer, StreamSample, Window
from xnatio.transport.zipstream import StreamStats

__all__ = ["Link", "LinkSettings", "Stream", "link_for", "usable_cpus"]

logger = logging.getLogger(__name__)

WINDOW = 0.5
_OVERLOAD = frozenset({429, 503, 504})


def usable_cpus() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How the first upload over a session set up its link (later uploads share it)."""

    compress: str = "auto"
    adaptive: bool = False
    ceiling: int = 42
    bwlimit: float | None = None


class Stream:
    """One request body being sent: counters its producer and its connection update.

    Attributes
    ----------
    seq
        Order in which the link saw bodies start; ``seq % 2`` is the body's half (group).
    stats
        The producer's counters (file bytes read, bytes produced, compression).
    wire
        Body bytes the connection has taken.
    body_done
        When the connection took the body's last byte (``time.monotonic``), or None.
    """

    __slots__ = ("body_done", "group", "opened", "seq", "stats", "wire")

    def __init__(self, seq: int, opened: float) -> None:
        self.seq = seq
        self.group = seq % 2
        self.opened = opened
        self.stats = StreamStats()
        self.wire = 0
        self.body_done: float | None = None

    def counters(self) -> tuple[int, int, int, float, int, int]:
        s = self.stats
        return (self.wire, s.payload, s.produced, s.deflate_cpu, s.deflate_in, s.deflate_out)


def _payload_of(wire: int, payload: int, produced: int) -> int:
    # The producer runs at most a buffer ahead of the connection: its own ratio of file bytes to
    # body bytes, applied to what the connection took, gives the file bytes that went.
    if produced <= 0:
        return wire  # a body without counters (exact-length tar or zip): framing is negligible
    return int(wire * payload / produced)


class Link:
    """Measurements and decisions shared by every upload over one session.

    Parameters
    ----------
    settings
        What the uploads asked for.
    policy
        The compression policy (its mode is ``settings.compress``).
    controller
        The worker controller, for ``--upload-workers auto`` with an adjustable budget.
    limiter
        The ``--bwlimit`` rate limiter.
    budget_capacity
        Reads the connection budget's capacity (None without a budget).
    window
        Seconds per window.
    clock
        Time source.
    """

    def __init__(
        self,
        settings: LinkSettings,
        policy: CompressionPolicy,
        controller: WorkerController | None = None,
        limiter: RateLimiter | None = None,
        budget_capacity: Callable[[], int] | None = None,
        *,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.controller = controller
        self.limiter = limiter
        self.window = window
        self._capacity = budget_capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._seq = 0
        self._closed = [0, 0, 0, 0.0, 0, 0]  # counters of bodies that ended, summed
        self._waiting = 0
        self._users = 0
        self._paused_at: int | None = None
        self._answers: list[Answer] = []
        self._start = clock()
        # Per body: its counters and the time when the current window began for it.
        self._marks: dict[int, tuple[tuple[int, int, int, float, int, int], float]] = {}
        self._ended: list[StreamSample] = []  # bodies closed during the current window
        self._totals = self._sum()
        self.windows = 0

    # -- uploads and bodies ------------------------------------------------------------------

    def begin_upload(self) -> None:
        """An upload starts sending (the controller resumes where it left off)."""
        with self._lock:
            self._users += 1
            if self._users == 1 and self.controller is not None:
                if self._paused_at is None:
                    self.controller.begin()
                else:
                    self.controller.budget.set_capacity(self._paused_at)

    def end_upload(self) -> None:
        """An upload stopped sending; with none left the budget gets its full capacity back
        (commits and verification are not throttled), to resume at the learned one."""
        with self._lock:
            self._users -= 1
            if self._users == 0 and self.controller is not None:
                self._paused_at = self.controller.budget.capacity
                self.controller.budget.set_capacity(self.controller.ceiling)

    def open(self) -> Stream:
        """A body starts sending."""
        with self._lock:
            stream = Stream(self._seq, self._clock())
            self._seq += 1
            self._streams[stream.seq] = stream
            self._marks[stream.seq] = ((0, 0, 0, 0.0, 0, 0), stream.opened)
            return stream

    def close(self, stream: Stream) -> None:
        """A body stopped sending (finished, failed or cancelled)."""
        with self._lock:
            if self._streams.pop(stream.seq, None) is None:
                return
            for i, v in enumerate(stream.counters()):
                self._closed[i] += v
            sample = self._sample(stream, self._clock())
            if sample is not None:
                self._ended.append(sample)
            self._marks.pop(stream.seq, None)

    def waiting(self, delta: int) -> None:
        """A batch starts (+1) or stops (-1) waiting for a connection."""
        with self._lock:
            self._waiting += delta

    def answered(self, stream: Stream | None, status: int) -> None:
        """The server answered a request whose body was ``stream``."""
        now = self._clock()
        with self._lock:
            # A request without a body of ours counts as the newest: it says how the server is now.
            seq = stream.seq if stream is not None else self._seq
            if status in _OVERLOAD:
                self._answers.append(Answer(seq, "overloaded"))
            elif stream is not None and stream.body_done is not None:
                self._answers.append(Answer(seq, "ok", now - stream.body_done))

    def failed(self, stream: Stream | None = None) -> None:
        """A request (whose body was ``stream``, if it started) ended without an answer."""
        with self._lock:
            self._answers.append(Answer(stream.seq if stream is not None else self._seq, "failed"))

    def deflate(self, stream: Stream) -> bool:
        """Whether the next entry of ``stream``'s body is deflated."""
        return self.policy.deflate(stream.group)

    # -- windows ------------------------------------------------------------------------------

    def _sum(self) -> list[float]:
        out = list(self._closed)
        for s in self._streams.values():
            for i, v in enumerate(s.counters()):
                out[i] += v
        return out

    def tick(self) -> Window | None:
        """Close a window if one is due and hand it to the policy and the controller."""
        with self._lock:
            now = self._clock()
            duration = now - self._start
            if duration < self.window:
                return None
            window = self._close_window(duration)
        self.windows += 1
        if logger.isEnabledFor(logging.DEBUG):
            g0, n0 = window.group_rate(0)
            g1, n1 = window.group_rate(1)
            logger.debug(
                "window %.2f s: %.1f MB/s body, %.1f MB/s files, %d active, %d waiting, "
                "capacity %s, per connection %.2f (%d) | %.2f (%d) MB/s, deflate %.2f cores, "
                "%d answers, %d overloaded, %d failed",
                window.duration, window.wire_rate / 1e6, window.payload_rate / 1e6,
                window.active, window.waiting, window.capacity, g0 / 1e6, n0, g1 / 1e6, n1,
                window.deflate_cpu / window.duration, len(window.latencies()),
                window.overloaded(), window.failed(),
            )  # fmt: skip
        if window.wire or window.active:
            self.policy.observe(window)
            if self.controller is not None:
                self.controller.observe(window)
        return window

    def _close_window(self, duration: float) -> Window:
        totals = self._sum()
        delta = [a - b for a, b in zip(totals, self._totals, strict=True)]
        now = self._start + duration
        samples = self._ended
        self._ended = []
        for s in self._streams.values():
            sample = self._sample(s, now)
            if sample is not None:
                samples.append(sample)
            self._marks[s.seq] = (s.counters(), now)
        wire_d = int(delta[0])
        window = Window(
            duration=duration,
            wire=wire_d,
            payload=_payload_of(wire_d, int(delta[1]), int(delta[2])),
            samples=tuple(samples),
            active=len(self._streams),
            answering=sum(1 for s in self._streams.values() if s.body_done is not None),
            waiting=self._waiting,
            capacity=self._capacity() if self._capacity is not None else None,
            deflate_cpu=float(delta[3]),
            deflate_in=int(delta[4]),
            deflate_out=int(delta[5]),
            answers=tuple(self._answers),
            next_seq=self._seq,
        )
        self._totals = totals
        self._start += duration
        self._answers = []
        return window

    def _sample(self, s: Stream, now: float) -> StreamSample | None:
        """What ``s`` sent since its mark, and for how long (up to its last byte)."""
        before, since = self._marks.get(s.seq, ((0, 0, 0, 0.0, 0, 0), s.opened))
        until = now if s.body_done is None else min(now, s.body_done)
        if until <= since:
            return None  # its body ended before this window: it only waits for an answer
        c = s.counters()
        wire = c[0] - before[0]
        payload = _payload_of(wire, c[1] - before[1], c[2] - before[2])
        return StreamSample(s.group, wire, payload, until - since)

    def summary(self) -> dict[str, str]:
        """What the adaptive parts decided, for reports."""
        out = {"compress": self.policy.summary()}
        if self.controller is not None:
            out["workers"] = self.controller.summary()
        if self.limiter is not None:
            out["bwlimit"] = f"{self.limiter.rate / 1e6:.2f} MB/s"
        return out


_LINKS: weakref.WeakKeyDictionary[object, Link] = weakref.WeakKeyDictionary()
_LINKS_LOCK = threading.Lock()


def link_for(owner: object, make: Callable[[], Link]) -> Link:
    """The link of ``owner`` (an XNAT session), made by ``make`` on first use."""
    with _LINKS_LOCK:
        link = _LINKS.get(owner)
        if link is None:
            link = _LINKS[owner] = make()
        return link
