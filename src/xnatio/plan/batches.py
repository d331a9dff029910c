"""Cutting a session into byte-balanced batches that keep series together.

A batch is what one REST request carries; the C-STORE transport uses the same inventory order.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from xnatio.errors import InputError
from xnatio.inventory import DicomFile

__all__ = ["Batch", "plan_batches"]


@dataclass(frozen=True)
class Batch:
    """Files sent together in one request (REST) or one association (C-STORE).

    Attributes
    ----------
    index
        Position of the batch, from 0; batches are numbered in file order.
    files
        The files, in inventory order.
    """

    index: int
    files: tuple[DicomFile, ...]

    @property
    def total_bytes(self) -> int:
        """Sum of the file sizes."""
        return sum(f.size for f in self.files)


# A series larger than this many mean batches is split even when there are enough batches to keep
# every series whole; otherwise one big series would make one batch the slowest by far.
_SPLIT_FACTOR = 1.5

_Item = tuple[int, DicomFile]  # (position in the inventory, file)


def _water_level(loads: list[int], amount: int) -> float:
    """Level to which the lightest bins must be filled so that they absorb ``amount`` bytes."""
    ordered = sorted(loads)
    below = 0
    for k in range(1, len(ordered) + 1):
        below += ordered[k - 1]
        level = (below + amount) / k
        if k == len(ordered) or level <= ordered[k]:
            return level
    return float(amount)  # pragma: no cover - the loop always returns


# Above this max/mean batch size, whole series are split too.
_MAX_IMBALANCE = 1.25


def _load(items: list[_Item]) -> int:
    return sum(f.size for _, f in items)


def _assign(sized: list[tuple[int, list[_Item]]], split: int, n: int) -> list[list[_Item]]:
    """Place the series of ``sized[split:]`` whole, then pour ``sized[:split]`` file by file."""
    bins: list[list[_Item]] = [[] for _ in range(n)]
    loads = [0] * n
    # Whole series: longest-processing-time first into the lightest bin (ties by bin index).
    heap: list[tuple[int, int]] = [(0, b) for b in range(n)]
    for size, group in sized[split:]:
        load, b = heapq.heappop(heap)
        bins[b].extend(group)
        loads[b] = load + size
        heapq.heappush(heap, (loads[b], b))
    # Split series, in inventory order: fill the lightest bins up to a common level with runs of
    # consecutive files. The level is recomputed per bin so rounding does not pile up in the last.
    poured = sorted((item for _, g in sized[:split] for item in g), key=lambda item: item[0])
    if not poured:
        return bins
    remaining = sum(f.size for _, f in poured)
    level = _water_level(loads, remaining)
    receivers = sorted((b for b in range(n) if loads[b] < level), key=lambda b: (loads[b], b))
    pos = 0
    for r, b in enumerate(receivers):
        rest = receivers[r:]
        fill = (remaining + sum(loads[x] for x in rest)) / len(rest)
        last = r == len(receivers) - 1
        while pos < len(poured) and (
            last or not bins[b] or loads[b] + poured[pos][1].size / 2 <= fill
        ):
            size = poured[pos][1].size
            bins[b].append(poured[pos])
            loads[b] += size
            remaining -= size
            pos += 1
    return bins


def plan_batches(files: Sequence[DicomFile], num_batches: int) -> list[Batch]:
    """Cut ``files`` into byte-balanced batches, keeping each series whole where possible.

    Whole series are placed first, largest first into the lightest batch. Series that must be
    split are then poured, as consecutive runs of instances, into the batches below the common
    fill level. A series is split only when there are more batches than series, when it is much
    larger than the mean batch, or when keeping every series whole would leave the largest batch
    more than 1.25 times the mean (for example 10 equal series in 8 batches).

    Parameters
    ----------
    files
        Files in inventory order.
    num_batches
        Batches wanted; fewer are made when there are fewer files.

    Returns
    -------
    list of Batch
        ``min(num_batches, len(files))`` non-empty batches (none for no files), each in inventory
        order, numbered in the order of their first file. Deterministic for the same input.

    Raises
    ------
    InputError
        If ``num_batches`` is less than 1.
    """
    if num_batches < 1:
        raise InputError(f"the number of batches must be at least 1, not {num_batches}")
    if not files:
        return []
    n = min(num_batches, len(files))

    series: dict[tuple[str, str], list[_Item]] = {}
    for item in enumerate(files):
        f = item[1]
        series.setdefault((f.study_instance_uid, f.series_instance_uid), []).append(item)
    target = sum(f.size for f in files) / n
    limit = target if len(series) < n else _SPLIT_FACTOR * target
    sized = sorted(
        ((sum(f.size for _, f in g), g) for g in series.values()),
        key=lambda sg: (-sg[0], sg[1][0][0]),
    )
    # Split the series that must be split; then, while the plan stays unbalanced, also split the
    # largest of the remaining ones (equal series that do not divide evenly into the batches).
    split = sum(1 for size, g in sized if size > limit and len(g) > 1)
    bins = _assign(sized, split, n)
    while split < len(sized) and max(_load(b) for b in bins) > _MAX_IMBALANCE * target:
        split = min(len(sized), split + max(1, split // 2))  # geometric: bounded work
        bins = _assign(sized, split, n)

    # Very large single files can leave a bin empty: give it the last file of the fullest bin.
    for b in range(n):
        if not bins[b]:
            donor = max(range(n), key=lambda d: (len(bins[d]), -d))
            bins[donor].sort(key=lambda item: item[0])
            bins[b].append(bins[donor].pop())

    for members in bins:
        members.sort(key=lambda item: item[0])
    bins.sort(key=lambda members: members[0][0])
    return [Batch(i, tuple(f for _, f in members)) for i, members in enumerate(bins)]
