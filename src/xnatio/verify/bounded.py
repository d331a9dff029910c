"""Mapping over a thread pool with a bounded number of tasks in flight."""

from __future__ import annotations

import concurrent.futures as cf
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["bounded_map"]

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    pool: cf.Executor, fn: Callable[[T], R], items: Iterable[T], ahead: int
) -> Iterator[R]:
    """``pool.map(fn, items)``, in order, with at most ``ahead`` tasks submitted at a time.

    ``Executor.map`` submits every item at once: a future per file of a 100,000-file session
    held about 100 MB while the checks ran (docs/benchmarks.md, "Where the memory goes").
    """
    pending: deque[cf.Future[R]] = deque()
    for item in items:
        if len(pending) >= ahead:
            yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()
