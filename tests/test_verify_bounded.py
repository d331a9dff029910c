"""bounded_map: results in order, never more than ``ahead`` tasks submitted and not yet taken."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator

import pytest

from xnatio.verify.bounded import bounded_map


def test_order_and_bound() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(200):
            pulled += 1
            yield i

    taken = 0
    most_ahead = 0
    with cf.ThreadPoolExecutor(4) as pool:
        for result in bounded_map(pool, lambda x: x * x, items(), ahead=8):
            assert result == taken * taken  # in the order of the items
            taken += 1
            most_ahead = max(most_ahead, pulled - taken)
    assert taken == 200
    # Executor.map would have pulled all 200 items before the first result.
    assert most_ahead <= 8


def test_errors_surface_in_order() -> None:
    def fn(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    got: list[int] = []
    with cf.ThreadPoolExecutor(2) as pool:
        results = bounded_map(pool, fn, range(10), ahead=2)
        with pytest.raises(ValueError, match="three"):
            got.extend(results)  # keeps what came before the failure
    assert got == [0, 1, 2]
