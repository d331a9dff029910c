"""The sandbox's data model: projects, prearchive, Direct-Archive, archive and resources.

Everything lives under one data folder: the files, and a SQLite index (``index.sqlite``, WAL
mode) that remembers rows, statuses, sizes, MD5 digests and each stored object's SOP Instance
UID. Restarting a store over the same folder keeps everything.

The rules follow /work/shared/xnat-server-behaviour.md (cited as §n below): per-file import §3.4,
background life cycle §3.5, archive conflicts §3.8, concurrent imports §3.9, locations and listings
§4, creation §5, DICOM routing §6.2, resources §7, commit endpoints §9, the minimal model §10.

Layout under the data folder::

    index.sqlite
    prearchive/<project>/<timestamp>/<folder>/SCANS/<scan>/DICOM/<file>
    prearchive_unassigned/<timestamp>/<folder>/SCANS/<scan>/DICOM/<file>
    archive/<project>/arc001/<label>/SCANS/<scan>/<resource>/<path>
    archive/<project>/arc001/<label>/RESOURCES/<resource>/<path>
    tmp/

Thread safety: one re-entrant lock guards the index and the in-memory locks. It is held only for
the get-or-create step and bookkeeping, never while bytes are copied.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from xnatio.sandbox.dicom_header import (
    DicomHeader,
    HeaderError,
    read_header,
    scan_folder_name,
    template_file_name,
)
from xnatio.sandbox.routing import RoutingRules, clean_label, parse_rules, route

__all__ = [
    "ClientError",
    "ImportBatch",
    "ImportParams",
    "SandboxStore",
    "ServerError",
    "StoreFaults",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class ClientError(Exception):
    """A client error: HTTP status (default 400) with the message in ``<h3>``; SCP 0xC000.

    Parameters
    ----------
    message
        The server's message, exactly as XNAT words it where known.
    status
        HTTP status code.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ServerError(Exception):
    """A server error: HTTP 500 (or the given status); SCP 0xA700."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


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
    """Import parameters of §3.3 after the HTTP layer (or the SCP) parsed them.

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


# Prearchive statuses (§4.2).
RECEIVING = "RECEIVING"
RECEIVING_INTERRUPT = "RECEIVING_INTERRUPT"
BUILDING = "BUILDING"
READY = "READY"
ARCHIVING = "ARCHIVING"
CONFLICT = "CONFLICT"
ERROR = "ERROR"
_INTERRUPTIBLE = frozenset(
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
_BUILDING_STATES = frozenset({BUILDING, "QUEUED_BUILDING", "_BUILDING"})
_AA_NAMES = {0: "Manual", 4: "AutoArchive", 5: "AutoArchiveOverwrite"}
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_UNASSIGNED = "Unassigned"
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
_COPY_BUFFER = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects(
    id TEXT PRIMARY KEY, prearchive_code INTEGER NOT NULL, insert_date TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subjects(
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, project TEXT NOT NULL,
    label TEXT NOT NULL, insert_date TEXT NOT NULL, insert_user TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS experiments(
    n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, project TEXT NOT NULL,
    subject_id TEXT NOT NULL, label TEXT NOT NULL, xsi_type TEXT NOT NULL, uid TEXT NOT NULL,
    date TEXT NOT NULL, time TEXT NOT NULL, modality TEXT NOT NULL, insert_date TEXT NOT NULL,
    insert_user TEXT NOT NULL, UNIQUE(project, label));
CREATE TABLE IF NOT EXISTS scans(
    n INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, scan_id TEXT NOT NULL,
    uid TEXT NOT NULL, type TEXT NOT NULL, series_description TEXT NOT NULL,
    modality TEXT NOT NULL, xsi_type TEXT NOT NULL, UNIQUE(experiment_id, scan_id));
CREATE TABLE IF NOT EXISTS resources(
    n INTEGER PRIMARY KEY AUTOINCREMENT, experiment_id TEXT NOT NULL, scan_id TEXT NOT NULL,
    label TEXT NOT NULL, format TEXT NOT NULL, content TEXT NOT NULL,
    UNIQUE(experiment_id, scan_id, label));
CREATE TABLE IF NOT EXISTS files(
    resource_n INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, md5 TEXT NOT NULL,
    sop_uid TEXT NOT NULL, sop_class TEXT NOT NULL, PRIMARY KEY(resource_n, path));
CREATE TABLE IF NOT EXISTS sessions(
    n INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, project TEXT NOT NULL,
    timestamp TEXT NOT NULL, folder TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL,
    status TEXT NOT NULL, subject TEXT NOT NULL, lastmod REAL NOT NULL, uploaded REAL NOT NULL,
    autoarchive INTEGER, prevent_anon INTEGER NOT NULL, prevent_auto_commit INTEGER NOT NULL,
    source TEXT NOT NULL, visit TEXT NOT NULL, protocol TEXT NOT NULL, scan_date TEXT NOT NULL,
    scan_time TEXT NOT NULL, dir TEXT NOT NULL, built INTEGER NOT NULL DEFAULT 0,
    UNIQUE(kind, project, timestamp, folder));
CREATE INDEX IF NOT EXISTS sessions_key ON sessions(kind, project, tag, name);
CREATE TABLE IF NOT EXISTS session_files(
    session_n INTEGER NOT NULL, scan TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    md5 TEXT NOT NULL, sop_uid TEXT NOT NULL, sop_class TEXT NOT NULL, series_uid TEXT NOT NULL,
    series_description TEXT NOT NULL, modality TEXT NOT NULL,
    PRIMARY KEY(session_n, scan, name));
"""


def _now_str(t: float | None = None) -> str:
    """XNAT-style date-time string with milliseconds."""
    dt = datetime.fromtimestamp(time.time() if t is None else t)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def _fmt_date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) >= 8 and d[:8].isdigit() else ""


def _fmt_time(t: str) -> str:
    t = t.split(".", maxsplit=1)[0]
    return f"{t[:2]}:{t[2:4]}:{t[4:6]}" if len(t) >= 6 and t[:6].isdigit() else ""


def _overwrite_flags(overwrite: str | None) -> tuple[bool, bool]:
    """Map ``overwrite`` to (overrideExceptions, allowSessionMerge) as Importer does (§3.3)."""
    if overwrite is None:
        return False, False
    if overwrite.lower() in ("delete", "override"):
        return True, True
    return False, True


def _session_xsi(modalities: list[str]) -> str:
    mods = set(modalities)
    if "PT" in mods and "MR" in mods:
        return "xnat:petmrSessionData"
    for m in modalities:
        if m in _SESSION_XSI:
            return _SESSION_XSI[m]
    return "xnat:otherDicomSessionData"


def _strs(row: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in row.items()}


@dataclass(frozen=True)
class _Target:
    project: str
    subject: str
    label: str


@dataclass(frozen=True)
class _Flags:
    override: bool
    merge: bool
    overwrite_files: bool


class ImportBatch:
    """One import request (an HTTP request or one SCP instance); a context manager.

    Use :meth:`ingest` for each file; the index is committed once when the context exits.
    """

    def __init__(self, store: SandboxStore, params: ImportParams) -> None:
        self._store = store
        self.params = params

    def ingest(self, stream: BinaryIO, entry_name: str) -> str | None:
        """Import one DICOM object (§3.4 steps 1-14).

        Parameters
        ----------
        stream
            The object's bytes from the first byte; read to the end.
        entry_name
            The archive entry path (or file name); it names the stored file when
            ``rename`` is false.

        Returns
        -------
        str or None
            ``/prearchive/projects/P/TS/FOLDER`` or ``/xapi/direct-archive/P/UID/label``;
            ``None`` if the object was filtered (never, in the sandbox).

        Raises
        ------
        ClientError
            With the §3.7 messages (unreadable object, missing UIDs, concurrent same-file
            sends, and every write failure as "unable to read DICOM object <name>").
        """
        return self._store._ingest(self.params, stream, entry_name)

    def __enter__(self) -> ImportBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self._store._commit()


class SandboxStore:
    """Files plus a SQLite index under ``data_dir``: the state of an XNAT sandbox.

    Parameters
    ----------
    data_dir
        Folder for every file the store writes; created if missing.
    idle_interval
        Seconds without new files after which :meth:`tick` builds a prearchive session or
        archives a Direct-Archive session (XNAT's ``sessionXmlRebuilderInterval``, §3.5).
    faults
        Fault knobs; kept by reference so they can be changed at run time.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        idle_interval: float = 300.0,
        faults: StoreFaults | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "tmp").mkdir(exist_ok=True)
        self.idle_interval = idle_interval
        self.faults = faults if faults is not None else StoreFaults()
        # XNAT refreshes lastmod at most every 15 s; short test intervals need a finer step.
        self._lastmod_step = min(15.0, idle_interval / 10)
        self._lock = threading.RLock()
        self._drained = threading.Condition(self._lock)
        self._db = sqlite3.connect(
            self.data_dir / "index.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(sessions)")}
        if "built" not in columns:  # a data folder from before the column existed
            self._db.execute("ALTER TABLE sessions ADD COLUMN built INTEGER NOT NULL DEFAULT 0")
        self._db.execute("BEGIN")
        self._file_locks: set[tuple[int, str, str]] = set()
        self._active: dict[int, int] = {}
        self._archiving_sessions: set[int] = set()
        self._archiving_targets: set[tuple[str, str]] = set()
        self._last_ts = ""
        self._closed = False
        self._checked_dirs: set[str] = set()
        self._rules = self._load_rules()

    # ------------------------------------------------------------------ basics

    def close(self) -> None:
        """Commit the index and close it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._db.execute("COMMIT")
            self._db.close()

    def _commit(self) -> None:
        with self._lock:
            if not self._closed:
                self._db.execute("COMMIT")
                self._db.execute("BEGIN")

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, args).fetchall()

    def _q1(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
        return row

    def _safe_path(self, *parts: str) -> Path:
        """Join ``parts`` under the data folder and refuse anything that escapes it.

        Components are checked by name (no empty, ``.``, ``..``, NUL); the parent folder is also
        resolved once (symlinks) and remembered, so the per-file cost stays small.
        """
        comps: list[str] = []
        for part in parts:
            for c in part.split("/"):
                if c in ("", ".", "..") or "\x00" in c:
                    raise ClientError(f"Invalid path: {'/'.join(parts)}")
                comps.append(c)
        p = self.data_dir.joinpath(*comps)
        parent = str(p.parent)
        if parent not in self._checked_dirs:
            resolved = Path(os.path.realpath(parent))
            if resolved != self.data_dir and self.data_dir not in resolved.parents:
                raise ClientError(f"Invalid path: {'/'.join(parts)}")
            if len(self._checked_dirs) > 100_000:
                self._checked_dirs.clear()
            self._checked_dirs.add(parent)
        if p.is_symlink():
            raise ClientError(f"Invalid path: {'/'.join(parts)}")
        return p

    def _new_timestamp(self) -> str:
        # yyyyMMdd_HHmmssSSS; bumped by a millisecond when two sessions start in the same one.
        with self._lock:
            t = time.time()
            while True:
                dt = datetime.fromtimestamp(t)
                ts = dt.strftime("%Y%m%d_%H%M%S") + f"{dt.microsecond // 1000:03d}"
                if ts > self._last_ts:
                    self._last_ts = ts
                    return ts
                t += 0.001

    # ------------------------------------------------------------------ routing rules (§6.2)

    _RULE_KINDS = ("projectRules", "subjectRules", "sessionRules", "aaRules")

    def _load_rules(self) -> RoutingRules:
        texts = {
            k: self.get_routing_rules(k) if self._rules_meta(k).get("status") != "disabled" else ""
            for k in self._RULE_KINDS
        }
        return RoutingRules(
            project=tuple(parse_rules(texts["projectRules"])),
            subject=tuple(parse_rules(texts["subjectRules"])),
            session=tuple(parse_rules(texts["sessionRules"])),
            aa=tuple(parse_rules(texts["aaRules"])),
        )

    def get_routing_rules(self, kind: str) -> str:
        """The text of a site routing config; ``""`` if unset.

        ``kind`` is ``projectRules``, ``subjectRules``, ``sessionRules`` or ``aaRules``.
        """
        if kind not in self._RULE_KINDS:
            raise ClientError(f"Unknown DICOM routing config: {kind}", 404)
        with self._lock:
            row = self._q1("SELECT value FROM config WHERE key=?", (f"dicom/{kind}",))
            return "" if row is None else str(row[0])

    def set_routing_rules(self, kind: str, text: str, *, user: str = "admin") -> None:
        """Set a site routing config (``PUT /data/config/dicom/<kind>``).

        One rule a line, ``(gggg,eeee):regex[:group]``; the first rule that matches wins. Raises
        ClientError 400 for a malformed rule.
        """
        if kind not in self._RULE_KINDS:
            raise ClientError(f"Unknown DICOM routing config: {kind}", 404)
        try:
            parse_rules(text)
        except ValueError as exc:
            raise ClientError(str(exc)) from exc
        with self._lock:
            meta = self._rules_meta(kind)
            meta.update(
                version=int(meta.get("version", 0)) + 1,
                status="enabled",
                create_date=_now_str(),
                user=user,
            )
            self._db.execute("INSERT OR REPLACE INTO config VALUES(?,?)", (f"dicom/{kind}", text))
            self._db.execute(
                "INSERT OR REPLACE INTO config VALUES(?,?)",
                (f"dicom/{kind}#meta", json.dumps(meta)),
            )
            self._commit()
            self._rules = self._load_rules()

    def _rules_meta(self, kind: str) -> dict[str, Any]:
        with self._lock:
            row = self._q1("SELECT value FROM config WHERE key=?", (f"dicom/{kind}#meta",))
        if row is None:
            return {}
        meta: dict[str, Any] = json.loads(row[0])
        return meta

    def routing_rules_info(self, kind: str) -> dict[str, str] | None:
        """The config-service record of a routing config, or ``None`` if it was never set.

        Keys: ``contents``, ``version`` (1 for the first PUT), ``status`` (``enabled`` or
        ``disabled``; disabled rules are not applied), ``create_date``, ``user``.
        """
        if kind not in self._RULE_KINDS:
            return None
        with self._lock:
            meta = self._rules_meta(kind)
            row = self._q1("SELECT value FROM config WHERE key=?", (f"dicom/{kind}",))
        if row is None:
            return None
        return {
            "contents": str(row[0]),
            "version": str(meta.get("version", 1)),
            "status": str(meta.get("status", "enabled")),
            "create_date": str(meta.get("create_date", "")),
            "user": str(meta.get("user", "")),
        }

    def set_routing_rules_enabled(self, kind: str, enabled: bool, *, user: str = "admin") -> None:
        """Enable or disable a routing config (``PUT …?status=enabled|disabled``, ``DELETE``).

        A disabled config keeps its text but is not applied. Raises ClientError 404 for an
        unknown kind.
        """
        if kind not in self._RULE_KINDS:
            raise ClientError(f"Unknown DICOM routing config: {kind}", 404)
        with self._lock:
            meta = self._rules_meta(kind)
            meta.update(status="enabled" if enabled else "disabled", user=user)
            if self._q1("SELECT 1 FROM config WHERE key=?", (f"dicom/{kind}",)) is None:
                self._db.execute("INSERT INTO config VALUES(?,?)", (f"dicom/{kind}", ""))
                meta.update(version=1, create_date=_now_str())
            self._db.execute(
                "INSERT OR REPLACE INTO config VALUES(?,?)",
                (f"dicom/{kind}#meta", json.dumps(meta)),
            )
            self._commit()
            self._rules = self._load_rules()

    # ------------------------------------------------------------------ projects (§5)

    def create_project(self, project_id: str, *, prearchive_code: int = 0) -> bool:
        """Create a project; return ``True`` if created, ``False`` if it existed.

        Raises
        ------
        ClientError
            417 "Invalid character in project ID." for IDs outside ``[A-Za-z0-9_-]``.
        """
        if not _VALID_ID.match(project_id) or project_id == _UNASSIGNED:
            raise ClientError("Invalid character in project ID.", 417)
        with self._lock:
            if self._q1("SELECT 1 FROM projects WHERE id=?", (project_id,)):
                return False
            self._db.execute(
                "INSERT INTO projects VALUES(?,?,?)", (project_id, prearchive_code, _now_str())
            )
            self._commit()
            return True

    def project_exists(self, project_id: str) -> bool:
        """Whether a project with exactly this ID exists."""
        with self._lock:
            return self._q1("SELECT 1 FROM projects WHERE id=?", (project_id,)) is not None

    def set_prearchive_code(self, project_id: str, code: int) -> None:
        """Set the project's auto-archive code: 0 Manual, 4 AutoArchive, 5 AutoArchiveOverwrite."""
        if code not in _AA_NAMES:
            raise ClientError(f"Invalid prearchive code: {code}")
        with self._lock:
            cur = self._db.execute(
                "UPDATE projects SET prearchive_code=? WHERE id=?", (code, project_id)
            )
            if cur.rowcount == 0:
                raise ClientError("Unable to identify project", 404)
            self._commit()

    def get_prearchive_code(self, project_id: str) -> int:
        """The project's prearchive code (404 ClientError if missing)."""
        code = self._project_code(project_id)
        if code is None:
            raise ClientError("Unable to identify project", 404)
        return code

    def _project_code(self, project_id: str) -> int | None:
        with self._lock:
            row = self._q1("SELECT prearchive_code FROM projects WHERE id=?", (project_id,))
            return None if row is None else int(row[0])

    def list_projects(self) -> list[dict[str, str]]:
        """``/data/projects`` rows: ID, secondary_ID, name, description, pi_*, URI."""
        with self._lock:
            rows = self._q("SELECT id FROM projects ORDER BY id")
        return [
            {
                "ID": r["id"],
                "secondary_ID": r["id"],
                "name": r["id"],
                "description": "",
                "pi_firstname": "",
                "pi_lastname": "",
                "URI": f"/projects/{r['id']}",
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ subjects / experiments

    def _require_project(self, project: str) -> None:
        if not self.project_exists(project):
            raise ClientError("Unable to identify project", 404)

    def _find_subject(self, project: str, subject: str) -> sqlite3.Row | None:
        """By accession ID, then label (case-insensitive, as XNAT matches subjects)."""
        with self._lock:
            row = self._q1("SELECT * FROM subjects WHERE project=? AND id=?", (project, subject))
            if row is None:
                row = self._q1(
                    "SELECT * FROM subjects WHERE project=? AND lower(label)=lower(?) ORDER BY n",
                    (project, subject),
                )
            return row

    def _create_subject(self, project: str, label: str, user: str) -> str:
        cur = self._db.execute(
            "INSERT INTO subjects(project,label,insert_date,insert_user) VALUES(?,?,?,?)",
            (project, label, _now_str(), user),
        )
        sid = f"XNAT_S{cur.lastrowid:05d}"
        self._db.execute("UPDATE subjects SET id=? WHERE n=?", (sid, cur.lastrowid))
        return sid

    def put_subject(self, project: str, label: str, *, user: str = "admin") -> tuple[str, bool]:
        """Create a subject if missing; return (accession ID, created).

        Raises
        ------
        ClientError
            404 if the project is missing, 417 for a label outside ``[A-Za-z0-9_-]``.
        """
        with self._lock:
            self._require_project(project)
            row = self._find_subject(project, label)
            if row is not None:
                return str(row["id"]), False
            if not _VALID_ID.match(label):
                raise ClientError("Invalid character in subject label.", 417)
            sid = self._create_subject(project, label, user)
            self._commit()
            return sid, True

    def _find_experiment(self, project: str, experiment: str) -> sqlite3.Row | None:
        with self._lock:
            row = self._q1(
                "SELECT * FROM experiments WHERE project=? AND id=?", (project, experiment)
            )
            if row is None:
                row = self._q1(
                    "SELECT * FROM experiments WHERE project=? AND label=?", (project, experiment)
                )
            return row

    def _resolve_experiment(
        self, project: str, subject: str | None, label: str
    ) -> sqlite3.Row | None:
        """The experiment named by a project, subject (ID or label) and label (ID or label)."""
        with self._lock:
            exp = self._find_experiment(project, label)
            if exp is None:
                return None
            if subject is not None:
                subj = self._find_subject(project, subject)
                if subj is None or subj["id"] != exp["subject_id"]:
                    return None
            return exp

    def put_experiment(
        self, project: str, subject: str, label: str, xsi_type: str, *, user: str = "admin"
    ) -> tuple[str, bool]:
        """Create an (empty) experiment if missing; return (accession ID, created).

        The subject is created when missing. Raises ClientError 404 for a missing project and
        417 "Invalid character in experiment label." for a bad label.
        """
        with self._lock:
            self._require_project(project)
            exp = self._find_experiment(project, label)
            if exp is not None:
                return str(exp["id"]), False
            if not _VALID_ID.match(label):
                raise ClientError("Invalid character in experiment label.", 417)
            subj = self._find_subject(project, subject)
            if subj is None:
                if not _VALID_ID.match(subject):
                    raise ClientError("Invalid character in subject label.", 417)
                sid = self._create_subject(project, subject, user)
            else:
                sid = str(subj["id"])
            eid = self._insert_experiment(project, sid, label, xsi_type, "", "", "", "", user)
            self._commit()
            return eid, True

    def _insert_experiment(
        self,
        project: str,
        subject_id: str,
        label: str,
        xsi_type: str,
        uid: str,
        date: str,
        time_: str,
        modality: str,
        user: str,
    ) -> str:
        cur = self._db.execute(
            "INSERT INTO experiments(project,subject_id,label,xsi_type,uid,date,time,modality,"
            "insert_date,insert_user) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (project, subject_id, label, xsi_type, uid, date, time_, modality, _now_str(), user),
        )
        eid = f"XNAT_E{cur.lastrowid:05d}"
        self._db.execute("UPDATE experiments SET id=? WHERE n=?", (eid, cur.lastrowid))
        return eid

    def subjects(self, project: str) -> list[dict[str, str]]:
        """``/data/projects/P/subjects`` rows (§4.2)."""
        with self._lock:
            rows = self._q("SELECT * FROM subjects WHERE project=? ORDER BY n", (project,))
        return [
            {
                "ID": r["id"],
                "project": r["project"],
                "label": r["label"],
                "insert_date": r["insert_date"],
                "insert_user": r["insert_user"],
                "URI": f"/subjects/{r['id']}",
            }
            for r in rows
        ]

    def experiments(self, project: str, subject: str | None = None) -> list[dict[str, str]]:
        """``/data/projects/P[/subjects/S]/experiments`` rows (§4.2)."""
        with self._lock:
            if subject is None:
                rows = self._q("SELECT * FROM experiments WHERE project=? ORDER BY n", (project,))
            else:
                subj = self._find_subject(project, subject)
                if subj is None:
                    return []
                rows = self._q(
                    "SELECT * FROM experiments WHERE project=? AND subject_id=? ORDER BY n",
                    (project, subj["id"]),
                )
            labels = {
                r["id"]: r["label"]
                for r in self._q("SELECT id,label FROM subjects WHERE project=?", (project,))
            }
        return [
            {
                "ID": r["id"],
                "label": r["label"],
                "project": r["project"],
                "subject_ID": r["subject_id"],
                "subject_label": labels.get(r["subject_id"], ""),
                "xsiType": r["xsi_type"],
                "date": r["date"],
                "insert_date": r["insert_date"],
                "UID": r["uid"],
                "URI": f"/experiments/{r['id']}",
            }
            for r in rows
        ]

    def _scan_rows(self, eid: str) -> list[dict[str, str]]:
        rows = self._q("SELECT * FROM scans WHERE experiment_id=? ORDER BY n", (eid,))
        return [
            {
                "xnat_imagescandata_id": str(r["n"]),
                "ID": r["scan_id"],
                "type": r["type"],
                "quality": "usable",
                "xsiType": r["xsi_type"],
                "note": "",
                "series_description": r["series_description"],
                "UID": r["uid"],
                "URI": f"/experiments/{eid}/scans/{r['scan_id']}",
            }
            for r in rows
        ]

    def scans(self, project: str, subject: str, label: str) -> list[dict[str, str]] | None:
        """``…/experiments/E/scans`` rows, or ``None`` if the experiment is not archived."""
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            return self._scan_rows(exp["id"])

    def experiment_ref(self, experiment_id: str) -> tuple[str, str, str] | None:
        """(project, subject ID, experiment ID) for an experiment accession ID, or ``None``.

        ``/data/experiments/{ID}`` takes accession IDs only (labels need a project).
        """
        with self._lock:
            row = self._q1(
                "SELECT project, subject_id FROM experiments WHERE id=?", (experiment_id,)
            )
        return None if row is None else (str(row[0]), str(row[1]), experiment_id)

    def subject_project(self, subject_id: str) -> str | None:
        """The project of a subject accession ID (``/data/subjects/{ID}``), or ``None``."""
        with self._lock:
            row = self._q1("SELECT project FROM subjects WHERE id=?", (subject_id,))
        return None if row is None else str(row[0])

    def scan_resources(
        self, project: str, subject: str | None, label: str, scan: str
    ) -> list[dict[str, str]] | None:
        """``…/scans/{id}/resources`` rows (CatalogResourceList columns plus file counts), or
        ``None`` if the session or the scan is missing."""
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            if (
                self._q1(
                    "SELECT 1 FROM scans WHERE experiment_id=? AND scan_id=?", (exp["id"], scan)
                )
                is None
            ):
                return None
            rows = self._q(
                "SELECT r.n, r.label, r.format, r.content, count(f.path) AS cnt, "
                "coalesce(sum(f.size),0) AS sz FROM resources r LEFT JOIN files f "
                "ON f.resource_n=r.n WHERE r.experiment_id=? AND r.scan_id=? "
                "GROUP BY r.n ORDER BY r.n",
                (exp["id"], scan),
            )
        return [
            {
                "xnat_abstractresource_id": str(r["n"]),
                "label": r["label"],
                "element_name": "xnat:resourceCatalog",
                "category": "scans",
                "cat_id": scan,
                "cat_desc": "",
                "file_count": str(r["cnt"]),
                "file_size": str(r["sz"]),
                "format": r["format"],
                "content": r["content"],
                "tags": "",
            }
            for r in rows
        ]

    def experiment_item(
        self, project: str, subject: str | None, label: str
    ) -> dict[str, Any] | None:
        """The experiment as item JSON (§1.5): ``{"items": [{meta, data_fields, children}]}``.

        ``None`` until the session is archived.
        """
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            eid = exp["id"]
            scan_items = []
            for s in self._scan_rows(eid):
                res = self._q(
                    "SELECT r.n, r.label, r.format, r.content, count(f.path) AS cnt, "
                    "coalesce(sum(f.size),0) AS sz FROM resources r LEFT JOIN files f "
                    "ON f.resource_n=r.n WHERE r.experiment_id=? AND r.scan_id=? "
                    "GROUP BY r.n ORDER BY r.n",
                    (eid, s["ID"]),
                )
                files = [
                    {
                        "meta": {"xsi:type": "xnat:resourceCatalog", "isHistory": False},
                        "data_fields": {
                            "xnat_abstractresource_id": r["n"],
                            "label": r["label"],
                            "format": r["format"],
                            "content": r["content"],
                            "file_count": r["cnt"],
                            "file_size": r["sz"],
                        },
                        "children": [],
                    }
                    for r in res
                ]
                scan_items.append(
                    {
                        "meta": {"xsi:type": s["xsiType"], "isHistory": False},
                        "data_fields": {
                            "ID": s["ID"],
                            "UID": s["UID"],
                            "type": s["type"],
                            "series_description": s["series_description"],
                            "quality": "usable",
                            "image_session_ID": eid,
                            "xnat_imagescandata_id": int(s["xnat_imagescandata_id"]),
                        },
                        "children": [{"field": "file", "items": files}] if files else [],
                    }
                )
            data_fields = {
                "ID": eid,
                "label": exp["label"],
                "project": exp["project"],
                "subject_ID": exp["subject_id"],
                "UID": exp["uid"],
                "date": exp["date"],
                "time": exp["time"],
                "modality": exp["modality"],
                "insert_date": exp["insert_date"],
                "insert_user": exp["insert_user"],
            }
            children = [{"field": "scans/scan", "items": scan_items}] if scan_items else []
            return {
                "items": [
                    {
                        "meta": {"xsi:type": exp["xsi_type"], "isHistory": False},
                        "data_fields": data_fields,
                        "children": children,
                    }
                ]
            }

    def _exp_dir(self, project: str, label: str) -> str:
        return f"archive/{project}/arc001/{label}"

    def _resource_dir(self, exp: sqlite3.Row, scan_id: str, label: str) -> str:
        base = self._exp_dir(exp["project"], exp["label"])
        return f"{base}/SCANS/{scan_id}/{label}" if scan_id else f"{base}/RESOURCES/{label}"

    def _file_row(self, exp: sqlite3.Row, scan_id: str, r: sqlite3.Row) -> dict[str, str]:
        scan_part = f"/scans/{scan_id}" if scan_id else ""
        return {
            "Name": r["path"].rsplit("/", 1)[-1],
            "Size": str(r["size"]),
            "URI": f"/experiments/{exp['id']}{scan_part}/resources/{r['n']}/files/{r['path']}",
            "collection": r["label"],
            "file_tags": "",
            "file_format": r["format"],
            "file_content": r["content"],
            "cat_ID": str(r["n"]),
            "digest": r["md5"],
        }

    def scan_files(
        self, project: str, subject: str, label: str, scans: str = "ALL"
    ) -> list[dict[str, str]] | None:
        """``…/scans/{ALL|*|a,b}/files`` rows (§4.2), ``None`` if the experiment is missing.

        Columns: Name, Size, URI, collection, file_tags, file_format, file_content, cat_ID,
        digest (MD5 hex).
        """
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            wanted = [] if scans in ("ALL", "*") else sorted(set(scans.split(",")))
            # Filter in SQL (the UNIQUE(experiment_id, scan_id, label) index serves it): a client
            # listing a 100,000-file session scan by scan must not pay for every file each time.
            only = f" AND r.scan_id IN ({','.join('?' * len(wanted))})" if wanted else ""
            rows = self._q(
                "SELECT r.n, r.scan_id, r.label, r.format, r.content, f.path, f.size, f.md5 "  # noqa: S608 - only '?' placeholders are interpolated
                "FROM resources r JOIN files f ON f.resource_n=r.n "
                "JOIN scans s ON s.experiment_id=r.experiment_id AND s.scan_id=r.scan_id "
                f"WHERE r.experiment_id=?{only} ORDER BY s.n, r.n, f.path",
                (exp["id"], *wanted),
            )
        return [self._file_row(exp, r["scan_id"], r) for r in rows]

    def scan_file_uids(self, project: str, subject: str, label: str) -> dict[str, list[str]]:
        """SOP Instance UIDs stored per scan (from the index), for exact checks in tests."""
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return {}
            rows = self._q(
                "SELECT r.scan_id, f.sop_uid FROM resources r JOIN files f ON f.resource_n=r.n "
                "WHERE r.experiment_id=? AND r.label='DICOM' ORDER BY f.path",
                (exp["id"],),
            )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["scan_id"], []).append(r["sop_uid"])
        return out

    # ------------------------------------------------------------------ import (§3.4)

    def begin_import(self, params: ImportParams) -> ImportBatch:
        """Start one import request; use the result as a context manager."""
        return ImportBatch(self, params)

    def _ingest(self, params: ImportParams, stream: BinaryIO, entry_name: str) -> str | None:
        try:
            rules = self._rules
            hdr, prefix = read_header(stream, rules.tags)
        except (HeaderError, OSError) as exc:
            raise ClientError(f"unable to read DICOM object {entry_name}") from exc
        if not hdr.sop_class_uid:
            raise ClientError(f"object {entry_name} contains no SOP Class UID")
        if not hdr.sop_instance_uid:
            raise ClientError(f"object {entry_name} contains no SOP Instance UID")

        routing = route(hdr, self.project_exists, rules)
        project = routing.project
        if params.project and self.project_exists(params.project):
            project = params.project
        label = clean_label(params.session or "") or routing.session
        subject = clean_label(params.subject or "") or routing.subject
        scan = scan_folder_name(hdr)

        with self._lock:
            sess: sqlite3.Row | None = None
            if params.direct_archive and project is not None:
                sess = self._da_get_or_create(project, hdr, label, subject, params)
            if sess is None:
                sess = self._prearc_get_or_create(
                    project, hdr, label, subject, params, routing.auto_archive
                )
            name = self._choose_name(sess["n"], scan, hdr, entry_name, params.rename)
            key = (int(sess["n"]), scan, name)
            if key in self._file_locks:
                raise ClientError("Concurrent file sends of the same data is not supported.")
            self._file_locks.add(key)
            self._active[key[0]] = self._active.get(key[0], 0) + 1
            sess_dir = str(sess["dir"])
            if sess["kind"] == "da":
                uri = f"/xapi/direct-archive/{sess['project']}/{sess['tag']}/{sess['name']}"
            else:
                uri = self._prearc_uri(sess)
        recorded = False
        try:
            final = self._safe_path(sess_dir, "SCANS", scan, "DICOM", name)
            size, md5 = self._write_file(final, prefix, stream)
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO session_files VALUES(?,?,?,?,?,?,?,?,?,?)",
                    (
                        key[0],
                        scan,
                        name,
                        size,
                        md5,
                        hdr.sop_instance_uid,
                        hdr.sop_class_uid,
                        hdr.series_instance_uid,
                        hdr.series_description,
                        hdr.modality,
                    ),
                )
                self._release(key)
                recorded = True
        except Exception as exc:
            log.warning("import of %s failed: %s", entry_name, exc)
            raise ClientError(f"unable to read DICOM object {entry_name}") from exc
        finally:
            if not recorded:
                with self._lock:
                    self._release(key)
                    # A session this failed write would leave without any file is not kept:
                    # XNAT builds a session from the files in its folder, and an empty one
                    # must not be built, archived empty, and then block the data sent again.
                    self._drop_if_empty(key[0])
        return uri

    def _drop_if_empty(self, sn: int) -> bool:
        """Forget session ``sn`` and its empty folders if it holds no file and nothing is
        being written to it or archived from it; caller holds the lock. True if dropped."""
        if self._active.get(sn) or sn in self._archiving_sessions:
            return False
        if self._q1("SELECT 1 FROM session_files WHERE session_n=? LIMIT 1", (sn,)) is not None:
            return False
        row = self._q1("SELECT kind, dir FROM sessions WHERE n=?", (sn,))
        if row is None:
            return False
        self._db.execute("DELETE FROM sessions WHERE n=?", (sn,))
        try:
            top = self._safe_path(str(row["dir"]))
        except ClientError:
            return True
        if top.is_dir():
            # Only empty folders go (deepest first); anything holding a file stays.
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        if row["kind"] != "da":
            self._prune(top.parent)  # the timestamp folder, if nothing else is in it
        return True

    def _release(self, key: tuple[int, str, str]) -> None:
        self._file_locks.discard(key)
        left = self._active.get(key[0], 1) - 1
        if left <= 0:
            self._active.pop(key[0], None)
            self._drained.notify_all()
        else:
            self._active[key[0]] = left

    def _write_file(self, final: Path, prefix: bytes, stream: BinaryIO) -> tuple[int, str]:
        """Copy ``prefix`` and the rest of ``stream`` to ``final``; return (size, MD5).

        A new name is created in place (the caller holds the per-file lock); an existing file is
        replaced atomically through a temporary file, so readers never see half of it.
        """
        if self.faults.file_delay > 0:
            time.sleep(self.faults.file_delay)
        try:
            f = open(final, "xb")  # noqa: SIM115 - closed below, path chosen by the outcome
            target = final
        except FileNotFoundError:
            final.parent.mkdir(parents=True, exist_ok=True)
            f = open(final, "xb")  # noqa: SIM115
            target = final
        except FileExistsError:
            target = final.with_name(f".{final.name}.{uuid.uuid4().hex}.part")
            f = open(target, "xb")  # noqa: SIM115
        md5 = hashlib.md5(prefix, usedforsecurity=False)
        size = len(prefix)
        try:
            with f:
                if self.faults.disk_full:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                f.write(prefix)
                while chunk := stream.read(_COPY_BUFFER):
                    f.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            if target != final:
                os.replace(target, final)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return size, md5.hexdigest()

    def _choose_name(
        self, session_n: int, scan: str, hdr: DicomHeader, entry_name: str, rename: bool
    ) -> str:
        """The stored file name (§4.3)."""
        template = template_file_name(hdr)
        if rename:
            return template
        name = _SAFE_NAME.sub("_", entry_name)
        if not name or name.startswith("."):
            return template
        row = self._q1(
            "SELECT sop_uid, sop_class FROM session_files WHERE session_n=? AND scan=? AND name=?",
            (session_n, scan, name),
        )
        if row is not None and (row[0], row[1]) != (hdr.sop_instance_uid, hdr.sop_class_uid):
            return template
        return name

    def _touch(self, row: sqlite3.Row, status: str | None = None) -> None:
        now = time.time()
        if status is not None:
            self._db.execute(
                "UPDATE sessions SET status=?, lastmod=? WHERE n=?", (status, now, row["n"])
            )
        elif now - float(row["lastmod"]) >= self._lastmod_step:
            self._db.execute("UPDATE sessions SET lastmod=? WHERE n=?", (now, row["n"]))

    def _prearc_get_or_create(
        self,
        project: str | None,
        hdr: DicomHeader,
        label: str,
        subject: str,
        params: ImportParams,
        dicom_aa: bool | None,
    ) -> sqlite3.Row:
        """PrearcDatabase.eitherGetOrCreateSession (§3.4 step 6); caller holds the lock."""
        pk = project or ""
        rows = self._q(
            "SELECT * FROM sessions WHERE kind='prearc' AND project=? AND tag=? AND name=? "
            "ORDER BY n DESC",
            (pk, hdr.study_instance_uid, label),
        )
        for row in rows:
            status = row["status"]
            if status in (RECEIVING, RECEIVING_INTERRUPT):
                self._touch(row)
                return row
            if status in _BUILDING_STATES:
                self._touch(row, RECEIVING_INTERRUPT)
                return row
            if status in _INTERRUPTIBLE:
                self._touch(row, RECEIVING)
                return row
        # No reusable row (none, or only ARCHIVING/MOVING/...): a new one with a new timestamp.
        if dicom_aa is not None:
            aa: int | None = 4 if dicom_aa else 0
        else:
            aa = self._project_code(project) if project else None
        ts = self._new_timestamp()
        d = f"prearchive/{pk}/{ts}/{label}" if pk else f"prearchive_unassigned/{ts}/{label}"
        return self._insert_session("prearc", pk, ts, label, hdr, subject, params, aa, d)

    def _insert_session(
        self,
        kind: str,
        pk: str,
        ts: str,
        label: str,
        hdr: DicomHeader,
        subject: str,
        params: ImportParams,
        aa: int | None,
        d: str,
    ) -> sqlite3.Row:
        now = time.time()
        cur = self._db.execute(
            "INSERT INTO sessions(kind,project,timestamp,folder,name,tag,status,subject,lastmod,"
            "uploaded,autoarchive,prevent_anon,prevent_auto_commit,source,visit,protocol,"
            "scan_date,scan_time,dir) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                kind,
                pk,
                ts,
                label,
                label,
                hdr.study_instance_uid,
                RECEIVING,
                subject,
                now,
                now,
                aa,
                int(params.prevent_anon),
                int(params.prevent_auto_commit),
                params.source or "",
                params.visit or "",
                params.subtype or "",
                _fmt_date(hdr.study_date),
                _fmt_time(hdr.study_time),
                d,
            ),
        )
        row = self._q1("SELECT * FROM sessions WHERE n=?", (cur.lastrowid,))
        assert row is not None
        return row

    def _da_get_or_create(
        self, project: str, hdr: DicomHeader, label: str, subject: str, params: ImportParams
    ) -> sqlite3.Row | None:
        """DirectArchiveSessionService.getOrCreate; ``None`` means fall back to the prearchive."""
        row = self._q1(
            "SELECT * FROM sessions WHERE kind='da' AND project=? AND tag=? AND name=? "
            "ORDER BY n DESC",
            (project, hdr.study_instance_uid, label),
        )
        if row is not None:
            if row["status"] != RECEIVING:
                return None
            self._touch(row)
            return row
        d = self._exp_dir(project, label)
        path = self._safe_path(d)
        if path.exists() or self._find_experiment(project, label) is not None:
            return None
        path.mkdir(parents=True)
        ts = self._new_timestamp()
        return self._insert_session("da", project, ts, label, hdr, subject, params, None, d)

    # ------------------------------------------------------------------ prearchive listings

    @staticmethod
    def _prearc_uri(row: sqlite3.Row) -> str:
        project = row["project"] or _UNASSIGNED
        return f"/prearchive/projects/{project}/{row['timestamp']}/{row['folder']}"

    def _prearc_dict(self, row: sqlite3.Row) -> dict[str, str]:
        aa = row["autoarchive"]
        return {
            "project": row["project"] or _UNASSIGNED,
            "timestamp": row["timestamp"],
            "lastmod": _now_str(row["lastmod"]),
            "uploaded": _now_str(row["uploaded"]),
            "scan_date": row["scan_date"],
            "scan_time": row["scan_time"],
            "subject": row["subject"],
            "folderName": row["folder"],
            "name": row["name"],
            "tag": row["tag"],
            "status": row["status"],
            "url": self._prearc_uri(row),
            "autoarchive": _AA_NAMES.get(aa, "") if aa is not None else "",
            "prevent_anon": "true" if row["prevent_anon"] else "false",
            "prevent_auto_commit": "true" if row["prevent_auto_commit"] else "false",
            "SOURCE": row["source"],
            "VISIT": row["visit"],
            "PROTOCOL": row["protocol"],
            "TIMEZONE": "",
        }

    def prearchive_rows(self, project: str | None) -> list[dict[str, str]]:
        """``/data/prearchive/projects/P`` rows (§4.2); ``None`` lists every project.

        ``project`` may be a comma list; ``Unassigned`` names the rows without a project.
        """
        with self._lock:
            if project is None:
                rows = self._q("SELECT * FROM sessions WHERE kind='prearc' ORDER BY n")
            else:
                keys = ["" if p == _UNASSIGNED else p for p in project.split(",")]
                marks = ",".join("?" * len(keys))
                rows = self._q(
                    f"SELECT * FROM sessions WHERE kind='prearc' AND project IN ({marks}) "  # noqa: S608
                    "ORDER BY n",
                    tuple(keys),
                )
            return [self._prearc_dict(r) for r in rows]

    def _find_prearc(self, project: str, timestamp: str, folder: str) -> sqlite3.Row | None:
        pk = "" if project == _UNASSIGNED else project
        return self._q1(
            "SELECT * FROM sessions WHERE kind='prearc' AND project=? AND timestamp=? AND folder=?",
            (pk, timestamp, folder),
        )

    def prearchive_session(
        self, project: str, timestamp: str, folder: str
    ) -> dict[str, str] | None:
        """One prearchive row as in :meth:`prearchive_rows`, or ``None``."""
        with self._lock:
            row = self._find_prearc(project, timestamp, folder)
            return None if row is None else self._prearc_dict(row)

    def prearchive_files(self, project: str, timestamp: str, folder: str) -> list[dict[str, str]]:
        """Files of a prearchive session: name, scan, size, sop_instance_uid, md5."""
        with self._lock:
            row = self._find_prearc(project, timestamp, folder)
            if row is None:
                return []
            rows = self._q(
                "SELECT * FROM session_files WHERE session_n=? ORDER BY scan, name", (row["n"],)
            )
        return [
            {
                "name": r["name"],
                "scan": r["scan"],
                "size": str(r["size"]),
                "sop_instance_uid": r["sop_uid"],
                "md5": r["md5"],
            }
            for r in rows
        ]

    def _built_prearc(self, project: str, timestamp: str, folder: str) -> sqlite3.Row:
        """The row of a prearchive session whose session document exists (built at least once).

        XNAT's prearchive scan listings read ``<folder>.xml``, which the build writes; before
        the first build they answer 404 "Unable to locate prearc resource.".
        """
        row = self._find_prearc(project, timestamp, folder)
        if row is None or not row["built"]:
            raise ClientError("Unable to locate prearc resource.", 404)
        return row

    def prearchive_scans(self, project: str, timestamp: str, folder: str) -> list[dict[str, str]]:
        """``GET /data/prearchive/projects/P/TS/FOLDER/scans`` rows: ID, xsiType,
        series_description (XNAT's PrearcScansListResource columns), in scan order.

        Raises
        ------
        ClientError
            404 "Unable to locate prearc resource." when the session is unknown or not built.
        """
        with self._lock:
            row = self._built_prearc(project, timestamp, folder)
            rows = self._q(
                "SELECT scan, series_description, modality FROM session_files "
                "WHERE session_n=? ORDER BY name",
                (row["n"],),
            )
        scans: dict[str, dict[str, str]] = {}
        for r in rows:
            scans.setdefault(
                r["scan"],
                {
                    "ID": r["scan"],
                    "xsiType": _SCAN_XSI.get(r["modality"], "xnat:otherDicomScanData"),
                    "series_description": r["series_description"],
                },
            )
        return [scans[k] for k in sorted(scans, key=_scan_sort_key)]

    def _prearc_scan_rows(
        self, project: str, timestamp: str, folder: str, scan: str
    ) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        row = self._built_prearc(project, timestamp, folder)
        files = self._q(
            "SELECT * FROM session_files WHERE session_n=? AND scan=? ORDER BY name",
            (row["n"], scan),
        )
        if not files:
            raise ClientError("Unable to identify scan", 404)
        return row, files

    def prearchive_scan_resources(
        self, project: str, timestamp: str, folder: str, scan: str
    ) -> list[dict[str, str]]:
        """``…/scans/{id}/resources`` rows: label, file_count, file_size (PrearcScanResourceList).

        Raises ClientError 404 for an unknown or unbuilt session, or an unknown scan.
        """
        with self._lock:
            _, files = self._prearc_scan_rows(project, timestamp, folder, scan)
        size = sum(int(f["size"]) for f in files)
        return [{"label": "DICOM", "file_count": str(len(files)), "file_size": str(size)}]

    def prearchive_scan_files(
        self, project: str, timestamp: str, folder: str, scan: str, resource: str
    ) -> list[dict[str, str]]:
        """``…/scans/{id}/resources/{label}/files`` rows: Name, Size, and the path of the file
        inside the resource as ``path`` (the HTTP layer makes XNAT's URI column from it).

        Raises ClientError 404 for an unknown or unbuilt session, scan or resource label.
        """
        with self._lock:
            _, files = self._prearc_scan_rows(project, timestamp, folder, scan)
        if resource != "DICOM":
            raise ClientError("Unable to identify resource", 404)
        return [{"Name": f["name"], "Size": str(f["size"]), "path": f["name"]} for f in files]

    def prearchive_file_path(
        self, project: str, timestamp: str, folder: str, scan: str, resource: str, name: str
    ) -> Path | None:
        """Where one file of a prearchive scan resource is on disk, or ``None`` if it is not
        listed there. Raises ClientError 404 like :meth:`prearchive_scan_files`."""
        with self._lock:
            row, files = self._prearc_scan_rows(project, timestamp, folder, scan)
            if resource != "DICOM" or name not in {f["name"] for f in files}:
                return None
            return self._safe_path(row["dir"], "SCANS", scan, "DICOM", name)

    # ------------------------------------------------------------------ archiving (§3.8)

    @staticmethod
    def _parse_dest(dest: str | None) -> tuple[str | None, str | None, str | None]:
        """Split ``/archive/projects/P[/subjects/S[/experiments/E]]`` into its parts."""
        if not dest:
            return None, None, None
        parts = [p for p in dest.split("/") if p]
        if parts[:1] == ["data"] or parts[:1] == ["REST"]:
            parts = parts[1:]
        if parts[:1] == ["archive"]:
            parts = parts[1:]
        if len(parts) < 2 or parts[0] != "projects" or len(parts) % 2:
            raise ClientError("Parameter dest format error")
        pairs = dict(zip(parts[::2], parts[1::2], strict=True))
        if not set(pairs) <= {"projects", "subjects", "experiments"}:
            raise ClientError("Parameter dest format error")
        return pairs.get("projects"), pairs.get("subjects"), pairs.get("experiments")

    def _target(self, row: sqlite3.Row, dest: str | None) -> _Target:
        project, subject, exp = self._parse_dest(dest)
        project = project or row["project"]
        label = row["name"]
        if exp:
            found = self._find_experiment(project, exp)
            label = found["label"] if found is not None else exp
        subject = subject or row["subject"] or label
        subj = self._find_subject(project, subject)
        if subj is not None:
            subject = subj["label"]
        return _Target(project, subject, label)

    def _archive_uri(self, t: _Target) -> str:
        return f"/archive/projects/{t.project}/subjects/{t.subject}/experiments/{t.label}"

    def _archive_session(self, sn: int, target: _Target, flags: _Flags, user: str) -> str:
        """Archive one prearchive or DA session; the 423/409 checks of §3.8, then the merge.

        On a 409-type failure the row becomes CONFLICT, on other failures ERROR (§3.5).
        """
        tkey = (target.project, target.label)
        with self._lock:
            if sn in self._archiving_sessions:
                raise ClientError(
                    "Duplicate archive attempt. Prearchive session already archiving.", 423
                )
            if tkey in self._archiving_targets:
                raise ClientError("Duplicate archive attempt.  Destination session in use.", 423)
            if not self.project_exists(target.project):
                raise ClientError("Unable to identify project", 404)
            self._archiving_sessions.add(sn)
            self._archiving_targets.add(tkey)
            self._db.execute("UPDATE sessions SET status=?, built=1 WHERE n=?", (ARCHIVING, sn))
        try:
            with self._lock:
                # Files still being written into this session finish first.
                while self._active.get(sn):
                    self._drained.wait(1.0)
                row = self._q1("SELECT * FROM sessions WHERE n=?", (sn,))
                if row is None:  # archived or moved meanwhile by another request
                    raise ClientError("Unable to find the session to archive.", 404)
                files = self._q("SELECT * FROM session_files WHERE session_n=?", (sn,))
                try:
                    plan = self._plan_archive(row, files, target, flags)
                except ClientError as exc:
                    status = CONFLICT if exc.status == 409 else ERROR
                    self._db.execute("UPDATE sessions SET status=? WHERE n=?", (status, sn))
                    self._commit()
                    raise
            src_dir = str(row["dir"])
            dst_dir = self._exp_dir(target.project, target.label)
            try:
                for f in files:
                    src = self._safe_path(src_dir, "SCANS", f["scan"], "DICOM", f["name"])
                    dst = self._safe_path(dst_dir, "SCANS", plan[f["scan"]], "DICOM", f["name"])
                    if src != dst:
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(src, dst)
            except OSError as exc:
                with self._lock:
                    self._db.execute("UPDATE sessions SET status=? WHERE n=?", (ERROR, sn))
                    self._commit()
                raise ServerError(f"Unable to archive session: {exc}") from exc
            with self._lock:
                self._finish_archive(row, files, target, plan, user)
                self._commit()
            if row["kind"] == "prearc":
                shutil.rmtree(self._safe_path(src_dir), ignore_errors=True)
                self._prune(self._safe_path(src_dir).parent)
            return self._archive_uri(target)
        finally:
            with self._lock:
                self._archiving_sessions.discard(sn)
                self._archiving_targets.discard(tkey)

    def _prune(self, d: Path) -> None:
        """Remove empty timestamp folders left behind in the prearchive."""
        try:
            if d != self.data_dir and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            pass

    def _plan_archive(
        self, row: sqlite3.Row, files: list[sqlite3.Row], t: _Target, flags: _Flags
    ) -> dict[str, str]:
        """Run the §3.8 checks; return the mapping from new scan folder to archived scan ID."""
        new_scans: dict[str, str] = {}
        modalities: list[str] = []
        for f in files:
            new_scans.setdefault(f["scan"], f["series_uid"])
            modalities.append(f["modality"])
        exp = self._find_experiment(t.project, t.label)
        plan = {s: s for s in new_scans}
        exp_dir = self._safe_path(self._exp_dir(t.project, t.label))
        if exp is None:
            if exp_dir.exists() and row["kind"] != "da" and any(exp_dir.iterdir()):
                # Files already in the archive tree (an unfinished Direct-Archive session).
                if not flags.merge:
                    raise ClientError("Session already exists with matching files.", 409)
                if not flags.overwrite_files and any(
                    (exp_dir / "SCANS" / f["scan"] / "DICOM" / f["name"]).exists() for f in files
                ):
                    raise ClientError("Session already exists with matching files.", 409)
            return plan
        if not flags.merge:
            raise ClientError("Session already exists, retry with overwrite enabled", 409)
        subj = self._find_subject(t.project, t.subject)
        if subj is None or subj["id"] != exp["subject_id"]:
            raise ClientError(
                "Invalid modification of session subject via archive process.: "
                f"{t.label} Already Exists for another Subject",
                409,
            )
        xsi = _session_xsi(modalities)
        if exp["xsi_type"] != xsi:
            raise ClientError(
                "Invalid modification of session modality via archive process.  "
                "Data may require a manual merge.",
                409,
            )
        if not flags.override and exp["uid"] and exp["uid"] != row["tag"]:
            raise ClientError("Invalid modification of session UID via archive process.", 409)
        old = {r["scan_id"]: r["uid"] for r in self._scan_rows_raw(exp["id"])}
        used = set(old) | set(new_scans)
        for scan, uid in new_scans.items():
            if scan in old:
                if old[scan] != uid:
                    plan[scan] = self._free_scan_id(scan, used)
                    used.add(plan[scan])
                    log.info("Renaming scan %s to %s due to ID conflict", scan, plan[scan])
                continue
            same_uid = [s for s, u in old.items() if u == uid and uid]
            if same_uid and not flags.override:
                raise ClientError(
                    "Session already contains a scan with the same UID, but a different "
                    f"number ({same_uid[0]}).",
                    409,
                )
        if not flags.overwrite_files:
            existing = {
                (r["scan_id"], r["path"])
                for r in self._q(
                    "SELECT r.scan_id, f.path FROM resources r JOIN files f ON f.resource_n=r.n "
                    "WHERE r.experiment_id=? AND r.label='DICOM'",
                    (exp["id"],),
                )
            }
            incoming = {(plan[f["scan"]], f["name"]) for f in files}
            if incoming & existing:
                if incoming == existing:
                    raise ClientError("Session already exists with the same resources.", 409)
                raise ClientError("Session already exists with matching files.", 409)
        return plan

    def _scan_rows_raw(self, eid: str) -> list[sqlite3.Row]:
        return self._q("SELECT * FROM scans WHERE experiment_id=? ORDER BY n", (eid,))

    @staticmethod
    def _free_scan_id(scan: str, used: set[str]) -> str:
        numbers = [int(s) for s in used if s.isdigit()]
        if scan.isdigit():
            n = max(numbers) + 1
            while str(n) in used:
                n += 1
            return str(n)
        i = 1
        while f"{scan}_{i}" in used:
            i += 1
        return f"{scan}_{i}"

    def _finish_archive(
        self,
        row: sqlite3.Row,
        files: list[sqlite3.Row],
        t: _Target,
        plan: dict[str, str],
        user: str,
    ) -> None:
        subj = self._find_subject(t.project, t.subject)
        sid = (
            str(subj["id"])
            if subj is not None
            else self._create_subject(t.project, t.subject, user)
        )
        exp = self._find_experiment(t.project, t.label)
        modalities = [f["modality"] for f in files]
        if exp is None:
            mods = [m for m in modalities if m]
            modality = max(set(mods), key=mods.count) if mods else ""
            eid = self._insert_experiment(
                t.project,
                sid,
                t.label,
                _session_xsi(modalities),
                row["tag"],
                row["scan_date"],
                row["scan_time"],
                modality,
                user,
            )
        else:
            eid = str(exp["id"])
            if not exp["uid"]:
                # A pre-created (empty) experiment takes the study's details on its first merge.
                self._db.execute(
                    "UPDATE experiments SET uid=?, date=?, time=? WHERE id=?",
                    (row["tag"], row["scan_date"], row["scan_time"], eid),
                )
        resources: dict[str, int] = {}
        for f in sorted(files, key=lambda f: (_scan_sort_key(plan[f["scan"]]), f["name"])):
            scan_id = plan[f["scan"]]
            if scan_id not in resources:
                self._db.execute(
                    "INSERT OR IGNORE INTO scans(experiment_id,scan_id,uid,type,"
                    "series_description,modality,xsi_type) VALUES(?,?,?,?,?,?,?)",
                    (
                        eid,
                        scan_id,
                        f["series_uid"],
                        f["series_description"],
                        f["series_description"],
                        f["modality"],
                        _SCAN_XSI.get(f["modality"], "xnat:otherDicomScanData"),
                    ),
                )
                resources[scan_id] = self._get_resource(eid, scan_id, "DICOM", "DICOM", "RAW")
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)",
                (resources[scan_id], f["name"], f["size"], f["md5"], f["sop_uid"], f["sop_class"]),
            )
        self._db.execute("DELETE FROM session_files WHERE session_n=?", (row["n"],))
        self._db.execute("DELETE FROM sessions WHERE n=?", (row["n"],))

    def _get_resource(self, eid: str, scan_id: str, label: str, fmt: str, content: str) -> int:
        r = self._q1(
            "SELECT n FROM resources WHERE experiment_id=? AND scan_id=? AND label=?",
            (eid, scan_id, label),
        )
        if r is not None:
            return int(r[0])
        cur = self._db.execute(
            "INSERT INTO resources(experiment_id,scan_id,label,format,content) VALUES(?,?,?,?,?)",
            (eid, scan_id, label, fmt, content),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def commit_prearchive(
        self,
        project: str,
        timestamp: str,
        folder: str,
        *,
        overwrite: str | None = None,
        overwrite_files: bool = False,
        auto_archive: bool | None = None,
        dest: str | None = None,
        user: str = "admin",
    ) -> tuple[int, str]:
        """``POST /data/prearchive/projects/P/TS/FOLDER?action=commit`` (§9).

        Returns
        -------
        tuple
            (200, prearchive URI) when the session is only built, or (301, archive URI) when it
            auto-archives (row code 4/5, ``auto_archive`` true, or project code >= 4).

        Raises
        ------
        ClientError
            404 unknown session; 409 "session document locked"; 403 for Unassigned; 409/423
            archive conflicts (§3.8).
        """
        with self._lock:
            row = self._find_prearc(project, timestamp, folder)
            if row is None:
                raise ClientError(
                    f"Unable to find prearchive session {project}/{timestamp}/{folder}", 404
                )
            if row["status"] not in _INTERRUPTIBLE:
                raise ClientError("session document locked", 409)
            aa = row["autoarchive"]
            if aa is None and row["project"]:
                aa = self._project_code(row["project"])
                self._db.execute("UPDATE sessions SET autoarchive=? WHERE n=?", (aa, row["n"]))
            code = self._project_code(row["project"]) if row["project"] else None
            archive = aa in (4, 5) or auto_archive is True or (code is not None and code >= 4)
            # The build itself is instant here: BUILDING then READY.
            self._db.execute("UPDATE sessions SET status=?, built=1 WHERE n=?", (READY, row["n"]))
            self._commit()
            if not archive:
                return 200, self._prearc_uri(row)
            if not row["project"]:
                raise ClientError("Projects in the unassigned folder cannot be archived.", 403)
            target = self._target(row, dest)
            override, merge = _overwrite_flags(overwrite)
            flags = _Flags(override, merge, overwrite_files or override or code == 5)
        return 301, self._archive_session(int(row["n"]), target, flags, user)

    def _prearc_or_404(self, project: str, timestamp: str, folder: str) -> sqlite3.Row:
        row = self._find_prearc(project, timestamp, folder)
        if row is None:
            raise ClientError(
                f"Unable to find prearchive session {project}/{timestamp}/{folder}", 404
            )
        return row

    def _locked(self, row: sqlite3.Row) -> bool:
        """Whether another operation holds the session (archive, move, or files arriving)."""
        n = int(row["n"])
        return row["status"] not in _INTERRUPTIBLE or n in self._archiving_sessions

    def build_prearchive(self, project: str, timestamp: str, folder: str) -> str:
        """``POST <prearchive uri>?action=build`` (§9): build the session document now.

        The session becomes READY (its scan listings become available); nothing is archived.
        Returns the prearchive URI.

        Raises
        ------
        ClientError
            404 unknown session; 409 "session document locked" while it is archiving or in
            another non-interruptible state.
        """
        with self._lock:
            row = self._prearc_or_404(project, timestamp, folder)
            if self._locked(row):
                raise ClientError("session document locked", 409)
            self._db.execute("UPDATE sessions SET status=?, built=1 WHERE n=?", (READY, row["n"]))
            self._commit()
            return self._prearc_uri(row)

    def reset_prearchive_status(
        self, project: str, timestamp: str, folder: str, *, tag: str | None = None
    ) -> str:
        """``POST <prearchive uri>?action=reset-status[&tag=UID]`` (§9).

        Like XNAT's resetStatus, the row is re-read from the session folder whatever its
        status: READY if a session document exists (it was built), RECEIVING otherwise. The
        row's auto-archive, prevent_anon, prevent_auto_commit and SOURCE are kept; ``tag``
        replaces the StudyInstanceUID. Returns the prearchive URI. ClientError 404 if unknown.
        """
        with self._lock:
            row = self._prearc_or_404(project, timestamp, folder)
            status = READY if row["built"] else RECEIVING
            self._db.execute(
                "UPDATE sessions SET status=?, tag=? WHERE n=?",
                (status, tag or row["tag"], row["n"]),
            )
            self._commit()
            return self._prearc_uri(row)

    def move_prearchive(
        self, project: str, timestamp: str, folder: str, new_project: str
    ) -> str | None:
        """``POST <prearchive uri>?action=move&newProject=P2`` (§9): move a session to another
        project's prearchive, keeping its timestamp and folder; it is rebuilt (READY).

        Returns
        -------
        str or None
            The new prearchive URI; ``None`` when the session is locked (XNAT then answers 200
            with no body and moves nothing).

        Raises
        ------
        ClientError
            403 "Unable to modify session data for destination project." for a missing
            destination; 404 unknown session; 409 when the destination holds a session with
            the same timestamp and folder.
        """
        if not new_project or not self.project_exists(new_project):
            raise ClientError("Unable to modify session data for destination project.", 403)
        with self._lock:
            row = self._prearc_or_404(project, timestamp, folder)
            if self._locked(row) or self._active.get(int(row["n"])):
                return None
            if (row["project"] or "") == new_project:
                return self._prearc_uri(row)
            if self._find_prearc(new_project, timestamp, folder) is not None:
                raise ClientError(
                    f"A session {new_project}/{timestamp}/{folder} already exists.", 409
                )
            src = self._safe_path(row["dir"])
            d = f"prearchive/{new_project}/{timestamp}/{folder}"
            dst = self._safe_path(d)
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.exists():
                    os.replace(src, dst)
            except OSError as exc:
                raise ServerError(f"Unable to move the session: {exc}") from exc
            self._prune(src.parent)
            self._db.execute(
                "UPDATE sessions SET project=?, dir=?, status=?, built=1 WHERE n=?",
                (new_project, d, READY, row["n"]),
            )
            self._commit()
            moved = self._q1("SELECT * FROM sessions WHERE n=?", (row["n"],))
            assert moved is not None
            return self._prearc_uri(moved)

    def delete_prearchive(self, project: str, timestamp: str, folder: str) -> None:
        """``DELETE <prearchive uri>`` (§9): remove the session's row and its files.

        Raises
        ------
        ClientError
            404 unknown session; 409 while it is archiving, locked, or receiving files.
        """
        with self._lock:
            row = self._prearc_or_404(project, timestamp, folder)
            if self._locked(row) or self._active.get(int(row["n"])):
                raise ClientError(
                    f"The session {project}/{timestamp}/{folder} is locked: {row['status']}", 409
                )
            self._db.execute("DELETE FROM session_files WHERE session_n=?", (row["n"],))
            self._db.execute("DELETE FROM sessions WHERE n=?", (row["n"],))
            self._commit()
            src = self._safe_path(row["dir"])
        shutil.rmtree(src, ignore_errors=True)
        self._prune(src.parent)

    @staticmethod
    def _parse_prearc_uri(uri: str) -> tuple[str, str, str]:
        parts = [p for p in uri.split("/") if p]
        if parts[:1] in (["data"], ["REST"]):
            parts = parts[1:]
        if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
            raise ClientError(f"Invalid prearchive path: {uri}")
        return parts[2], parts[3], parts[4]

    def archive_service(
        self,
        src: str,
        *,
        dest: str | None,
        overwrite: str | None,
        overwrite_files: bool,
        user: str = "admin",
    ) -> str:
        """``POST /data/services/archive?src=/prearchive/projects/P/TS/FOLDER`` (§9).

        Returns the archive URI. Raises ClientError 404 (unknown src), 403 "Operation already in
        progress on this prearchive entry." or for Unassigned, and the §3.8 409/423 conflicts.
        """
        project, ts, folder = self._parse_prearc_uri(src)
        with self._lock:
            row = self._find_prearc(project, ts, folder)
            if row is None:
                raise ClientError(f"Unable to find prearchive session {src}", 404)
            if row["status"] not in _INTERRUPTIBLE or int(row["n"]) in self._archiving_sessions:
                raise ClientError("Operation already in progress on this prearchive entry.", 403)
            if not row["project"]:
                raise ClientError("Projects in the unassigned folder cannot be archived.", 403)
            target = self._target(row, dest)
            code = self._project_code(row["project"])
            override, merge = _overwrite_flags(overwrite)
            flags = _Flags(override, merge, overwrite_files or override or code == 5)
        return self._archive_session(int(row["n"]), target, flags, user)

    def commit_import(
        self,
        uris: list[str],
        *,
        overwrite: str | None,
        overwrite_files: bool,
        dest: str | None,
        auto_archive: bool,
        user: str = "admin",
    ) -> list[str]:
        """The DICOM-zip commit path (``dest`` or ``action=commit``, §3.4, §3.9 item 3).

        Each prearchive session in ``uris`` is built; if ``auto_archive`` it is archived at
        once. A session another request is still writing into counts as interrupted and gives
        no URI. Direct-Archive URIs are passed through unchanged.

        Raises
        ------
        ClientError
            400 "unable to archive for the Prearchive session" for any archive failure.
        """
        out: list[str] = []
        for uri in uris:
            if not uri.startswith("/prearchive/"):
                out.append(uri)
                continue
            project, ts, folder = self._parse_prearc_uri(uri)
            with self._lock:
                row = self._find_prearc(project, ts, folder)
                if row is None or row["status"] not in _INTERRUPTIBLE:
                    continue
                if self._active.get(int(row["n"])):
                    # Another batch is writing: the build is interrupted and nothing archived.
                    self._db.execute(
                        "UPDATE sessions SET status=? WHERE n=?", (RECEIVING, row["n"])
                    )
                    continue
                self._db.execute(
                    "UPDATE sessions SET status=?, built=1 WHERE n=?", (READY, row["n"])
                )
                if not auto_archive:
                    out.append(uri)
                    continue
                try:
                    if not row["project"]:
                        raise ClientError("Projects in the unassigned folder cannot be archived.")
                    target = self._target(row, dest)
                    code = self._project_code(row["project"])
                except ClientError as exc:
                    raise ClientError("unable to archive for the Prearchive session") from exc
                override, merge = _overwrite_flags(overwrite)
                flags = _Flags(override, merge, overwrite_files or override or code == 5)
            try:
                out.append(self._archive_session(int(row["n"]), target, flags, user))
            except (ClientError, ServerError) as exc:
                raise ClientError("unable to archive for the Prearchive session") from exc
        self._commit()
        return out

    # ------------------------------------------------------------------ Direct-Archive (§3.5, §4.1)

    def _find_da(self, project: str, uid: str, label: str) -> sqlite3.Row | None:
        return self._q1(
            "SELECT * FROM sessions WHERE kind='da' AND project=? AND tag=? AND name=? "
            "ORDER BY n DESC",
            (project, uid, label),
        )

    def direct_archive_status(self, project: str, uid: str, label: str) -> dict[str, str] | None:
        """``GET /xapi/direct-archive/P/UID/label``: the DA row (SessionData fields) or ``None``."""
        with self._lock:
            row = self._find_da(project, uid, label)
            if row is None:
                return None
            d = self._prearc_dict(row)
            d["url"] = f"/xapi/direct-archive/{project}/{uid}/{label}"
            d["id"] = str(row["n"])
            return d

    def direct_archive_trigger(self, project: str, uid: str, label: str) -> str:
        """``POST /xapi/direct-archive/P/UID/label``: archive a DA session now.

        Returns the archive URI. A failure moves the data to the prearchive and raises.

        Raises
        ------
        ClientError
            404 unknown session; 400 while files are still being received; archive conflicts.
        """
        with self._lock:
            row = self._find_da(project, uid, label)
            if row is None:
                raise ClientError(f"No direct-archive session {project}/{uid}/{label}", 404)
            if self._active.get(int(row["n"])):
                raise ClientError(
                    f"Direct-archive session {label} is still receiving files; try again later."
                )
            if row["status"] != RECEIVING:
                raise ClientError(f"Direct-archive session {label} is {row['status']}.", 409)
        return self._archive_da(row)

    def _archive_da(self, row: sqlite3.Row) -> str:
        target = _Target(row["project"], row["subject"] or row["name"], row["name"])
        try:
            return self._archive_session(
                int(row["n"]), target, _Flags(False, False, False), "admin"
            )
        except (ClientError, ServerError) as exc:
            # 423: another archive of this session is running; 404: it is gone already.
            if exc.status not in (404, 423):
                self._da_to_prearchive(int(row["n"]))
            raise

    def _da_to_prearchive(self, sn: int) -> None:
        """moveToPrearchive: a failed DA session becomes a prearchive session (§3.5)."""
        with self._lock:
            row = self._q1("SELECT * FROM sessions WHERE n=?", (sn,))
            if row is None:
                return
            ts = self._new_timestamp()
            d = f"prearchive/{row['project']}/{ts}/{row['name']}"
            files = self._q("SELECT scan, name FROM session_files WHERE session_n=?", (sn,))
            status = row["status"] if row["status"] in (CONFLICT, ERROR) else ERROR
            for f in files:
                src = self._safe_path(row["dir"], "SCANS", f["scan"], "DICOM", f["name"])
                dst = self._safe_path(d, "SCANS", f["scan"], "DICOM", f["name"])
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(src, dst)
                except FileNotFoundError:
                    log.warning("direct-archive file missing: %s", src)
            self._db.execute(
                "UPDATE sessions SET kind='prearc', timestamp=?, dir=?, status=?, built=1 "
                "WHERE n=?",
                (ts, d, status, sn),
            )
            src_dir = self._safe_path(row["dir"])
            if self._find_experiment(row["project"], row["name"]) is None:
                shutil.rmtree(src_dir, ignore_errors=True)
            self._commit()

    # ------------------------------------------------------------------ background (§3.5, §10)

    def tick(self) -> None:
        """One pass of the background tasks (SessionXMLRebuilder and the DA trigger).

        Idle RECEIVING prearchive rows (not prevent_auto_commit, SOURCE != uploader, no file
        being written) are built (READY) and archived if they auto-archive; idle RECEIVING
        Direct-Archive rows are archived, and fall back to the prearchive on failure.
        """
        now = time.time()
        to_archive: list[tuple[int, _Target, _Flags]] = []
        da_rows: list[sqlite3.Row] = []
        with self._lock:
            if self._closed:
                return
            rows = self._q(
                "SELECT * FROM sessions WHERE status=? AND lastmod<=?",
                (RECEIVING, now - self.idle_interval),
            )
            for row in rows:
                if self._active.get(int(row["n"])):
                    continue
                if self._drop_if_empty(int(row["n"])):
                    continue  # no file was ever written: there is nothing to build
                if row["kind"] == "da":
                    da_rows.append(row)
                    continue
                if row["prevent_auto_commit"] or row["source"] == "uploader":
                    continue
                aa = row["autoarchive"]
                code = self._project_code(row["project"]) if row["project"] else None
                if aa is None:
                    aa = code
                self._db.execute(
                    "UPDATE sessions SET status=?, autoarchive=?, built=1 WHERE n=?",
                    (READY, aa, row["n"]),
                )
                if row["project"] and (aa in (4, 5) or (code is not None and code >= 4)):
                    flags = _Flags(False, aa not in (None, 0), code == 5)
                    to_archive.append((int(row["n"]), self._target(row, None), flags))
            self._commit()
        for sn, target, flags in to_archive:
            try:
                self._archive_session(sn, target, flags, "admin")
            except (ClientError, ServerError) as exc:
                log.info("auto-archive of session %s failed: %s", sn, exc.message)
        for row in da_rows:
            try:
                self._archive_da(row)
            except (ClientError, ServerError) as exc:
                log.info("direct-archive of %s failed: %s", row["name"], exc.message)

    # ------------------------------------------------------------------ resources (§7)

    def _resolve_for_resource(
        self, project: str, subject: str, label: str, scan: str | None
    ) -> sqlite3.Row:
        with self._lock:
            self._require_project(project)
            if self._find_subject(project, subject) is None:
                raise ClientError("Unable to identify subject", 404)
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                raise ClientError("Unable to identify image session", 404)
            if (
                scan is not None
                and self._q1(
                    "SELECT 1 FROM scans WHERE experiment_id=? AND scan_id=?", (exp["id"], scan)
                )
                is None
            ):
                raise ClientError("Unable to identify scan", 404)
            return exp

    @staticmethod
    def _check_rel_path(path: str) -> str:
        """Refuse absolute paths, ``..``, empty and drive-like components; return a clean path."""
        path = path.replace("\\", "/")
        if path.startswith("/"):
            raise ClientError(f"Invalid file path: {path}")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." or ":" in p or "\x00" in p for p in parts):
            raise ClientError(f"Invalid file path: {path}")
        return "/".join(parts)

    def put_resource_file(
        self,
        project: str,
        subject: str,
        label: str,
        scan: str | None,
        resource: str,
        path: str,
        stream: BinaryIO,
        *,
        overwrite: bool,
        extract: bool,
        fmt: str = "",
        content: str = "",
    ) -> list[str]:
        """Store a file (or an archive's entries with ``extract``) in a resource (§7).

        Returns
        -------
        list of str
            Paths that already existed and were kept because ``overwrite`` is false (the
            ``duplicates`` reply); empty when nothing was skipped.

        Raises
        ------
        ClientError
            404 "Unable to identify project / subject / image session"; 400 for unsafe
            paths or archive entries (absolute, ``..``, links).
        """
        exp = self._resolve_for_resource(project, subject, label, scan)
        scan_id = scan or ""
        if not resource or "/" in resource or resource in (".", ".."):
            raise ClientError(f"Invalid resource label: {resource}")
        rel = self._check_rel_path(path)
        with self._lock:
            rn = self._get_resource(exp["id"], scan_id, resource, fmt, content)
            self._commit()
        base = self._resource_dir(exp, scan_id, resource)
        duplicates: list[str] = []
        if extract and _archive_kind(rel) is not None:
            for name, member in _archive_members(rel, stream, self._safe_path("tmp")):
                self._store_resource_member(
                    rn, base, self._check_rel_path(name), member, overwrite, duplicates
                )
        else:
            self._store_resource_member(rn, base, rel, stream, overwrite, duplicates)
        self._commit()
        return duplicates

    def _store_resource_member(
        self,
        rn: int,
        base: str,
        rel: str,
        stream: BinaryIO,
        overwrite: bool,
        duplicates: list[str],
    ) -> None:
        with self._lock:
            exists = self._q1("SELECT 1 FROM files WHERE resource_n=? AND path=?", (rn, rel))
        if exists is not None and not overwrite:
            duplicates.append(rel)
            return
        final = self._safe_path(base, *rel.split("/"))
        try:
            size, md5 = self._write_file(final, b"", stream)
        except OSError as exc:
            raise ServerError(f"Unable to store {rel}: {exc}") from exc
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)", (rn, rel, size, md5, "", "")
            )

    def delete_file(
        self,
        project: str,
        subject: str,
        label: str,
        scan: str | None,
        name: str,
        *,
        resource: str = "DICOM",
    ) -> None:
        """Delete one stored file of an archived session: its catalog entry and its bytes.

        ``DELETE …/experiments/E/scans/{scan}/resources/{resource}/files/{name}`` (``scan``
        None for a session resource). Tests use it to simulate a file lost on the server.

        Parameters
        ----------
        project, subject, label
            The session (subject and session by label or accession ID).
        scan
            Scan ID, or None for a session-level resource.
        name
            The file's path inside the resource, as the ``Name``/URI of the file listing.
        resource
            Resource label or ID.

        Raises
        ------
        ClientError
            404 "Unable to identify project / subject / image session / scan", or "Unable to
            find file." when the resource holds no such file.
        """
        exp = self._resolve_for_resource(project, subject, label, scan)
        scan_id = scan or ""
        with self._lock:
            row = self._q1(
                "SELECT r.n, r.label FROM resources r JOIN files f ON f.resource_n=r.n "
                "WHERE r.experiment_id=? AND r.scan_id=? AND (r.label=? OR CAST(r.n AS TEXT)=?) "
                "AND f.path=?",
                (exp["id"], scan_id, resource, resource, name),
            )
            if row is None:
                raise ClientError("Unable to find file.", 404)
            path = self._safe_path(self._resource_dir(exp, scan_id, row["label"]), *name.split("/"))
            self._db.execute("DELETE FROM files WHERE resource_n=? AND path=?", (row["n"], name))
            self._commit()
            path.unlink(missing_ok=True)

    def resource_files(
        self, project: str, subject: str, label: str, scan: str | None, resource: str
    ) -> list[dict[str, str]] | None:
        """Files of one resource (same columns as :meth:`scan_files`), ``None`` if missing."""
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            scan_id = scan or ""
            rows = self._q(
                "SELECT r.n, r.label, r.format, r.content, f.path, f.size, f.md5 FROM resources r "
                "JOIN files f ON f.resource_n=r.n WHERE r.experiment_id=? AND r.scan_id=? "
                "AND (r.label=? OR CAST(r.n AS TEXT)=?) ORDER BY f.path",
                (exp["id"], scan_id, resource, resource),
            )
            if not rows and (
                self._q1(
                    "SELECT 1 FROM resources WHERE experiment_id=? AND scan_id=? "
                    "AND (label=? OR CAST(n AS TEXT)=?)",
                    (exp["id"], scan_id, resource, resource),
                )
                is None
            ):
                return None
        return [self._file_row(exp, scan_id, r) for r in rows]

    def resource_file_path(
        self, project: str, subject: str, label: str, scan: str | None, resource: str, path: str
    ) -> Path | None:
        """Where a stored resource file is on disk (resource by label or ID), or ``None``."""
        with self._lock:
            exp = self._resolve_experiment(project, subject, label)
            if exp is None:
                return None
            scan_id = scan or ""
            r = self._q1(
                "SELECT r.label FROM resources r JOIN files f ON f.resource_n=r.n "
                "WHERE r.experiment_id=? AND r.scan_id=? AND (r.label=? OR CAST(r.n AS TEXT)=?) "
                "AND f.path=?",
                (exp["id"], scan_id, resource, resource, path),
            )
            if r is None:
                return None
            return self._safe_path(self._resource_dir(exp, scan_id, r["label"]), *path.split("/"))


def _scan_sort_key(scan: str) -> tuple[int, int, str]:
    return (0, int(scan), "") if scan.isdigit() else (1, 0, scan)


def _archive_kind(name: str) -> str | None:
    """Archive format from a (case-sensitive) file name, as XNAT's Format does (§3.2)."""
    if name.endswith((".tar.gz", ".tgz")):
        return "tgz"
    if name.endswith((".tar", ".xar")):
        return "tar"
    if name.endswith((".zip", ".zar")):
        return "zip"
    if name.endswith(".gz"):
        return "gz"
    return None


def _archive_members(name: str, stream: BinaryIO, tmp_dir: Path) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (entry name, stream) for the regular files of an archive; refuse links."""
    kind = _archive_kind(name)
    if kind == "gz":
        import gzip

        with gzip.GzipFile(fileobj=stream, mode="rb") as gz:
            yield name.rsplit("/", 1)[-1][: -len(".gz")] or "file", gz  # type: ignore[misc]
        return
    if kind in ("tar", "tgz"):
        try:
            with tarfile.open(fileobj=stream, mode="r|gz" if kind == "tgz" else "r|") as tf:
                for m in tf:
                    if m.isdir():
                        continue
                    if not m.isfile():
                        raise ClientError(f"Refusing archive entry {m.name}: not a regular file")
                    f = tf.extractfile(m)
                    if f is not None:
                        yield m.name, f  # type: ignore[misc]
        except tarfile.TarError as exc:
            raise ClientError("unable to read data from file") from exc
        return
    # Zip needs random access: spool the body to a temporary file inside the data folder.
    spool = tmp_dir / f"upload-{uuid.uuid4().hex}.zip"
    try:
        with open(spool, "wb") as out:
            shutil.copyfileobj(stream, out, _COPY_BUFFER)
        try:
            zf = zipfile.ZipFile(spool)
        except zipfile.BadZipFile as exc:
            raise ClientError("unable to read data from file") from exc
        with zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                mode = (info.external_attr >> 16) & 0o170000
                if mode not in (0, 0o100000):
                    raise ClientError(f"Refusing archive entry {info.filename}: not a regular file")
                with zf.open(info) as f:
                    yield info.filename, f  # type: ignore[misc]
    finally:
        spool.unlink(missing_ok=True)
