"""A connection budget: how many connections to one server may be open at once, in total.

Every HTTP request of an :class:`~xnatio.xnat.session.XnatSession` and every C-STORE association
takes one slot of the budget it was given for as long as it uses the connection, so a run of many
sessions (``xio upload-many``) never has more than :attr:`ConnectionBudget.capacity` connections
open to the server, however many sessions and workers it runs. Without a budget nothing is capped
beyond each transport's own worker count.

:class:`ConnectionBudget` is the interface; :class:`LocalBudget` implements it for the threads of
one process. A cluster-wide implementation (one ``distributed.Semaphore``) lives in
:mod:`xnatio.many.dask`. A controller that adapts the number of connections to the link (fewer
when the server slows down) shares the budget by changing its capacity with
:meth:`LocalBudget.set_capacity`: all sessions then shrink or grow together instead of each having
a limit of its own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from xnatio.errors import InputError, XnatioError

__all__ = ["BudgetClosed", "BudgetStats", "ConnectionBudget", "LocalBudget", "slot"]


class BudgetClosed(XnatioError):
    """The run was stopped (Ctrl-C, or a failure with ``--fail-fast``): no new connections."""

    exit_code = 130


@runtime_checkable
class ConnectionBudget(Protocol):
    """Slots for connections to one server, shared by everything that connects to it.

    Implementations must be safe to use from many threads. A slot is taken before a connection
    is used (an HTTP request, a DICOM association) and given back when it is no longer used.
    """

    @property
    def capacity(self) -> int:
        """The most slots that may be taken at once."""
        ...

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one slot, waiting up to ``timeout`` seconds (forever when None).

        Returns False when no slot became free in time.
        """
        ...

    def release(self) -> None:
        """Give back one slot taken with :meth:`acquire`."""
        ...


@contextlib.contextmanager
def slot(budget: ConnectionBudget | None) -> Iterator[None]:
    """Hold one slot of ``budget`` (nothing when it is None) for the ``with`` block."""
    if budget is None:
        yield
        return
    budget.acquire()
    try:
        yield
    finally:
        budget.release()


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """What a :class:`LocalBudget` has seen.

    Attributes
    ----------
    capacity
        The current capacity.
    in_use
        Slots taken now.
    peak
        The most slots ever taken at once.
    acquired
        Slots taken in all.
    waited
        Seconds spent waiting for a slot, summed over all callers.
    """

    capacity: int
    in_use: int
    peak: int
    acquired: int
    waited: float


class LocalBudget:
    """A connection budget for the threads of one process.

    Parameters
    ----------
    capacity
        The most connections open at once (at least 1).

    Notes
    -----
    Waiters are served in the order they arrived, so a session that asked first gets the next
    free connection and no session starves. :meth:`set_capacity` may be called at any time (by an
    adaptive controller): raising it wakes waiters at once; lowering it lets the connections in
    use finish and hands out no new slot until fewer than the new capacity are taken.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise InputError(f"--max-connections must be at least 1, not {capacity}")
        self._capacity = capacity
        self._cond = threading.Condition()
        self._in_use = 0
        self._peak = 0
        self._acquired = 0
        self._waited = 0.0
        self._queue: list[object] = []
        self._closed: str | None = None

    def __repr__(self) -> str:
        return f"LocalBudget(capacity={self._capacity}, in_use={self._in_use})"

    @property
    def capacity(self) -> int:
        """The most slots that may be taken at once."""
        return self._capacity

    def set_capacity(self, capacity: int) -> None:
        """Change the capacity (at least 1); see the class notes."""
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        with self._cond:
            self._capacity = capacity
            self._cond.notify_all()

    def close(self, reason: str = "the run was stopped") -> None:
        """Refuse every later :meth:`acquire` (and wake those waiting) with :class:`BudgetClosed`.

        Connections in use are not touched; their slots can still be released.
        """
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def reopen(self) -> None:
        """Undo :meth:`close` (a stopped run's last requests, such as its logout)."""
        with self._cond:
            self._closed = None

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one slot, waiting up to ``timeout`` seconds (forever when None).

        Raises
        ------
        BudgetClosed
            After :meth:`close`.
        """
        ticket = object()
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._in_use >= self._capacity:
                    if self._closed is not None:
                        raise BudgetClosed(self._closed)
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._queue.remove(ticket)
                # The next in line may be able to go now (or the head left after a timeout).
                self._cond.notify_all()
            if self._closed is not None:
                raise BudgetClosed(self._closed)
            self._in_use += 1
            self._acquired += 1
            self._peak = max(self._peak, self._in_use)
            self._waited += time.monotonic() - start
            return True

    def release(self) -> None:
        """Give back one slot."""
        with self._cond:
            if self._in_use <= 0:
                raise RuntimeError("LocalBudget.release() without a slot taken")
            self._in_use -= 1
            self._cond.notify_all()

    def stats(self) -> BudgetStats:
        """Capacity, slots in use, the peak, and how long callers waited."""
        with self._cond:
            return BudgetStats(
                self._capacity, self._in_use, self._peak, self._acquired, self._waited
            )
