"""Compare the instances of a local inventory with the files a server session lists.

Identity is the SOP Instance UID, per scan, whatever the stored names
(:mod:`xnatio.verify.identify`; docs/xnat-behaviour.md §4.3: "count files per scan and match
sets of SOPInstanceUIDs"). Each local instance must be stored exactly once, in the scan its
SeriesNumber names. Stored files that hold no instance of the source are *extra*: reported, but
not a failure, since a session may hold more than one source (appended uploads, other series).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xnatio.inventory import DicomFile
from xnatio.verify.identify import Identities, identify_by_name
from xnatio.xnat.listings import ServerFile
from xnatio.xnat.naming import scan_id_for

__all__ = ["Comparison", "compare", "comparison_dict", "held_keys"]


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
        Inventory paths whose instance is stored more than once (under any names).
    extra
        Stored files that hold no instance of the inventory (``scan/name``); not a failure.
    unidentified
        Stored files whose header could not be read (``scan/name: why``): any could be one of
        the inventory's instances, so the comparison cannot be trusted.
    content
        ``(path, why)`` for instances present once whose stored file cannot be the local one: a
        listed size too small to hold it, a different MD5 where the bytes should be equal, or
        (deep verification) data elements that differ.
    notes
        Remarks that are not failures (for example a file XNAT stored in another transfer
        syntax, whose pixel data could not be compared).
    checked
        What the content was checked against: ``"names"`` (identity only), ``"listing"`` (sizes
        and digests) or ``"deep"`` (every data element).
    per_scan
        ``scan -> (expected, found)`` file counts.
    found
        Inventory path -> the server's URI of its file, for instances found exactly once.
    stored
        Inventory path -> the listing row of its file, for instances found exactly once.
    headers_read
        Headers read from the server to identify files whose names did not tell.
    """

    expected: int
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    misplaced: list[tuple[str, str]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    unidentified: list[str] = field(default_factory=list)
    content: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: str = "names"
    per_scan: dict[str, tuple[int, int]] = field(default_factory=dict)
    found: dict[str, str] = field(default_factory=dict)
    stored: dict[str, ServerFile] = field(default_factory=dict, repr=False)
    headers_read: int = 0

    @property
    def ok(self) -> bool:
        """True when every instance is stored exactly once in its scan, every stored file could
        be identified and no content check failed (extra files allowed)."""
        return not (
            self.missing or self.misplaced or self.duplicated or self.unidentified or self.content
        )

    def problems(self) -> list[str]:
        """One line per failure, for display and for ``result.errors``."""
        out = [f"missing on the server: {p}" for p in self.missing]
        out += [f"present more than once on the server: {p}" for p in self.duplicated]
        out += [f"filed under scan {s} instead of its own: {p}" for p, s in self.misplaced]
        out += [f"cannot tell which instance a stored file holds: {u}" for u in self.unidentified]
        out += [f"content differs: {p}: {why}" for p, why in self.content]
        return out


def compare(
    files: Sequence[DicomFile],
    server_files: Sequence[ServerFile],
    identities: Identities | None = None,
) -> Comparison:
    """Compare the inventory ``files`` with the files a server session lists.

    Parameters
    ----------
    files
        The local instances.
    server_files
        The session's listing.
    identities
        What each stored file holds (:func:`xnatio.verify.identify.identify`); without it, only
        what the names reveal counts, and other files are taken as extra.
    """
    ids = identities if identities is not None else identify_by_name(files, server_files)[0]
    ours = {f.sop_instance_uid for f in files}
    hits: dict[str, list[ServerFile]] = defaultdict(list)
    result = Comparison(expected=len(files), headers_read=ids.headers_read)
    found_counts: Counter[str] = Counter()
    for sf in server_files:
        found_counts[sf.scan] += 1
        uid = ids.uid.get(sf)
        if uid is not None and uid in ours:
            hits[uid].append(sf)
        elif sf in ids.unreadable:
            result.unidentified.append(f"{sf.scan}/{sf.name}: {ids.unreadable[sf]}")
        else:
            result.extra.append(f"{sf.scan}/{sf.name}")
    expected_counts: Counter[str] = Counter()
    for f in files:
        scan = scan_id_for(f)
        expected_counts[scan] += 1
        found = hits.get(f.sop_instance_uid, [])
        if not found:
            result.missing.append(f.path)
        elif len(found) > 1:
            result.duplicated.append(f.path)
        elif found[0].scan != scan:
            result.misplaced.append((f.path, found[0].scan))
            result.found[f.path] = found[0].uri
        else:
            result.matched += 1
            result.found[f.path] = found[0].uri
            result.stored[f.path] = found[0]
    for scan in sorted(set(expected_counts) | set(found_counts)):
        result.per_scan[scan] = (expected_counts[scan], found_counts[scan])
    return result


def held_keys(identities: Identities) -> set[tuple[str, str]]:
    """``(scan, SOP Instance UID)`` of every identified stored file: what a server holds."""
    return {(sf.scan, uid) for sf, uid in identities.uid.items()}


def comparison_dict(c: Comparison | None) -> dict[str, Any] | None:
    """A :class:`Comparison` as plain data."""
    if c is None:
        return None
    return {
        "ok": c.ok,
        "expected": c.expected,
        "matched": c.matched,
        "checked": c.checked,
        "missing": c.missing,
        "duplicated": c.duplicated,
        "misplaced": [list(m) for m in c.misplaced],
        "extra": c.extra,
        "unidentified": c.unidentified,
        "content": [{"path": p, "problem": why} for p, why in c.content],
        "notes": c.notes,
        "headers_read": c.headers_read,
        "per_scan": {k: {"expected": e, "found": f} for k, (e, f) in c.per_scan.items()},
    }
