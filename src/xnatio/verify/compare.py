"""Compare the instances of a local inventory with the files a server session lists.

xnatio names archive entries ``<SOPInstanceUID>.dcm`` with ``rename=false``, so the stored name of
every instance it sends is known in advance (docs/xnat-behaviour.md §3.4 step 8, §4.3): each
instance must appear exactly once, in the scan it belongs to.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xnatio.inventory import DicomFile
from xnatio.xnat.listings import ServerFile
from xnatio.xnat.naming import scan_id_for, stored_name, template_name

__all__ = ["Comparison", "compare", "comparison_dict", "present_names"]


@dataclass
class Comparison:
    """Result of comparing a server session with the local inventory.

    Attributes
    ----------
    expected
        Number of instances in the inventory.
    matched
        Instances found exactly once, in the right scan.
    missing
        Inventory paths whose instance is not on the server.
    misplaced
        ``(path, found_in_scan)`` for instances found under another scan.
    duplicated
        Inventory paths whose instance appears more than once.
    extra
        Server files that belong to no instance of the inventory (``scan/name``).
    per_scan
        ``scan -> (expected, found)`` instance counts.
    found
        Inventory path -> the server's URI of its file, for instances found exactly once.
    """

    expected: int
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    misplaced: list[tuple[str, str]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    per_scan: dict[str, tuple[int, int]] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every instance is present exactly once in its scan (extras allowed)."""
        return not (self.missing or self.misplaced or self.duplicated)


def compare(files: Sequence[DicomFile], server_files: Sequence[ServerFile]) -> Comparison:
    """Compare the inventory ``files`` with the files a server session lists."""
    by_name: dict[str, list[ServerFile]] = defaultdict(list)
    for sf in server_files:
        by_name[sf.name].append(sf)
    names = [stored_name(f) for f in files]
    known_names = set(names)
    # XNAT's template names only appear when it renamed files (rename=true, or a name clash);
    # computing them costs a Java-style hash per instance, so do it only when the server holds
    # names that are not ours.
    alts: list[str | None] = [None] * len(files)
    if any(name not in known_names for name in by_name):
        alts = [template_name(f) for f in files]
        known_names.update(a for a in alts if a is not None)
    result = Comparison(expected=len(files))
    expected_counts: Counter[str] = Counter()
    found_counts: Counter[str] = Counter()
    no_hits: list[ServerFile] = []
    for f, name, alt in zip(files, names, alts, strict=True):
        scan = scan_id_for(f)
        expected_counts[scan] += 1
        hits = by_name.get(name, no_hits)
        if alt is not None:
            hits = hits + by_name.get(alt, no_hits)
        if len(hits) == 0:
            result.missing.append(f.path)
        elif len(hits) > 1:
            result.duplicated.append(f.path)
        elif hits[0].scan != scan:
            result.misplaced.append((f.path, hits[0].scan))
            result.found[f.path] = hits[0].uri
        else:
            result.matched += 1
            result.found[f.path] = hits[0].uri
    for sf in server_files:
        found_counts[sf.scan] += 1
        if sf.name not in known_names:
            result.extra.append(f"{sf.scan}/{sf.name}")
    for scan in sorted(set(expected_counts) | set(found_counts)):
        result.per_scan[scan] = (expected_counts[scan], found_counts[scan])
    return result


def present_names(server_files: Sequence[ServerFile]) -> set[tuple[str, str]]:
    """``(scan, name)`` pairs a server session holds, to skip instances already uploaded."""
    return {(sf.scan, sf.name) for sf in server_files}


def comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    """A :class:`Comparison` as plain data."""
    if c is None:
        return None
    return {
        "ok": c.ok,
        "expected": c.expected,
        "matched": c.matched,
        "missing": c.missing,
        "duplicated": c.duplicated,
        "misplaced": [list(m) for m in c.misplaced],
        "extra": c.extra,
        "per_scan": {k: {"expected": e, "found": f} for k, (e, f) in c.per_scan.items()},
    }
