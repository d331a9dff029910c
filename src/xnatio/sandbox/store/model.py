"""What every part of the store shares: errors, import parameters, statuses and row helpers.

Section numbers (§) refer to docs/xnat-behaviour.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ClientError", "ImportParams", "ServerError", "StoreError", "StoreFaults"]


class StoreError(Exception):
    """A refusal or failure of the store, answered with an HTTP status (or a C-STORE status).

    Parameters
    ----------
    message
        The server's message, exactly as XNAT words it where known.
    status
        HTTP status code.
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ClientError(StoreError):
    """A client error: HTTP status (default 400) with the message in ``<h3>``; SCP 0xC000."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status)


class ServerError(StoreError):
    """A server error: HTTP 500 (or the given status); SCP 0xA700."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message, status)


@dataclass
class StoreFaults:
    """Fault knobs the server's fault injection may change at run time.

    Attributes
    ----------
    file_delay
        Seconds slept before writing each imported file.
    disk_full
        Every file write fails like ENOSPC.
    """

    file_delay: float = 0.0
    disk_full: bool = False


@dataclass(frozen=True)
class ImportParams:
    """Import parameters of docs/xnat-behaviour.md §3.3 after the HTTP layer (or the SCP)
    parsed them.

    Attributes
    ----------
    project, subject, session
        ``PROJECT_ID``/``project``, ``SUBJECT_ID``/``subject``, ``EXPT_LABEL``/``session``.
        A project that does not exist is ignored (DICOM routing §6.2, then Unassigned).
    direct_archive
        ``Direct-Archive=true``.
    rename
        ``rename=true``: always use the template file name (§4.3).
    prevent_auto_commit, prevent_anon, source, visit, subtype
        Stored on a new prearchive row (``SOURCE``, ``VISIT``, ``SUBTYPE`` as PROTOCOL).
    auto_archive
        ``AA``/``auto-archive``; has no effect on a new row (§3.3), only in the commit paths.
    user
        The importing user (insert_user of created subjects and experiments).
    sender_aet
        Calling AE title for SCP imports (informational).
    """

    project: str | None = None
    subject: str | None = None
    session: str | None = None
    direct_archive: bool = False
    rename: bool = False
    prevent_auto_commit: bool = False
    prevent_anon: bool = False
    source: str | None = None
    auto_archive: bool | None = None
    visit: str | None = None
    subtype: str | None = None
    user: str = "admin"
    sender_aet: str | None = None


class Status:
    """Prearchive statuses as XNAT spells them (§4.2, §3.4 step 6), stored as text in the index."""

    RECEIVING = "RECEIVING"
    RECEIVING_INTERRUPT = "RECEIVING_INTERRUPT"
    BUILDING = "BUILDING"
    READY = "READY"
    ARCHIVING = "ARCHIVING"
    CONFLICT = "CONFLICT"
    ERROR = "ERROR"
    # What a new file, a commit or an action may interrupt; any other status locks the session.
    INTERRUPTIBLE = frozenset(
        {
            BUILDING,
            CONFLICT,
            ERROR,
            READY,
            RECEIVING,
            RECEIVING_INTERRUPT,
            "QUEUED_BUILDING",
            "_BUILDING",
            "_CONFLICT",
            "_RECEIVING",
            "_RECEIVING_INTERRUPT",
        }
    )
    # A build in progress: a new file turns it into RECEIVING_INTERRUPT.
    BUILDING_STATES = frozenset({BUILDING, "QUEUED_BUILDING", "_BUILDING"})


# Project prearchive codes: what a finished session does on its own.
MANUAL, AUTO_ARCHIVE, AUTO_ARCHIVE_OVERWRITE = 0, 4, 5
AA_NAMES = {
    MANUAL: "Manual",
    AUTO_ARCHIVE: "AutoArchive",
    AUTO_ARCHIVE_OVERWRITE: "AutoArchiveOverwrite",
}


def auto_archives(session_code: int | None, project_code: int | None) -> bool:
    """Whether a built session is archived at once: its own auto-archive code (4 or 5) or its
    project's prearchive code (4 or more) says so."""
    return session_code in (AUTO_ARCHIVE, AUTO_ARCHIVE_OVERWRITE) or (
        project_code is not None and project_code >= AUTO_ARCHIVE
    )


VALID_ID = re.compile(r"^[A-Za-z0-9_-]+$")
UNASSIGNED = "Unassigned"

_SESSION_XSI = {
    "MR": "xnat:mrSessionData",
    "CT": "xnat:ctSessionData",
    "PT": "xnat:petSessionData",
    "US": "xnat:usSessionData",
    "CR": "xnat:crSessionData",
    "DX": "xnat:dxSessionData",
    "MG": "xnat:mgSessionData",
    "NM": "xnat:nmSessionData",
    "XA": "xnat:xaSessionData",
    "RF": "xnat:rfSessionData",
}
_SCAN_XSI = {
    "MR": "xnat:mrScanData",
    "CT": "xnat:ctScanData",
    "PT": "xnat:petScanData",
    "US": "xnat:usScanData",
    "CR": "xnat:crScanData",
    "DX": "xnat:dxScanData",
    "MG": "xnat:mgScanData",
    "NM": "xnat:nmScanData",
    "XA": "xnat:xaScanData",
    "RF": "xnat:rfScanData",
    "SR": "xnat:srScanData",
    "SC": "xnat:scScanData",
}


def session_xsi(modalities: list[str]) -> str:
    """The session's XSI type from its files' modalities (PET/MR first, then the first known)."""
    mods = set(modalities)
    if "PT" in mods and "MR" in mods:
        return "xnat:petmrSessionData"
    for m in modalities:
        if m in _SESSION_XSI:
            return _SESSION_XSI[m]
    return "xnat:otherDicomSessionData"


def scan_xsi(modality: str) -> str:
    """A scan's XSI type from its modality."""
    return _SCAN_XSI.get(modality, "xnat:otherDicomScanData")


def scan_sort_key(scan: str) -> tuple[int, int, str]:
    """Numeric scan IDs first, in numeric order, then the others by name."""
    return (0, int(scan), "") if scan.isdigit() else (1, 0, scan)


def now_str(t: float | None = None) -> str:
    """XNAT-style date-time string with milliseconds."""
    dt = datetime.fromtimestamp(time.time() if t is None else t)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def fmt_date(d: str) -> str:
    """DICOM ``YYYYMMDD`` as ``YYYY-MM-DD``; ``""`` if it is not a date."""
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) >= 8 and d[:8].isdigit() else ""


def fmt_time(t: str) -> str:
    """DICOM ``HHMMSS[.ffffff]`` as ``HH:MM:SS``; ``""`` if it is not a time."""
    t = t.split(".", maxsplit=1)[0]
    return f"{t[:2]}:{t[2:4]}:{t[4:6]}" if len(t) >= 6 and t[:6].isdigit() else ""


# -- archiving -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a session is archived: project, subject label and session label."""

    project: str
    subject: str
    label: str

    @property
    def uri(self) -> str:
        """The archive URI XNAT answers with."""
        return f"/archive/projects/{self.project}/subjects/{self.subject}/experiments/{self.label}"


@dataclass(frozen=True)
class ArchiveFlags:
    """How an archive may change what is there (§3.3, §3.8).

    Attributes
    ----------
    override
        overrideExceptions: a different study UID or scan UID is no conflict.
    merge
        allowSessionMerge: an existing session may receive the data.
    overwrite_files
        Files with the same name may be replaced.
    """

    override: bool
    merge: bool
    overwrite_files: bool

    @classmethod
    def for_commit(
        cls, overwrite: str | None, overwrite_files: bool, project_code: int | None
    ) -> ArchiveFlags:
        """The flags of a commit request, as Importer maps ``overwrite`` (§3.3).

        ``overwrite`` ``delete``/``override`` allows everything, any other value merges only;
        the project's AutoArchiveOverwrite code also lets files be replaced.
        """
        override = merge = False
        if overwrite is not None:
            override = overwrite.lower() in ("delete", "override")
            merge = True
        replace = overwrite_files or override or project_code == AUTO_ARCHIVE_OVERWRITE
        return cls(override, merge, replace)

    @classmethod
    def for_idle(cls, session_code: int | None, project_code: int | None) -> ArchiveFlags:
        """The flags of the background pass's auto-archive: a session code other than Manual
        merges, the project's AutoArchiveOverwrite replaces files."""
        merge = session_code not in (None, MANUAL)
        return cls(False, merge, project_code == AUTO_ARCHIVE_OVERWRITE)
