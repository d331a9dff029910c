"""What the sandbox counts about itself: connections, requests, associations, and the load on
its ingest model (:mod:`xnatio.sandbox.ingest`).

A :class:`Gauge` counts things open at once and keeps the peak, so a test or a benchmark can
check that a client never had more than N connections open, or that an overloaded server queued
requests. Read everything at once with :meth:`xnatio.sandbox.Sandbox.stats` or
``GET /sandbox/stats``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Gauge", "IngestStats", "Reading", "SandboxStats"]


@dataclass(frozen=True)
class Reading:
    """One gauge at one moment.

    Attributes
    ----------
    current
        Open now.
    peak
        The most open at once since the last reset (at least ``current``).
    total
        How many were opened since the last reset.
    """

    current: int = 0
    peak: int = 0
    total: int = 0


class Gauge:
    """A thread-safe count of things open at once, with its peak and a running total."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current = 0
        self._peak = 0
        self._total = 0

    def __repr__(self) -> str:
        return f"Gauge({self.reading()!r})"

    def up(self) -> None:
        """One more is open."""
        with self._cond:
            self._current += 1
            self._total += 1
            self._peak = max(self._peak, self._current)
            self._cond.notify_all()

    def down(self) -> None:
        """One fewer is open."""
        with self._cond:
            self._current -= 1
            self._cond.notify_all()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Count one as open for the duration of the block."""
        self.up()
        try:
            yield
        finally:
            self.down()

    def reading(self) -> Reading:
        """The current count, the peak and the total."""
        with self._cond:
            return Reading(self._current, self._peak, self._total)

    def reset(self) -> None:
        """Start a new measurement: the peak becomes the current count, the total zero."""
        with self._cond:
            self._peak = self._current
            self._total = 0

    def wait_for(self, predicate: Callable[[int], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate(current)`` holds; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not predicate(self._current):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True


@dataclass(frozen=True)
class IngestStats:
    """The load on the ingest model (all counts since the last reset).

    Attributes
    ----------
    profile
        The model's constants (:class:`xnatio.sandbox.ingest.IngestProfile` as a dict).
    threads
        Requests holding one of the modelled request threads.
    queued
        Requests waiting for a thread (Tomcat's accept queue).
    db_connections
        Files holding a connection of the modelled database pool.
    db_waiting
        Files waiting for a database connection.
    lock_waiting
        Files (holding a database connection) waiting for the global session lock.
    files
        Files that paid the per-file cost.
    refused
        Requests answered 503 because the threads and the queue were full.
    gateway_timeouts
        Requests answered 504 by the modelled proxy.
    finished_after_timeout
        Requests that were answered 504 and then ran to their end on the server.
    """

    profile: dict[str, Any]
    threads: Reading
    queued: Reading
    db_connections: Reading
    db_waiting: Reading
    lock_waiting: Reading
    files: int
    refused: int
    gateway_timeouts: int
    finished_after_timeout: int


@dataclass(frozen=True)
class SandboxStats:
    """Everything the sandbox counts (:meth:`xnatio.sandbox.Sandbox.stats`).

    Attributes
    ----------
    http_connections
        TCP connections to the HTTP port. A connection the modelled proxy answered 504 ends
        then, although its import carries on (see ``ingest.threads``).
    http_requests
        HTTP requests being handled, ``/sandbox/`` ones included.
    dicom_associations
        TCP connections to the DICOM receiver (one association each).
    ingest
        The ingest model's load, or None when the sandbox runs without one.
    """

    http_connections: Reading
    http_requests: Reading
    dicom_associations: Reading
    ingest: IngestStats | None = None
