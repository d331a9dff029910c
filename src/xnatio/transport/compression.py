"""``--compress auto``: deflate request bodies only when the link, not the CPU, limits the upload.

With ``auto`` every body is a chunked zip (:mod:`xnatio.transport.zipstream`) whose entries are
deflated or stored one by one, as :meth:`CompressionPolicy.deflate` says when each entry starts,
so a decision takes effect within one file on every connection. The decision is made from
measurements taken during the upload (:class:`~xnatio.transport.window.Window`), never from the
kind of link:

1. **Start stored.** Nothing is compressed at first.
2. **Calibrate the compressor** once, on about a MiB of the session's own files (zlib level 1):
   input bytes per CPU second ``speed`` and the ratio ``ratio``.
3. **Gate.** From the first window on, with the measured uncompressed rate ``U`` (file bytes per
   second, all connections): compression can pay only if
   ``min(speed * cpus / 2, U * ratio) >= 1.3 * U``. That is, half of the machine's cores could
   compress faster than the link now carries the data, and the data shrinks enough. On loopback
   or a fast LAN ``U`` is far above what one core compresses, so no trial happens there.
4. **Trial.** Half of the connections (by the order they opened) deflate, the other half stays
   stored, on the same link at the same time. After a settling window, two windows compare the
   file bytes per second per connection of the two halves. Where the link limits, every
   connection gets the same bytes per second, so the deflating half carries about ``ratio``
   times the files; where the server or the CPU limits, about as much as the stored half.
   Deflate is kept only if the deflating half carried at least ``1 + (ratio - 1) / 2`` times
   (and at least 1.15x) the data of the stored half. With a single connection the trial deflates
   it and compares with the window before.
5. **Confirm.** Once every connection deflates, each must carry at least 1.1x the files a stored
   connection carried in the trial (two windows after a settling one, with about as many
   connections sending as in the trial); otherwise compression stops (when everyone compresses,
   the CPU may be what limits).
6. **Watchdog.** While deflating, if the compressor uses 70% or more of all cores, the CPU may
   have become the limit: a reverse trial (half the connections stored) decides again, and deflate
   stays only while it carries at least 1.05x.

Trials are at least 20 s apart and at most three per run. Every decision is recorded with its
numbers (:attr:`CompressionPolicy.decisions`).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from xnatio.transport.window import Window

__all__ = ["CompressionPolicy", "Decision", "calibrate"]

logger = logging.getLogger(__name__)

#: zlib level for compressed bodies: on realistic MR pixel data level 1 gives 2.2x at about
#: 64 MB/s per core, level 3 2.34x at 39 MB/s, level 6 2.35x at 12 MB/s
#: (docs/parallel-uploads.md "Compression").
LEVEL = 1

_GATE_GAIN = 1.3
_KEEP_GAIN = 1.15
_STAY_GAIN = 1.05
_SHARE = 0.5
_CONFIRM_GAIN = 1.1
_WATCHDOG_CPU = 0.7
_MIN_RATIO = 1.1
_TRIAL_SPACING = 20.0
_MAX_TRIALS = 3
_SAMPLE_BYTES = 1 << 20
_SETTLE_WINDOWS = 1
_JUDGE_WINDOWS = 2


@dataclass(frozen=True, slots=True)
class Decision:
    """One step of the policy, for reports: when, what, and the numbers behind it."""

    at: float
    action: str
    detail: str


@dataclass
class _Confirm:
    stored: float  # file bytes per second per connection of the stored half during the trial
    connections: int  # connections sending during the trial
    windows: int = 0
    rates: list[float] = field(default_factory=list)


@dataclass
class _Trial:
    group: int | None  # the group that flips; None: every connection (single-connection trial)
    before: float  # per-connection payload rate before the trial (single-connection trials)
    active: int  # connections sending when it started
    windows: int = 0
    # Summed over the judged windows, per half: file bytes, and connection-seconds.
    flipped: list[float] = field(default_factory=lambda: [0.0, 0.0])
    other: list[float] = field(default_factory=lambda: [0.0, 0.0])

    def add(self, w: Window) -> None:
        for s in w.samples:
            acc = self.flipped if self.group is None or s.group == self.group else self.other
            acc[0] += s.payload
            acc[1] += s.seconds


@dataclass
class CompressionPolicy:
    """Decides, from measured windows, whether new zip entries are deflated.

    Parameters
    ----------
    cpus
        Cores this process may use.
    speed
        Compressor input bytes per CPU second (from :func:`calibrate`, then from the upload).
    ratio
        Input bytes per compressed byte.
    mode
        ``"auto"`` decides; ``"deflate"`` and ``"none"`` never change.
    clock
        Time source (tests pass their own).
    """

    cpus: int
    speed: float = 0.0
    ratio: float = 1.0
    mode: str = "auto"
    clock: Callable[[], float] = time.monotonic
    deflating: bool = False
    decisions: list[Decision] = field(default_factory=list)
    _trial: _Trial | None = None
    _confirm: _Confirm | None = None
    _trials: int = 0
    _last_trial: float = float("-inf")
    _seen: int = 0
    _last_rate: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.deflating = self.mode == "deflate"

    def _now(self) -> float:
        return self.clock()

    def deflate(self, group: int) -> bool:
        """Whether the next entry of a connection in ``group`` is deflated."""
        trial = self._trial
        if trial is not None and (trial.group is None or trial.group == group):
            return not self.deflating
        return self.deflating

    def observe(self, w: Window) -> None:
        """Take one window into account (called by the link's monitor)."""
        if self.mode != "auto":
            return
        with self._lock:
            self._learn(w)
            self._seen += 1
            if self._trial is not None:
                self._judge(w, self._trial)
                return
            if self._confirm is not None:
                self._check(w, self._confirm)
                return
            rate, n = w.group_rate(None)
            if n:  # the rate per connection a single-connection trial compares with
                self._last_rate = rate
            if self._may_try():
                self._consider(w)

    def summary(self) -> str:
        """One line: where the policy ended and why."""
        if self.mode != "auto":
            return self.mode
        state = "deflate" if self.deflating else "none"
        if self._trial is not None:
            return f"auto -> {state} (a trial was still running: {self.decisions[-1].detail})"
        return f"auto -> {state}" + (f" ({self.decisions[-1].detail})" if self.decisions else "")

    # -- internals -----------------------------------------------------------------------------

    def _learn(self, w: Window) -> None:
        # Real compression replaces the calibration sample's figures.
        if w.deflate_in >= _SAMPLE_BYTES and w.deflate_cpu > 0 and w.deflate_out > 0:
            self.speed = w.deflate_in / w.deflate_cpu
            self.ratio = w.deflate_in / w.deflate_out

    def _may_try(self) -> bool:
        return (
            self._seen >= 1
            and self._trials < _MAX_TRIALS
            and self._now() - self._last_trial >= _TRIAL_SPACING
        )

    def _consider(self, w: Window) -> None:
        if w.active == 0 or w.payload_rate <= 0:
            return
        if not self.deflating:
            if self.ratio < _MIN_RATIO or self.speed <= 0:
                return
            rate = w.payload_rate
            predicted = min(self.speed * self.cpus / 2, rate * self.ratio)
            if predicted >= _GATE_GAIN * rate:
                self._start(
                    w,
                    f"link {rate / 1e6:.1f} MB/s, compressor {self.speed / 1e6:.0f} "
                    f"MB/s per core, ratio {self.ratio:.2f}",
                )
        elif w.duration > 0 and w.deflate_cpu / w.duration >= _WATCHDOG_CPU * self.cpus:
            self._start(w, f"compressor busy ({w.deflate_cpu / w.duration:.1f} cores)")

    def _start(self, w: Window, why: str) -> None:
        group: int | None = 1 if w.active >= 2 else None
        if group is None and self._last_rate <= 0:
            return  # one connection: first measure it for a whole window, then compare
        self._trial = _Trial(group, self._last_rate, max(1, w.active))
        self._trials += 1
        self._last_trial = self._now()
        what = "stored" if self.deflating else "deflated"
        who = "half the connections" if group is not None else "the connection"
        self._decide("trial", f"{why}: {who} {what}")

    def _judge(self, w: Window, trial: _Trial) -> None:
        trial.windows += 1
        if trial.windows <= _SETTLE_WINDOWS:  # connections are still switching
            return
        trial.add(w)
        if trial.windows < _SETTLE_WINDOWS + _JUDGE_WINDOWS:
            return
        flipped = trial.flipped[0] / trial.flipped[1] if trial.flipped[1] else 0.0
        if trial.group is None:
            other = trial.before
        else:
            other = trial.other[0] / trial.other[1] if trial.other[1] else 0.0
        if flipped <= 0 or other <= 0:
            if trial.windows >= _SETTLE_WINDOWS + 4 * _JUDGE_WINDOWS:
                self._end("inconclusive", "no window with both halves sending")
            return
        # In a reverse trial (while deflating) the flipped half is the stored one.
        deflated, stored = (other, flipped) if self.deflating else (flipped, other)
        gain = deflated / stored
        # On a link that limits, each connection gets the same bytes whatever they carry, so the
        # deflating half carries about `ratio` times the files; a server or CPU that limits
        # leaves the gain near 1. Half the ratio's gain separates the two.
        need = _STAY_GAIN if self.deflating else max(_KEEP_GAIN, 1 + _SHARE * (self.ratio - 1))
        detail = (
            f"deflating connections carried {gain:.2f}x the data of stored ones "
            f"({deflated / 1e6:.2f} vs {stored / 1e6:.2f} MB/s each, needed {need:.2f}x)"
        )
        switched_on = not self.deflating and gain >= need
        self.deflating = gain >= need
        self._end("deflate" if self.deflating else "none", detail)
        if switched_on:
            self._confirm = _Confirm(stored, trial.active)

    def _check(self, w: Window, confirm: _Confirm) -> None:
        """Once every connection deflates, each must carry more than a stored one did."""
        confirm.windows += 1
        if confirm.windows <= _SETTLE_WINDOWS:
            return
        rate, n = w.group_rate(None)
        # As many connections as in the trial (not the end of the upload, when few remain).
        if n and n >= 0.75 * confirm.connections:
            confirm.rates.append(rate)
        if len(confirm.rates) < _JUDGE_WINDOWS:
            if confirm.windows > _SETTLE_WINDOWS + 4 * _JUDGE_WINDOWS:
                self._confirm = None  # no comparable window: keep what the trial showed
            return
        self._confirm = None
        now = sum(confirm.rates) / len(confirm.rates)
        detail = (
            f"with every connection deflating, each carried {now / 1e6:.2f} MB/s of files; "
            f"stored ones carried {confirm.stored / 1e6:.2f} in the trial"
        )
        if now >= _CONFIRM_GAIN * confirm.stored:
            self._decide("confirmed", detail)
        else:
            self.deflating = False  # the CPU (or the server) cannot keep up with all of them
            self._decide("none", detail)

    def _end(self, action: str, detail: str) -> None:
        self._trial = None
        self._decide(action, detail)

    def _decide(self, action: str, detail: str) -> None:
        self.decisions.append(Decision(self._now(), action, detail))
        logger.info("compression: %s (%s)", action, detail)


def calibrate(files: Iterable[BinaryIO], limit: int = _SAMPLE_BYTES) -> tuple[float, float]:
    """Compress up to ``limit`` bytes of ``files`` at :data:`LEVEL`; return (speed, ratio).

    ``speed`` is input bytes per CPU second of this thread, ``ratio`` input per output byte.
    Each file object is read and closed.
    """
    took, out_n, in_n = 0.0, 0, 0
    for fh in files:
        with fh:
            data = fh.read(limit - in_n)
        if not data:
            continue
        t = time.thread_time()
        comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        out_n += len(comp.compress(data)) + len(comp.flush())
        took += time.thread_time() - t
        in_n += len(data)
        if in_n >= limit:
            break
    if not in_n or not out_n:
        return 0.0, 1.0
    return in_n / max(took, 1e-6), in_n / out_n
