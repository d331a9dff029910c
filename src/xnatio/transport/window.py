"""What the upload measured over one stretch of time: the input of the adaptive decisions.

:class:`xnatio.transport.link.Link` samples every request body in flight a few times a second and
closes a :class:`Window` about every half second. :mod:`xnatio.transport.compression` and
:mod:`xnatio.transport.adaptive` decide from windows only, so both are pure logic that tests
drive with windows they write themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Answer", "StreamSample", "Window"]


@dataclass(frozen=True, slots=True)
class Answer:
    """How one request ended during the window.

    Attributes
    ----------
    seq
        The order in which its body started (later bodies have higher numbers), so that a
        decision can leave out requests that started before it.
    kind
        ``ok`` (any answer but the ones below), ``overloaded`` (429, 503, 504) or ``failed`` (no
        answer: reset, timeout).
    seconds
        For ``ok``: from the body's last byte to the answer.
    """

    seq: int
    kind: str
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamSample:
    """What one request body sent during the window.

    Attributes
    ----------
    group
        0 or 1: which half of the connections it belongs to (compression trials switch one
        half and compare it with the other).
    wire
        Body bytes the connection took during the window.
    payload
        File bytes those body bytes carried.
    seconds
        How long, within the window, the body was being sent (from its start or the window's,
        to its last byte or the window's end): rates per connection divide by these.
    """

    group: int
    wire: int
    payload: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Window:
    """Measurements over one window.

    Attributes
    ----------
    duration
        Seconds.
    wire, payload
        Body bytes sent by all connections (those that started or ended in the window too), and
        the file bytes they carried.
    samples
        Every body that sent during the window, with how long it sent.
    active
        Requests under way at the end of the window: bodies being sent, and bodies sent whose
        answer has not come yet.
    answering
        Of :attr:`active`, the requests whose body is sent and that wait for the answer.
    waiting
        Batches waiting for a connection at the end of the window (work beyond the capacity).
    capacity
        The connection budget's capacity during the window (None without a budget).
    deflate_cpu
        Thread CPU seconds spent compressing, summed over all threads.
    deflate_in, deflate_out
        Bytes into and out of the compressor.
    answers
        How the requests that ended in the window ended.
    next_seq
        The number the next body to start will get.
    """

    duration: float
    wire: int = 0
    payload: int = 0
    samples: tuple[StreamSample, ...] = ()
    active: int = 0
    answering: int = 0
    waiting: int = 0
    capacity: int | None = None
    deflate_cpu: float = 0.0
    deflate_in: int = 0
    deflate_out: int = 0
    answers: tuple[Answer, ...] = field(default=())
    next_seq: int = 0

    def latencies(self, since: int = 0) -> list[float]:
        """Seconds from the last byte to the answer, for requests from body ``since`` on."""
        return [a.seconds for a in self.answers if a.kind == "ok" and a.seq >= since]

    def overloaded(self, since: int = 0) -> int:
        """Answers saying the server is overloaded (429, 503, 504), from body ``since`` on."""
        return sum(1 for a in self.answers if a.kind == "overloaded" and a.seq >= since)

    def failed(self, since: int = 0) -> int:
        """Requests without an answer (reset, timeout), from body ``since`` on."""
        return sum(1 for a in self.answers if a.kind == "failed" and a.seq >= since)

    @property
    def wire_rate(self) -> float:
        """Body bytes per second over all connections."""
        return self.wire / self.duration if self.duration > 0 else 0.0

    @property
    def payload_rate(self) -> float:
        """File bytes per second over all connections."""
        return self.payload / self.duration if self.duration > 0 else 0.0

    def group_rate(self, group: int | None) -> tuple[float, int]:
        """Payload bytes per second per connection while sending, over the bodies of ``group``
        (all groups when None), and how many bodies that is over."""
        chosen = [s for s in self.samples if group is None or s.group == group]
        seconds = sum(s.seconds for s in chosen)
        if not chosen or seconds <= 0:
            return 0.0, 0
        return sum(s.payload for s in chosen) / seconds, len(chosen)
