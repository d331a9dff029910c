"""The prearchive's sessions: finding or opening the row a file belongs to, statuses, and the
prearchive listings (docs/xnat-behaviour.md §3.4 step 6, §4.2).

A row of the ``sessions`` table is a prearchive session (kind ``prearc``) or a Direct-Archive
session (kind ``da``); both are keyed by project, study UID (``tag``) and session label
(``name``), and both keep their files in ``session_files`` until they are archived.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from xnatio.sandbox.dicom_header import DicomHeader
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import prearchive_dir
from xnatio.sandbox.store.model import (
    AA_NAMES,
    AUTO_ARCHIVE,
    MANUAL,
    UNASSIGNED,
    ClientError,
    ImportParams,
    Status,
    fmt_date,
    fmt_time,
    now_str,
    scan_sort_key,
    scan_xsi,
)

__all__ = ["Prearchive"]


@dataclass(eq=False, repr=False)
class Prearchive(Part):
    """Prearchive rows: get-or-create for each imported file, and every prearchive listing.

    Attributes
    ----------
    catalog
        The projects' prearchive codes, for a new row's auto-archive setting.
    lastmod_step
        Seconds between two updates of a receiving session's last-modified time (§3.4 step 7).
    """

    catalog: Catalog
    lastmod_step: float = field(kw_only=True)
    _last_ts: str = field(init=False, default="")

    # -- rows for incoming files ---------------------------------------------------------------

    def new_timestamp(self) -> str:
        """A new prearchive timestamp, ``yyyyMMdd_HHmmssSSS``, later than every earlier one.

        Bumped by a millisecond when two sessions start in the same one.
        """
        with self._index.lock:
            t = time.time()
            while True:
                dt = datetime.fromtimestamp(t)
                ts = dt.strftime("%Y%m%d_%H%M%S") + f"{dt.microsecond // 1000:03d}"
                if ts > self._last_ts:
                    self._last_ts = ts
                    return ts
                t += 0.001

    def get_or_create(
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
        rows = self._index.rows(
            "SELECT * FROM sessions WHERE kind='prearc' AND project=? AND tag=? AND name=? "
            "ORDER BY n DESC",
            (pk, hdr.study_instance_uid, label),
        )
        for row in rows:
            status = row["status"]
            if status in (Status.RECEIVING, Status.RECEIVING_INTERRUPT):
                self.touch(row)
                return row
            if status in Status.BUILDING_STATES:
                self.touch(row, Status.RECEIVING_INTERRUPT)
                return row
            if status in Status.INTERRUPTIBLE:
                self.touch(row, Status.RECEIVING)
                return row
        # No reusable row (none, or only ARCHIVING/MOVING/...): a new one with a new timestamp.
        if dicom_aa is not None:
            aa: int | None = AUTO_ARCHIVE if dicom_aa else MANUAL
        else:
            aa = self.catalog.project_code(project) if project else None
        ts = self.new_timestamp()
        d = prearchive_dir(pk, ts, label)
        return self.insert("prearc", pk, ts, label, hdr, subject, params, aa, d)

    def touch(self, row: sqlite3.Row, status: str | None = None) -> None:
        """Set a status (and the last-modified time), or only refresh the last-modified time
        when it is older than the step; caller holds the lock."""
        now = time.time()
        if status is not None:
            self._index.execute(
                "UPDATE sessions SET status=?, lastmod=? WHERE n=?", (status, now, row["n"])
            )
        elif now - float(row["lastmod"]) >= self.lastmod_step:
            self._index.execute("UPDATE sessions SET lastmod=? WHERE n=?", (now, row["n"]))

    def insert(
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
        """Insert a RECEIVING ``sessions`` row of ``kind`` (``prearc`` or ``da``) with folder
        ``d``; caller holds the lock."""
        now = time.time()
        cur = self._index.execute(
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
                Status.RECEIVING,
                subject,
                now,
                now,
                aa,
                int(params.prevent_anon),
                int(params.prevent_auto_commit),
                params.source or "",
                params.visit or "",
                params.subtype or "",
                fmt_date(hdr.study_date),
                fmt_time(hdr.study_time),
                d,
            ),
        )
        assert cur.lastrowid is not None
        row = self._index.session(cur.lastrowid)
        assert row is not None
        return row

    def drop_if_empty(self, sn: int) -> bool:
        """Forget session ``sn`` and its empty folders if it holds no file and nothing is
        being written to it or archived from it; caller holds the lock. True if dropped."""
        if self._inflight.writing(sn) or self._inflight.archiving(sn):
            return False
        index = self._index
        if index.row("SELECT 1 FROM session_files WHERE session_n=? LIMIT 1", (sn,)) is not None:
            return False
        row = index.row("SELECT kind, dir FROM sessions WHERE n=?", (sn,))
        if row is None:
            return False
        index.execute("DELETE FROM sessions WHERE n=?", (sn,))
        try:
            top = self._files.path(str(row["dir"]))
        except ClientError:
            return True
        self._files.remove_empty_folders(top)
        if row["kind"] != "da":
            self._files.prune(top.parent)  # the timestamp folder, if nothing else is in it
        return True

    # -- finding rows --------------------------------------------------------------------------

    @staticmethod
    def uri(row: sqlite3.Row) -> str:
        """``/prearchive/projects/P/TS/FOLDER`` of a row (``Unassigned`` for no project)."""
        project = row["project"] or UNASSIGNED
        return f"/prearchive/projects/{project}/{row['timestamp']}/{row['folder']}"

    def find(self, project: str, timestamp: str, folder: str) -> sqlite3.Row | None:
        """The prearchive row at ``project/timestamp/folder``; caller holds the lock."""
        pk = "" if project == UNASSIGNED else project
        return self._index.row(
            "SELECT * FROM sessions WHERE kind='prearc' AND project=? AND timestamp=? AND folder=?",
            (pk, timestamp, folder),
        )

    def find_or_404(self, project: str, timestamp: str, folder: str) -> sqlite3.Row:
        """Like :meth:`find`; ClientError 404 "Unable to find prearchive session …" if none."""
        row = self.find(project, timestamp, folder)
        if row is None:
            raise ClientError(
                f"Unable to find prearchive session {project}/{timestamp}/{folder}", 404
            )
        return row

    # -- listings (§4.2) -----------------------------------------------------------------------

    def as_dict(self, row: sqlite3.Row) -> dict[str, str]:
        """A ``sessions`` row in the columns of XNAT's prearchive listing."""
        aa = row["autoarchive"]
        return {
            "project": row["project"] or UNASSIGNED,
            "timestamp": row["timestamp"],
            "lastmod": now_str(row["lastmod"]),
            "uploaded": now_str(row["uploaded"]),
            "scan_date": row["scan_date"],
            "scan_time": row["scan_time"],
            "subject": row["subject"],
            "folderName": row["folder"],
            "name": row["name"],
            "tag": row["tag"],
            "status": row["status"],
            "url": self.uri(row),
            "autoarchive": AA_NAMES.get(aa, "") if aa is not None else "",
            "prevent_anon": "true" if row["prevent_anon"] else "false",
            "prevent_auto_commit": "true" if row["prevent_auto_commit"] else "false",
            "SOURCE": row["source"],
            "VISIT": row["visit"],
            "PROTOCOL": row["protocol"],
            "TIMEZONE": "",
        }

    def rows(self, project: str | None) -> list[dict[str, str]]:
        """``/data/prearchive/projects/P`` rows (§4.2); ``None`` lists every project.

        ``project`` may be a comma list; ``Unassigned`` names the rows without a project.
        """
        with self._index.lock:
            if project is None:
                rows = self._index.rows("SELECT * FROM sessions WHERE kind='prearc' ORDER BY n")
            else:
                keys = ["" if p == UNASSIGNED else p for p in project.split(",")]
                marks = ",".join("?" * len(keys))
                rows = self._index.rows(
                    f"SELECT * FROM sessions WHERE kind='prearc' AND project IN ({marks}) "  # noqa: S608
                    "ORDER BY n",
                    tuple(keys),
                )
            return [self.as_dict(r) for r in rows]

    def session(self, project: str, timestamp: str, folder: str) -> dict[str, str] | None:
        """One prearchive row as in :meth:`rows`, or ``None``."""
        with self._index.lock:
            row = self.find(project, timestamp, folder)
            return None if row is None else self.as_dict(row)

    def files(self, project: str, timestamp: str, folder: str) -> list[dict[str, str]]:
        """Files of a prearchive session: name, scan, size, sop_instance_uid, md5."""
        with self._index.lock:
            row = self.find(project, timestamp, folder)
            if row is None:
                return []
            rows = self._index.rows(
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

    def scans(self, project: str, timestamp: str, folder: str) -> list[dict[str, str]]:
        """``GET /data/prearchive/projects/P/TS/FOLDER/scans`` rows: ID, xsiType,
        series_description (XNAT's PrearcScansListResource columns), in scan order.

        Raises
        ------
        ClientError
            404 "Unable to locate prearc resource." when the session is unknown or not built.
        """
        with self._index.lock:
            row = self._built(project, timestamp, folder)
            rows = self._index.rows(
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
                    "xsiType": scan_xsi(r["modality"]),
                    "series_description": r["series_description"],
                },
            )
        return [scans[k] for k in sorted(scans, key=scan_sort_key)]

    def scan_resources(
        self, project: str, timestamp: str, folder: str, scan: str
    ) -> list[dict[str, str]]:
        """``…/scans/{id}/resources`` rows: label, file_count, file_size (PrearcScanResourceList).

        Raises ClientError 404 for an unknown or unbuilt session, or an unknown scan.
        """
        with self._index.lock:
            _, files = self._scan_files(project, timestamp, folder, scan)
        size = sum(int(f["size"]) for f in files)
        return [{"label": "DICOM", "file_count": str(len(files)), "file_size": str(size)}]

    def scan_files(
        self, project: str, timestamp: str, folder: str, scan: str, resource: str
    ) -> list[dict[str, str]]:
        """``…/scans/{id}/resources/{label}/files`` rows: Name, Size, and the path of the file
        inside the resource as ``path`` (the HTTP layer makes XNAT's URI column from it).

        Raises ClientError 404 for an unknown or unbuilt session, scan or resource label.
        """
        with self._index.lock:
            _, files = self._scan_files(project, timestamp, folder, scan)
        if resource != "DICOM":
            raise ClientError("Unable to identify resource", 404)
        return [{"Name": f["name"], "Size": str(f["size"]), "path": f["name"]} for f in files]

    def file_path(
        self, project: str, timestamp: str, folder: str, scan: str, resource: str, name: str
    ) -> Path | None:
        """Where one file of a prearchive scan resource is on disk, or ``None`` if it is not
        listed there. Raises ClientError 404 like :meth:`scan_files`."""
        with self._index.lock:
            row, files = self._scan_files(project, timestamp, folder, scan)
            if resource != "DICOM" or name not in {f["name"] for f in files}:
                return None
            return self._files.path(row["dir"], "SCANS", scan, "DICOM", name)

    def _built(self, project: str, timestamp: str, folder: str) -> sqlite3.Row:
        """The row of a prearchive session whose session document exists (built at least once).

        XNAT's prearchive scan listings read ``<folder>.xml``, which the build writes; before
        the first build they answer 404 "Unable to locate prearc resource.".
        """
        row = self.find(project, timestamp, folder)
        if row is None or not row["built"]:
            raise ClientError("Unable to locate prearc resource.", 404)
        return row

    def _scan_files(
        self, project: str, timestamp: str, folder: str, scan: str
    ) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
        row = self._built(project, timestamp, folder)
        files = self._index.rows(
            "SELECT * FROM session_files WHERE session_n=? AND scan=? ORDER BY name",
            (row["n"], scan),
        )
        if not files:
            raise ClientError("Unable to identify scan", 404)
        return row, files
