"""Pre-flight checks and batching for an upload.

* :func:`check_inventory` refuses sources XNAT would not store as one session (several studies,
  conflicting duplicates) and drops identical duplicates.
* :func:`validate_label` enforces XNAT's ID rule ``^[A-Za-z0-9_-]+$``
  (xnat-server-behaviour.md §1.2 and §6.2).
* :func:`plan_batches` cuts the files into byte-balanced batches that keep series together.
* :func:`entry_name` and :func:`routing_comment` give the names XNAT stores and routes by.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory, SkippedFile

__all__ = [
    "Batch",
    "check_inventory",
    "entry_name",
    "plan_batches",
    "routing_comment",
    "validate_label",
]

_LABEL = re.compile(r"[A-Za-z0-9_-]+")


def validate_label(kind: str, value: str) -> None:
    """Check an XNAT project ID, subject or session label.

    Parameters
    ----------
    kind
        What the value is, for the message (``"project"``, ``"subject"``, ``"session"``).
    value
        The label.

    Raises
    ------
    InputError
        If ``value`` is empty or has characters outside ``A-Z a-z 0-9 _ -`` (XNAT's
        ``REGEX_VALID_ID``; labels with other characters are refused or silently rewritten).
    """
    if not value:
        raise InputError(f"{kind} label is empty; use letters, digits, '_' or '-'")
    if _LABEL.fullmatch(value):
        return
    bad = "".join(sorted({c for c in value if not _LABEL.fullmatch(c)}))
    raise InputError(
        f"{kind} label {value!r} has characters XNAT does not accept ({bad!r}); "
        "use only letters A-Z a-z, digits 0-9, '_' and '-'"
    )


def entry_name(f: DicomFile) -> str:
    """Archive entry name for ``f``: ``<SOPInstanceUID>.dcm``.

    With ``rename=false`` XNAT stores the entry path with unsafe characters replaced
    (xnat-server-behaviour.md §4.3); a UID is already safe, so the stored name is predictable.
    """
    return f"{f.sop_instance_uid}.dcm"


def routing_comment(project: str, subject: str, session: str) -> str:
    """Patient Comments (0010,4000) value that routes a C-STORE instance in XNAT (§6.2)."""
    return f"Project:{project} Subject:{subject} Session:{session}"


def _same_bytes(inv: Inventory, a: DicomFile, b: DicomFile) -> bool:
    if a.size != b.size:
        return False
    with inv.source.open(a.path) as fa, inv.source.open(b.path) as fb:
        while True:
            ca = fa.read(1 << 20)
            cb = fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def check_inventory(inv: Inventory, *, allow_multiple_studies: bool = False) -> Inventory:
    """Check that ``inv`` can be sent as one XNAT session.

    Parameters
    ----------
    inv
        The inventory to check.
    allow_multiple_studies
        Accept several StudyInstanceUIDs (XNAT then makes one session per study).

    Returns
    -------
    Inventory
        A new inventory on the same source, without identical duplicates (they are added to
        ``skipped`` as ``"duplicate of <path>"``).

    Raises
    ------
    InputError
        Several studies (unless allowed), or two files with the same SOP Instance UID and
        different bytes.
    """
    studies: dict[str, int] = {}
    for f in inv.files:
        studies[f.study_instance_uid] = studies.get(f.study_instance_uid, 0) + 1
    if len(studies) > 1 and not allow_multiple_studies:
        shown = ", ".join(f"{uid or '<none>'} ({n} files)" for uid, n in list(studies.items())[:3])
        more = f" and {len(studies) - 3} more" if len(studies) > 3 else ""
        raise InputError(
            f"SOURCE holds {len(studies)} studies ({shown}{more}); XNAT would split them into "
            "separate sessions. Upload one study per session, or pass --allow-multiple-studies"
        )

    first: dict[str, DicomFile] = {}
    dupes: list[tuple[DicomFile, DicomFile]] = []
    for f in inv.files:
        seen = first.setdefault(f.sop_instance_uid, f)
        if seen is not f:
            dupes.append((seen, f))
    if not dupes:
        return dataclasses.replace(inv, files=list(inv.files), skipped=list(inv.skipped))

    dropped: set[int] = set()
    skipped = list(inv.skipped)
    for original, dup in dupes:
        if not _same_bytes(inv, original, dup):
            raise InputError(
                f"{original.path} and {dup.path} share SOP Instance UID {dup.sop_instance_uid} "
                "but differ; XNAT would keep only one of them. Remove the wrong file"
            )
        dropped.add(id(dup))
        skipped.append(SkippedFile(dup.path, f"duplicate of {original.path}"))
    files = [f for f in inv.files if id(f) not in dropped]
    skipped.sort(key=lambda s: s.path)
    return dataclasses.replace(inv, files=files, skipped=skipped)


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


def _split(files: list[tuple[int, DicomFile]], parts: int) -> list[list[tuple[int, DicomFile]]]:
    """Cut consecutive files into ``parts`` non-empty runs of about equal bytes."""
    parts = max(1, min(parts, len(files)))
    total = sum(f.size for _, f in files)
    out: list[list[tuple[int, DicomFile]]] = []
    current: list[tuple[int, DicomFile]] = []
    acc = 0
    for i, item in enumerate(files):
        current.append(item)
        acc += item[1].size
        left_files = len(files) - i - 1
        left_parts = parts - len(out) - 1
        boundary = total * (len(out) + 1) / parts
        if left_parts > 0 and (acc >= boundary or left_files == left_parts):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def plan_batches(files: Sequence[DicomFile], num_batches: int) -> list[Batch]:
    """Cut ``files`` into byte-balanced batches, keeping each series whole where possible.

    Parameters
    ----------
    files
        Files in inventory order.
    num_batches
        Batches wanted; fewer are made when there are fewer files.

    Returns
    -------
    list of Batch
        ``min(num_batches, len(files))`` non-empty batches (none for no files). A series is split
        only when there are more batches than series, or when it is much larger than the mean
        batch. Deterministic for the same input.

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
    indexed = list(enumerate(files))

    series: dict[tuple[str, str], list[tuple[int, DicomFile]]] = {}
    for item in indexed:
        f = item[1]
        series.setdefault((f.study_instance_uid, f.series_instance_uid), []).append(item)
    total = sum(f.size for f in files)
    target = max(total / n, 1.0)

    pieces: list[list[tuple[int, DicomFile]]] = []
    for group in series.values():
        size = sum(f.size for _, f in group)
        if len(series) >= n:
            parts = math.ceil(size / target) if size > _SPLIT_FACTOR * target else 1
        else:
            parts = max(1, round(size / target))
        pieces.extend(_split(group, parts))
    # Too few pieces for the batch count: halve the largest splittable piece until there are enough.
    while len(pieces) < n:
        pieces.sort(key=lambda p: (-sum(f.size for _, f in p), p[0][0]))
        idx = next(i for i, p in enumerate(pieces) if len(p) > 1)
        pieces[idx : idx + 1] = _split(pieces[idx], 2)

    # Longest-processing-time first: biggest piece into the lightest batch (ties by index), so
    # each of the n bins receives at least one piece.
    pieces.sort(key=lambda p: (-sum(f.size for _, f in p), p[0][0]))
    heap: list[tuple[int, int]] = [(0, b) for b in range(n)]
    bins: list[list[tuple[int, DicomFile]]] = [[] for _ in range(n)]
    for piece in pieces:
        load, b = heapq.heappop(heap)
        bins[b].extend(piece)
        heapq.heappush(heap, (load + sum(f.size for _, f in piece), b))
    for members in bins:
        members.sort(key=lambda item: item[0])
    bins.sort(key=lambda members: members[0][0])
    return [Batch(i, tuple(f for _, f in members)) for i, members in enumerate(bins)]
