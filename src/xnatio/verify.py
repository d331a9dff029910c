"""Compare what an XNAT session holds with the local inventory.

XNAT files a DICOM instance under a scan folder derived from its SeriesNumber and a file name
derived from the archive entry name (``xnat-server-behaviour.md`` §3.4 step 8, §4.3). xnatio names
entries ``<SOPInstanceUID>.dcm`` with ``rename=false``, so the stored name of every instance is
known in advance and the comparison is exact: each instance must appear exactly once, in the scan
it belongs to.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xnatio.inventory import DicomFile
from xnatio.naming import safe_name, scan_folder, template_file_name
from xnatio.plan import entry_name

_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/")


def scan_id_for(f: DicomFile) -> str:
    """The scan folder XNAT files an instance under (see :func:`xnatio.naming.scan_folder`)."""
    return scan_folder(f.series_number, f.series_instance_uid)


def stored_name(f: DicomFile) -> str:
    """The file name XNAT stores for an instance sent by xnatio (``rename=false``)."""
    return safe_name(entry_name(f))


def template_name(f: DicomFile) -> str:
    """The name XNAT gives the instance with ``rename=true`` or on a name collision."""
    return template_file_name(
        f.study_instance_uid,
        f.series_number,
        f.instance_number,
        f.sop_class_uid,
        f.sop_instance_uid,
    )


@dataclass(frozen=True, slots=True)
class ServerFile:
    """One DICOM file in a server listing."""

    scan: str
    name: str
    size: int
    uri: str


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
    """

    expected: int
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    misplaced: list[tuple[str, str]] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    per_scan: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every instance is present exactly once in its scan (extras allowed)."""
        return not (self.missing or self.misplaced or self.duplicated)


def parse_file_rows(rows: Iterable[dict[str, str]], collection: str = "DICOM") -> list[ServerFile]:
    """Turn ``scans/ALL/files`` rows into :class:`ServerFile` records of one resource."""
    out: list[ServerFile] = []
    for row in rows:
        if collection and row.get("collection", collection) != collection:
            continue
        uri = row.get("URI", "")
        match = _SCAN_IN_URI.search(uri)
        scan = match.group(1) if match else row.get("scan", "")
        size = row.get("Size", "") or "0"
        out.append(
            ServerFile(
                scan=scan,
                name=row.get("Name", ""),
                size=int(size) if size.isdigit() else 0,
                uri=uri,
            )
        )
    return out


def compare(files: Sequence[DicomFile], server_files: Sequence[ServerFile]) -> Comparison:
    """Compare the inventory ``files`` with the files a server session lists."""
    by_name: dict[str, list[ServerFile]] = defaultdict(list)
    for sf in server_files:
        by_name[sf.name].append(sf)
    result = Comparison(expected=len(files))
    expected_counts: Counter[str] = Counter()
    found_counts: Counter[str] = Counter()
    known_names: set[str] = set()
    for f in files:
        scan = scan_id_for(f)
        name = stored_name(f)
        alt = template_name(f)
        known_names.update((name, alt))
        expected_counts[scan] += 1
        hits = by_name.get(name, []) + by_name.get(alt, [])
        in_scan = [h for h in hits if h.scan == scan]
        if len(hits) == 0:
            result.missing.append(f.path)
        elif len(hits) > 1:
            result.duplicated.append(f.path)
        elif not in_scan:
            result.misplaced.append((f.path, hits[0].scan))
        else:
            result.matched += 1
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
