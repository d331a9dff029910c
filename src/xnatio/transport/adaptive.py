"""``--upload-workers auto``: as many connections as the link and the server reward, and no more.

:class:`WorkerController` changes the capacity of the run's connection budget
(:class:`~xnatio.budget.LocalBudget`, shared by every session of an ``xio upload-many`` run), so
all sessions grow and shrink together instead of each adapting on its own. It decides from
measured windows (:class:`~xnatio.transport.window.Window`, about half a second each):

- **Start** at 8 connections (or the ceiling, if lower): few for a server (XNAT's defaults are 200
  request threads and 40 database connections), and one round trip less to ramp up where the
  answers clock the capacity (below), which with large batches takes seconds.
- **Slow start.** While there are batches waiting for a connection and every connection is
  busy, double the capacity after each measured window, as long as the last increase paid: the
  aggregate body rate must have grown by at least half of what the added connections would add
  if each got as much as before (efficiency >= 0.5).
- **Congestion avoidance.** Once an increase did not pay, go back to the capacity before it,
  wait six windows, then probe again by a quarter (at least one connection); keep a probe only
  if it pays by the same rule.
- **Back off** (multiplicative decrease) at once when the server answers 429, 503 or 504, or a
  request ends without an answer (reset, timeout): capacity x 0.7. Also when the time from a
  body's last byte to its answer rises above twice its lowest value plus one second (the
  server queues work): capacity x 0.85. Then hold for six windows.
- A window right after a change is skipped (new connections are still starting), and so is a
  window without waiting batches: with nothing beyond the capacity to send, more connections
  could not show what they would bring.
- **When the server holds the requests** (at least half of them have sent their body and wait for
  the answer: a busy server, or a proxy that buffers whole bodies before passing them on), bytes
  say nothing about what more connections would bring. The answers then clock the capacity, as
  acknowledgements clock TCP's window: each answer that came within 1.1x the fastest answer time
  seen (plus a quarter second) lets one more request in (at most doubling per window; one per
  window after the first back-off), and answers slower than 1.3x the fastest (plus a quarter
  second) mean the server queues work: capacity x 0.85, then hold for six windows.

The user's ``--upload-workers N`` (42 by default) is the ceiling; the capacity never drops
below 1. Every change is recorded with its numbers (:attr:`WorkerController.decisions`).

Answers come only when a batch ends, so the controller learns no faster than batches end, and the
last batches run alone while connections idle. ``auto`` therefore sends a large session in
smaller batches (:meth:`xnatio.options.RestOptions.batches_for`: up to four per connection of the
ceiling, of at least 50 files each): on the overload benchmark, 168 batches of 89 files instead
of 42 of 357 reach the server's pace within seconds and end together.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from xnatio.transport.compression import Decision
from xnatio.transport.window import Window

__all__ = ["Adjustable", "WorkerController"]

logger = logging.getLogger(__name__)

START = 8
_EFFICIENCY = 0.5
_HOLD = 6
_OVERLOAD_CUT = 0.7
_LATENCY_CUT = 0.85
_LATENCY_FACTOR = 2.0
_LATENCY_SLACK = 1.0
_QUEUE_FACTOR = 1.3
_CLEAR_FACTOR = 1.1
_QUEUE_SLACK = 0.25


class Adjustable(Protocol):
    """A connection budget whose capacity can be changed (:class:`~xnatio.budget.LocalBudget`)."""

    @property
    def capacity(self) -> int:
        """The most connections open at once."""
        ...

    def set_capacity(self, capacity: int) -> None:
        """Change the capacity."""
        ...


@dataclass
class WorkerController:
    """AIMD on the capacity of a connection budget; see the module notes.

    Parameters
    ----------
    budget
        The budget every upload request of the run takes a slot of.
    ceiling
        The most connections (the user's ``--upload-workers``).
    start
        Capacity to begin with.
    clock
        Time source (tests pass their own).
    """

    budget: Adjustable
    ceiling: int
    start: int = START
    clock: Callable[[], float] = time.monotonic
    decisions: list[Decision] = field(default_factory=list)
    peak: int = 0
    _slow_start: bool = True
    _base: tuple[int, float] | None = None
    _settle: int = 0
    _hold: int = 0
    _latency_floor: float | None = None
    _since: int = 0  # requests whose body starts from this number on saw the last cut
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        """Set the starting capacity."""
        self._set(min(self.start, self.ceiling), "start")

    def observe(self, w: Window) -> None:
        """Take one window into account (called by the link's monitor)."""
        with self._lock:
            cap = self.budget.capacity
            # One cut per generation of requests: those started before a cut end as they end
            # (a 504 arrives long after the overload began), and must not cut again.
            overloaded, failed = w.overloaded(self._since), w.failed(self._since)
            if overloaded or failed:
                parts = [f"{overloaded} overload answers"] if overloaded else []
                parts += [f"{failed} requests without an answer"] if failed else []
                self._cut(cap, _OVERLOAD_CUT, " and ".join(parts), w.next_seq)
                return
            typical = self._answer_time(w)
            if w.answering * 2 >= max(1, w.active):
                # Most requests wait for answers: the server, not the link, sets the pace.
                self._server_step(w, cap, typical)
                return
            if self._latency_rose(cap, typical, w):
                return
            if self._settle:
                self._settle -= 1
                return
            if w.waiting == 0 or w.active != cap:
                return  # nothing waits beyond the capacity, or a change is still draining
            rate = w.wire_rate
            if self._hold:
                self._hold -= 1
                if self._base is not None and self._base[0] == cap:
                    self._base = (cap, max(self._base[1], rate))
                return
            self._step(cap, rate)

    def summary(self) -> str:
        """One line: the capacity now, the highest reached, and the last change."""
        last = f"; last change: {self.decisions[-1].detail}" if self.decisions else ""
        return f"auto: {self.budget.capacity} connections now, at most {self.peak}{last}"

    # -- internals -----------------------------------------------------------------------------

    def _step(self, cap: int, rate: float) -> None:
        base = self._base
        if base is None or cap <= base[0]:
            self._base = (cap, rate)
            self._raise(cap, f"{rate / 1e6:.1f} MB/s with {cap}")
            return
        k0, r0 = base
        efficiency = (rate / r0 - 1) / (cap / k0 - 1) if r0 > 0 else 1.0
        detail = f"{cap} connections: {rate / 1e6:.1f} MB/s, {k0}: {r0 / 1e6:.1f} MB/s"
        if efficiency >= _EFFICIENCY:
            self._base = (cap, rate)
            self._raise(cap, f"{detail} (paid, efficiency {efficiency:.2f})")
        else:
            self._slow_start = False
            self._hold = _HOLD
            self._set(k0, f"{detail} (efficiency {efficiency:.2f}: back to {k0})")

    def _raise(self, cap: int, why: str) -> None:
        if cap >= self.ceiling:
            return
        new = cap * 2 if self._slow_start else cap + max(1, cap // 4)
        self._set(min(self.ceiling, new), why)

    def _answer_time(self, w: Window) -> float | None:
        """The window's typical time from a body's last byte to its answer; keeps the lowest."""
        all_answers = w.latencies()
        if all_answers:
            median = statistics.median(all_answers)
            floor = self._latency_floor
            self._latency_floor = median if floor is None else min(floor, median)
        recent = w.latencies(self._since)
        return statistics.median(recent) if recent else None

    def _latency_rose(self, cap: int, typical: float | None, w: Window) -> bool:
        floor = self._latency_floor
        if typical is None or floor is None:
            return False
        if typical <= _LATENCY_FACTOR * floor + _LATENCY_SLACK:
            return False
        why = f"answers took {typical:.1f} s after the body (lowest {floor:.1f} s)"
        self._cut(cap, _LATENCY_CUT, why, w.next_seq)
        return True

    def _server_step(self, w: Window, cap: int, typical: float | None) -> None:
        """Pace by answers while the server holds most requests (its queue, not the link's).

        Bytes say nothing here (a buffering proxy takes whole bodies at once), so the answers
        clock the changes, as acknowledgements clock TCP's window: each answer that came about as
        fast as the fastest ever lets one more request in (at most doubling, and one per window
        after the first back-off); answers slower than 1.3x the fastest mean the
        server queues work: x0.85.
        """
        floor = self._latency_floor
        if typical is None or floor is None:
            return
        if typical > _QUEUE_FACTOR * floor + _QUEUE_SLACK:
            why = f"answers took {typical:.1f} s after the body (fastest {floor:.1f} s)"
            self._cut(cap, _LATENCY_CUT, why, w.next_seq)
            return
        if self._hold:
            self._hold -= 1
            return
        if typical > _CLEAR_FACTOR * floor + _QUEUE_SLACK or w.waiting == 0 or cap >= self.ceiling:
            return
        answers = len(w.latencies(self._since))
        grow = min(answers, cap) if self._slow_start else 1
        self._set(
            min(self.ceiling, cap + grow),
            f"{answers} answers in {typical:.1f} s (fastest {floor:.1f} s)",
        )

    def _cut(self, cap: int, factor: float, why: str, since: int) -> None:
        self._slow_start = False
        self._hold = _HOLD
        self._base = None
        self._since = since
        new = max(1, int(cap * factor))
        if new != cap:
            self._set(new, why)

    def _set(self, capacity: int, why: str) -> None:
        self.budget.set_capacity(capacity)
        self.peak = max(self.peak, capacity)
        self._settle = 1
        self.decisions.append(Decision(self.clock(), f"capacity {capacity}", why))
        logger.info("upload workers: %d (%s)", capacity, why)
