"""What an XNAT server lists for a session: archived files, prearchive rows and their files.

Listings follow docs/xnat-behaviour.md §4.1-§4.3: every value in a ``ResultSet`` row is a string,
scan folders appear in file URIs, and the prearchive has its own scan and file listings that older
servers do not offer (then the functions here return None, and callers fall back to the journal).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from xnatio.errors import ServerResponseError
from xnatio.xnat.session import XnatSession, text_rows

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
    "result_rows",
]

logger = logging.getLogger(__name__)

_SCAN_IN_URI = re.compile(r"/scans/([^/]+)/")


@dataclass(frozen=True, slots=True)
class ServerFile:
    """One DICOM file in a server listing.

    Attributes
    ----------
    scan
        The scan ID (from the URI's ``/scans/<id>/`` part, else the listing's own column).
    name
        The stored file name (docs/xnat-behaviour.md §4.3).
    size
        ``Size`` in bytes, or None when the listing gives none.
    uri
        Where to download the file (``/data/...``).
    digest
        ``digest``: the catalog's MD5 in hex, ``""`` when the server computed none (§4.1).
    """

    scan: str
    name: str
    size: int | None
    uri: str
    digest: str = ""


def _size(value: object) -> int | None:
    text = "" if value is None else str(value).strip()
    return int(text) if text.isdigit() else None


def parse_file_rows(
    rows: Iterable[Mapping[str, object]], collection: str = "DICOM", scan: str = ""
) -> list[ServerFile]:
    """Turn file listing rows into :class:`ServerFile` records of one resource.

    Parameters
    ----------
    rows
        ``ResultSet.Result`` rows of ``scans/{id}/files``, ``scans/ALL/files`` or a resource's
        ``files`` listing (docs/xnat-behaviour.md §4.2).
    collection
        Keep only rows of this resource label; rows without a ``collection`` column are kept
        (a resource's own listing has none).
    scan
        The scan, for rows whose URI names none.
    """
    out: list[ServerFile] = []
    for row in rows:
        if collection and str(row.get("collection", collection)) != collection:
            continue
        uri = str(row.get("URI", "") or "")
        match = _SCAN_IN_URI.search(uri)
        out.append(
            ServerFile(
                scan=match.group(1) if match else str(row.get("scan", "") or scan),
                name=str(row.get("Name", "") or ""),
                size=_size(row.get("Size")),
                uri=uri,
                digest=str(row.get("digest", "") or "").strip().lower(),
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


# Statuses with which a server says it does not offer a listing route (issue 15: servers and
# proxies differ in which of the equivalent file listings of §4.2 they serve).
_NOT_OFFERED = frozenset({404, 501})


def result_rows(response: httpx.Response, what: str) -> list[dict[str, object]]:
    """The rows of an XNAT JSON listing (``ResultSet.Result``); a ServerResponseError naming
    ``what`` when the answer is not one (an HTML login page, a proxy's error)."""
    try:
        rows = response.json()["ResultSet"]["Result"]
    except (ValueError, KeyError, TypeError):
        raise ServerResponseError(
            f"{what}: the server did not answer with a listing",
            status_code=response.status_code,
        ) from None
    return [dict(r) for r in rows]


def list_session_files(
    xnat: XnatSession, project: str, subject: str, session: str, *, workers: int = 8
) -> list[ServerFile] | None:
    """The DICOM files of an archived session, or None when the session does not exist.

    Each scan's listing (``scans/{id}/files``) is fetched on its own connection, ``workers`` at
    a time, and turned into compact records as it arrives: on a distant server the listing of a
    large session is megabytes of JSON, and one connection would move it at the speed of a
    single stream. A server that answers 404 or 501 to those is asked for ``scans/ALL/files``,
    then for each scan's resources and their ``files`` listings (docs/xnat-behaviour.md §4.2).

    Raises
    ------
    ServerResponseError
        The server answered none of the three listings, or failed otherwise.
    """
    base = experiment_path(project, subject, session)
    what = f"listing the files of {project}/{subject}/{session}"
    response = xnat.request("GET", base + "/scans", params={"format": "json"})
    if response.status_code == 404:
        return None
    scan_ids = [str(r["ID"]) for r in result_rows(xnat.check(response, what), what) if r.get("ID")]
    if not scan_ids:
        return []
    tried: list[str] = []
    for name, strategy in (
        ("scans/{id}/files", _per_scan),
        ("scans/ALL/files", _all_scans),
        ("scans/{id}/resources/{label}/files", _per_resource),
    ):
        found, status = strategy(xnat, base, scan_ids, what, workers)
        if found is not None:
            if tried:
                logger.info("%s: %s answered %s", what, ", ".join(tried), name)
            return found
        tried.append(f"{name} ({status})")
    again = xnat.request("GET", base + "/scans", params={"format": "json"})
    if again.status_code == 404:
        return None  # the session went away while it was being listed
    raise ServerResponseError(
        f"{what}: the server offers none of the file listings xnatio knows: " + ", ".join(tried),
        status_code=404,
    )


_Found = tuple[list[ServerFile] | None, int]


def _get_rows(
    xnat: XnatSession, path: str, what: str
) -> tuple[list[dict[str, object]] | None, int]:
    """The rows of one listing, or None with the status when the route is not offered."""
    response = xnat.request("GET", path, params={"format": "json"})
    if response.status_code in _NOT_OFFERED:
        return None, response.status_code
    return result_rows(xnat.check(response, what), what), 200


def _parallel(scan_ids: list[str], workers: int, one: Callable[[str], _Found]) -> _Found:
    if len(scan_ids) == 1 or workers <= 1:
        parts = [one(s) for s in scan_ids]
    else:
        with cf.ThreadPoolExecutor(
            min(workers, len(scan_ids)), thread_name_prefix="xio-list"
        ) as pool:
            parts = list(pool.map(one, scan_ids))
    for found, status in parts:
        if found is None:
            return None, status
    return [sf for found, _ in parts for sf in found or ()], 200


def _per_scan(xnat: XnatSession, base: str, scan_ids: list[str], what: str, workers: int) -> _Found:
    def one(scan_id: str) -> _Found:
        rows, status = _get_rows(xnat, f"{base}/scans/{quote(scan_id, safe='')}/files", what)
        return (None, status) if rows is None else (parse_file_rows(rows, scan=scan_id), 200)

    return _parallel(scan_ids, workers, one)


def _all_scans(
    xnat: XnatSession, base: str, scan_ids: list[str], what: str, workers: int
) -> _Found:
    rows, status = _get_rows(xnat, f"{base}/scans/ALL/files", what)
    return (None, status) if rows is None else (parse_file_rows(rows), 200)


def _per_resource(
    xnat: XnatSession, base: str, scan_ids: list[str], what: str, workers: int
) -> _Found:
    def one(scan_id: str) -> _Found:
        scan = f"{base}/scans/{quote(scan_id, safe='')}"
        resources, status = _get_rows(xnat, f"{scan}/resources", what)
        if resources is None:
            return None, status
        out: list[ServerFile] = []
        for r in resources:
            label = str(r.get("label", "") or "")
            if label != "DICOM":
                continue
            rows, status = _get_rows(xnat, f"{scan}/resources/{quote(label, safe='')}/files", what)
            if rows is None:
                return None, status
            out += parse_file_rows(rows, scan=scan_id)
        return out, 200

    return _parallel(scan_ids, workers, one)


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
        for r in text_rows(response.json()["ResultSet"]["Result"]):
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
        what = f"listing the files of {url} scan {scan}"
        files += [
            dataclasses.replace(sf, scan=scan)
            for sf in parse_file_rows(result_rows(xnat.check(r, what), what), scan=scan)
        ]
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
