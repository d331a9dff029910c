"""What an XNAT server lists for a session: archived files, prearchive rows and their files.

Listings follow docs/xnat-behaviour.md §4.1-§4.3: every value in a ``ResultSet`` row is a string,
scan folders appear in file URIs, and the prearchive has its own scan and file listings that older
servers do not offer (then the functions here return None, and callers fall back to the journal).
"""

from __future__ import annotations

import concurrent.futures as cf
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from xnatio.xnat.session import XnatSession

__all__ = [
    "PrearchiveSession",
    "ServerFile",
    "experiment_path",
    "find_prearchive_sessions",
    "is_settling",
    "list_other_labels",
    "list_prearchive_files",
    "list_session_files",
    "parse_file_rows",
]

_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/")


@dataclass(frozen=True, slots=True)
class ServerFile:
    """One DICOM file in a server listing."""

    scan: str
    name: str
    size: int
    uri: str


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


def list_other_labels(
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


def is_settling(p: PrearchiveSession) -> bool:
    """True while XNAT may still change a prearchive session by itself: receiving, building,
    archiving, or READY in an auto-archiving project (about to be archived)."""
    return p.status in _SETTLING or (
        p.status == "READY" and p.autoarchive.startswith("AutoArchive")
    )
