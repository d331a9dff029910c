"""``--bwlimit``: one byte rate shared by every connection of a run.

:class:`RateLimiter` is a token bucket in its "virtual clock" form (the generic cell rate
algorithm): each chunk of request body reserves ``len(chunk) / rate`` seconds on one schedule
shared by all upload threads, and waits until its reservation is due. Up to ``burst`` bytes may go
at once after an idle moment; over any longer stretch the total stays at ``rate``. Connections that
send at the same time take turns chunk by chunk, so they share the rate evenly.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable

from xnatio.errors import InputError

__all__ = ["RateLimiter", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([bkmgt]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_rate(text: str) -> float:
    """Bytes per second from an rclone-style rate: ``20M``, ``1.5M``, ``800k``, ``1G``, ``5000``.

    Suffixes are binary, as in rclone (``k`` = 1024 bytes, ``M`` = 1024 k, ``G``, ``T``); a bare
    number is bytes per second (rclone would read it as KiB/s). ``MiB``, ``MB`` and ``/s`` are
    accepted after the letter.

    Raises
    ------
    InputError
        For anything else, zero, or a rate below 1 kB/s.
    """
    match = _RATE.match(text)
    if not match:
        raise InputError(
            f"--bwlimit must be a rate such as 20M, 1.5M or 800k (bytes per second), not {text!r}"
        )
    rate = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(rate) or rate < 1024:
        raise InputError(f"--bwlimit must be at least 1k (1024 bytes per second), not {text!r}")
    return rate


class RateLimiter:
    """A byte rate shared by many threads.

    Parameters
    ----------
    rate
        Bytes per second.
    burst
        Bytes that may go at once after an idle moment (default: a tenth of a second's worth,
        at least 64 KiB).
    clock
        Time source (tests pass their own).
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a positive number of bytes per second, not {rate!r}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 10, 65536.0))
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = clock()  # when the schedule is free again ("theoretical arrival")

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:.0f} B/s, burst={self.burst:.0f} B)"

    def reserve(self, n: int) -> float:
        """Book ``n`` bytes on the shared schedule; return the seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            self._tat = max(self._tat, now) + n / self.rate
            return max(0.0, self._tat - self.burst / self.rate - now)

    def take(self, n: int, stop: threading.Event | None = None) -> bool:
        """Wait until ``n`` bytes may be sent; False if ``stop`` was set while waiting."""
        delay = self.reserve(n)
        if delay <= 0:
            return True
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)
