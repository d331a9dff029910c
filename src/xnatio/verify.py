"""Compare what an XNAT session holds with the local inventory.

XNAT files a DICOM instance under a scan folder derived from its SeriesNumber and a file name
derived from the archive entry name (``xnat-server-behaviour.md`` §3.4 step 8, §4.3). xnatio names
entries ``<SOPInstanceUID>.dcm`` with ``rename=false``, so the stored name of every instance is
known in advance and the comparison is exact: each instance must appear exactly once, in the scan
it belongs to.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from xnatio.config import XnatConfig, normalise_server
from xnatio.errors import InputError
from xnatio.inventory import DicomFile, Inventory, build_inventory
from xnatio.plan import entry_name
from xnatio.progress import ProgressCallback, ProgressEvent, emit
from xnatio.xnat.naming import safe_name, scan_folder, template_file_name
from xnatio.xnat.session import XnatSession

__all__ = ["Comparison", "VerifyReport", "verify_session"]

_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/")


def scan_id_for(f: DicomFile) -> str:
    """The scan folder XNAT files an instance under (see :func:`xnatio.xnat.naming.scan_folder`)."""
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


# -- where a session is, and the full check ---------------------------------------------------

Location = Literal["archived", "prearchive", "archived+prearchive", "other-label", "absent"]

# Prearchive states in which XNAT is still receiving or building the session (§4.2): more may
# change, so waiting is worth it.
_SETTLING = frozenset(
    {
        "RECEIVING",
        "RECEIVING_INTERRUPT",
        "BUILDING",
        "QUEUED_BUILDING",
        "ARCHIVING",
        "QUEUED_ARCHIVING",
        "MOVING",
        "QUEUED_MOVING",
        "_RECEIVING",
        "_RECEIVING_INTERRUPT",
        "_BUILDING",
        "_ARCHIVING",
        "_MOVING",
    }
)


@dataclass(frozen=True, slots=True)
class PrearchiveSession:
    """One prearchive row that concerns the session.

    Attributes
    ----------
    project, timestamp, folder, name
        Where it is (``project`` is ``Unassigned`` for unroutable data).
    status
        XNAT's prearchive status (RECEIVING, READY, CONFLICT, ...).
    study_uid
        The row's StudyInstanceUID (``tag``).
    url
        ``/data/prearchive/projects/P/TS/FOLDER``.
    autoarchive
        ``Manual``, ``AutoArchive`` or ``AutoArchiveOverwrite`` (empty when unknown).
    files
        Files it lists, or None when the server offers no prearchive file listing.
    """

    project: str
    timestamp: str
    folder: str
    name: str
    status: str
    study_uid: str
    url: str
    autoarchive: str = ""
    files: int | None = None


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_session`.

    Attributes
    ----------
    project, subject, session
        The session checked.
    location
        ``archived``, ``prearchive`` (not archived yet), ``archived+prearchive`` (archived, with
        more data still in the prearchive), ``other-label`` (the study is on the server under
        another session label or project) or ``absent``.
    where
        One sentence saying where the session is.
    comparison
        The archived session's files against the inventory (None when not archived).
    prearchive
        Prearchive rows with this session label (or this study) in the project or Unassigned.
    prearchive_comparison
        The prearchive files against the inventory, when the server lists them.
    other_labels
        ``project/subject/label`` of archived sessions holding the same StudyInstanceUID.
    waited
        Seconds spent waiting for the session to appear or settle.
    """

    project: str
    subject: str
    session: str
    location: Location
    where: str
    comparison: Comparison | None = None
    prearchive: list[PrearchiveSession] = field(default_factory=list)
    prearchive_comparison: Comparison | None = None
    other_labels: list[str] = field(default_factory=list)
    waited: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the session is archived and holds every instance exactly once, in place,
        with nothing of it left in the prearchive and no extra files."""
        c = self.comparison
        return (
            self.location == "archived"
            and c is not None
            and c.ok
            and not c.extra
            and c.matched == c.expected
        )

    def problems(self) -> list[str]:
        """One line per mismatch, for display and for ``result.errors``."""
        out: list[str] = []
        if self.location != "archived":
            out.append(self.where)
        c = self.comparison
        if c is not None:
            out += [f"missing on the server: {p}" for p in c.missing]
            out += [f"present more than once on the server: {p}" for p in c.duplicated]
            out += [f"filed under scan {s} instead of its own: {p}" for p, s in c.misplaced]
            out += [f"extra file on the server: {e}" for e in c.extra]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The full comparison as plain data (for ``--json``)."""
        return {
            "ok": self.ok,
            "project": self.project,
            "subject": self.subject,
            "session": self.session,
            "location": self.location,
            "where": self.where,
            "waited": round(self.waited, 3),
            "archive": comparison_dict(self.comparison),
            "prearchive": [asdict(p) for p in self.prearchive],
            "prearchive_comparison": comparison_dict(self.prearchive_comparison),
            "other_labels": self.other_labels,
            "problems": self.problems(),
        }


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


def experiment_path(project: str, subject: str, session: str) -> str:
    """``/data/projects/P/subjects/S/experiments/E``."""
    return f"/data/projects/{project}/subjects/{subject}/experiments/{session}"


def _server_files(response: httpx.Response) -> list[ServerFile]:
    return parse_file_rows(response.json()["ResultSet"]["Result"])


def list_session_files(
    xnat: XnatSession, project: str, subject: str, session: str, *, workers: int = 8
) -> list[ServerFile] | None:
    """The DICOM files of an archived session, or None when the session does not exist.

    With several scans, each scan's listing is fetched on its own connection, ``workers`` at a
    time, and turned into compact records as it arrives: on a distant server the listing of a
    large session is megabytes of JSON, and one connection would move it at the speed of a single
    stream.
    """
    base = experiment_path(project, subject, session)
    what = f"listing the files of {project}/{subject}/{session}"
    response = xnat.request("GET", base + "/scans", params={"format": "json"})
    if response.status_code == 404:
        return None
    scans = xnat.check(response, what).json()["ResultSet"]["Result"]
    scan_ids = [str(row["ID"]) for row in scans if row.get("ID")]
    if len(scan_ids) <= 1 or workers <= 1:
        whole = xnat.request("GET", base + "/scans/ALL/files", params={"format": "json"})
        if whole.status_code == 404:
            return None
        return _server_files(xnat.check(whole, what))

    def one_scan(scan_id: str) -> list[ServerFile]:
        listing = xnat.request(
            "GET", f"{base}/scans/{quote(scan_id, safe='')}/files", params={"format": "json"}
        )
        return _server_files(xnat.check(listing, what))

    with cf.ThreadPoolExecutor(min(workers, len(scan_ids)), thread_name_prefix="xio-list") as pool:
        parts = list(pool.map(one_scan, scan_ids))
    return [sf for part in parts for sf in part]


def find_prearchive_sessions(
    xnat: XnatSession, project: str, session: str, study_uids: Iterable[str] = ()
) -> list[PrearchiveSession]:
    """Prearchive rows of ``project`` (and Unassigned) named ``session`` or holding one of
    ``study_uids``; rows of other projects are not visible through this listing."""
    uids = set(study_uids)
    out: list[PrearchiveSession] = []
    for where in (project, "Unassigned"):
        response = xnat.request(
            "GET", f"/data/prearchive/projects/{where}", params={"format": "json"}
        )
        if response.status_code in (403, 404):
            continue  # Unassigned needs admin rights; a missing project has no rows
        xnat.check(response, f"listing the prearchive of {where}")
        for row in response.json()["ResultSet"]["Result"]:
            r = {str(k): "" if v is None else str(v) for k, v in row.items()}
            if r.get("name") != session and r.get("tag") not in uids:
                continue
            if where == project and r.get("project") not in (project, ""):
                continue
            url = r.get("url", "")
            out.append(
                PrearchiveSession(
                    project=r.get("project", where),
                    timestamp=r.get("timestamp", ""),
                    folder=r.get("folderName", ""),
                    name=r.get("name", ""),
                    status=r.get("status", ""),
                    study_uid=r.get("tag", ""),
                    url=url if url.startswith("/data/") else "/data" + url,
                    autoarchive=r.get("autoarchive", ""),
                )
            )
    return out


def list_prearchive_files(xnat: XnatSession, url: str) -> list[ServerFile] | None:
    """The DICOM files of a prearchive session, through XNAT's prearchive scan listings
    (``<url>/scans`` and ``<url>/scans/<id>/resources/DICOM/files``); None when the server
    does not offer them."""
    response = xnat.request("GET", f"{url}/scans", params={"format": "json"})
    if response.status_code in (404, 405, 501):
        return None
    xnat.check(response, f"listing the scans of {url}")
    scans = [str(r.get("ID", "")) for r in response.json()["ResultSet"]["Result"]]
    files: list[ServerFile] = []
    for scan in scans:
        r = xnat.request(
            "GET", f"{url}/scans/{scan}/resources/DICOM/files", params={"format": "json"}
        )
        if r.status_code in (404, 405, 501):
            return None
        xnat.check(r, f"listing the files of {url} scan {scan}")
        for row in r.json()["ResultSet"]["Result"]:
            size = str(row.get("Size", "") or "0")
            files.append(
                ServerFile(
                    scan=scan,
                    name=str(row.get("Name", "")),
                    size=int(size) if size.isdigit() else 0,
                    uri=str(row.get("URI", "")),
                )
            )
    return files


def _other_labels(
    xnat: XnatSession, project: str, subject: str, session: str, study_uids: set[str]
) -> list[str]:
    response = xnat.request(
        "GET",
        f"/data/projects/{project}/experiments",
        params={"format": "json", "columns": "ID,label,UID,subject_label"},
    )
    if response.status_code != 200:
        return []
    out = []
    for row in response.json()["ResultSet"]["Result"]:
        uid = str(row.get("UID") or "")
        label = str(row.get("label") or "")
        subj = str(row.get("subject_label") or "")
        if uid in study_uids and (label, subj) != (session, subject):
            out.append(f"{project}/{subj or '?'}/{label}")
    return out


def _look(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    project: str,
    subject: str,
    session: str,
) -> VerifyReport:
    """One look at the server: archive, prearchive, other labels."""
    study_uids = {f.study_instance_uid for f in files}
    listed_files = list_session_files(xnat, project, subject, session)
    comparison = compare(files, listed_files) if listed_files is not None else None
    pre = find_prearchive_sessions(xnat, project, session, study_uids)
    pre_cmp: Comparison | None = None
    counted: list[PrearchiveSession] = []
    pre_files: list[ServerFile] = []
    listable = True
    for p in pre:
        listed = list_prearchive_files(xnat, p.url) if listable else None
        if listed is None:
            listable = False
            counted.append(p)
            continue
        pre_files += listed
        counted.append(dataclasses.replace(p, files=len(listed)))
    if pre and listable:
        pre_cmp = compare(files, pre_files)
    others = (
        _other_labels(xnat, project, subject, session, study_uids) if listed_files is None else []
    )
    ours = [p for p in counted if p.project == project and p.name == session]
    elsewhere = [p for p in counted if p not in ours]

    def describe(p: PrearchiveSession) -> str:
        n = f", {p.files} files" if p.files is not None else ""
        return f"{p.url} (status {p.status}{n})"

    location: Location
    if listed_files is not None:
        if ours:
            location = "archived+prearchive"
            where = (
                f"archived as {project}/{subject}/{session}, with more data still in the "
                "prearchive: " + "; ".join(describe(p) for p in ours)
            )
        else:
            location = "archived"
            where = f"archived as {project}/{subject}/{session}"
    elif ours:
        location = "prearchive"
        where = "in the prearchive, not archived yet: " + "; ".join(describe(p) for p in ours)
    elif others or elsewhere:
        location = "other-label"
        found = others + [describe(p) + f" labelled {p.name}" for p in elsewhere]
        where = (
            f"{project}/{subject}/{session} is not on the server, but this study is: "
            + "; ".join(found)
        )
    else:
        location = "absent"
        where = f"{project}/{subject}/{session} is neither archived nor in the prearchive"
    return VerifyReport(
        project=project,
        subject=subject,
        session=session,
        location=location,
        where=where,
        comparison=comparison,
        prearchive=counted,
        prearchive_comparison=pre_cmp,
        other_labels=others,
    )


def _settled(report: VerifyReport) -> bool:
    """True when waiting longer cannot change the answer."""
    if report.location == "absent":
        # A C-STORE session may not have been created or archived yet.
        return False
    return not any(is_settling(p) for p in report.prearchive)


def is_settling(p: PrearchiveSession) -> bool:
    """True while XNAT may still change a prearchive session by itself: receiving, building,
    archiving, or READY in an auto-archiving project (about to be archived)."""
    return p.status in _SETTLING or (
        p.status == "READY" and p.autoarchive.startswith("AutoArchive")
    )


def verify_session(
    *,
    server: str,
    username: str,
    password: str,
    project: str,
    subject: str,
    session: str,
    verify_tls: bool | str = True,
    source_dir: str | Path | None = None,
    inventory: Inventory | Sequence[DicomFile] | None = None,
    wait: float = 0.0,
    poll_interval: float = 2.0,
    progress_callback: ProgressCallback | None = None,
    xnat: XnatSession | None = None,
) -> VerifyReport:
    """Check that an XNAT session holds exactly the instances of a local source.

    Compares, per scan (SeriesNumber), the instance counts and the exact set of instances (by
    their predictable stored names, ``<SOPInstanceUID>.dcm``, or XNAT's template name), and says
    where the session is: archived, still in the prearchive, under another label, or absent.

    Parameters
    ----------
    server, username, password, verify_tls
        The XNAT server and credentials.
    project, subject, session
        The session to check.
    source_dir, inventory
        The local source (a folder or archive, scanned here), or an inventory already built, or
        its list of files. Give exactly one.
    wait
        Seconds to wait for the session to appear and settle (XNAT builds a C-STORE session after
        an idle period and then archives it). 0 looks once.
    poll_interval
        Seconds between looks while waiting.
    progress_callback
        Receives ``verifying`` events while waiting.
    xnat
        An open session to reuse instead of logging in.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when everything matches.

    Raises
    ------
    InputError
        Neither or both of ``source_dir`` and ``inventory``; an unreadable source.
    AuthenticationError, ConnectionFailedError
        Login failed or the server was unreachable.
    """
    if (source_dir is None) == (inventory is None):
        raise InputError("give either source_dir or inventory")
    files: Sequence[DicomFile]
    if source_dir is not None:
        with build_inventory(source_dir) as inv:
            files = list(inv.files)
    elif isinstance(inventory, Inventory):
        files = inventory.files
    else:
        assert inventory is not None
        files = inventory
    if not files:
        raise InputError("the source holds no DICOM files to compare")
    if xnat is None:
        config = XnatConfig(
            server=normalise_server(server),
            username=username,
            password=password,
            verify_tls=verify_tls,
        )
        with XnatSession(config, timeout=300.0) as own:
            own.login()
            return _verify_loop(
                own, files, project, subject, session, wait, poll_interval, progress_callback
            )
    return _verify_loop(
        xnat, files, project, subject, session, wait, poll_interval, progress_callback
    )


def _verify_loop(
    xnat: XnatSession,
    files: Sequence[DicomFile],
    project: str,
    subject: str,
    session: str,
    wait: float,
    poll_interval: float,
    progress_callback: ProgressCallback | None,
) -> VerifyReport:
    started = time.monotonic()
    while True:
        report = _look(xnat, files, project, subject, session)
        waited = time.monotonic() - started
        report.waited = waited
        if report.ok or waited >= wait or _settled(report):
            emit(
                progress_callback,
                ProgressEvent(
                    "verifying",
                    report.comparison.matched if report.comparison else 0,
                    len(files),
                    report.where,
                ),
            )
            return report
        emit(
            progress_callback,
            ProgressEvent(
                "verifying",
                int(waited),
                int(wait),
                f"waiting for XNAT ({int(waited)} of {int(wait)} s): {report.where}",
            ),
        )
        time.sleep(max(0.05, min(poll_interval, wait - waited)))
