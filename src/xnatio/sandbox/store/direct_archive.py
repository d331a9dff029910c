"""Direct-Archive sessions: received straight into the archive folder and archived when idle or
on request; a failed archive moves the session to the prearchive (docs/xnat-behaviour.md §3.4
step 6, §3.5, §4.1).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass

from xnatio.sandbox.dicom_header import DicomHeader
from xnatio.sandbox.store.archive import Archiver
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import archive_dir, prearchive_dir
from xnatio.sandbox.store.model import (
    ArchiveFlags,
    ClientError,
    ImportParams,
    Status,
    StoreError,
    Target,
)
from xnatio.sandbox.store.prearchive import Prearchive

__all__ = ["DirectArchive"]

log = logging.getLogger(__name__)


@dataclass(eq=False, repr=False)
class DirectArchive(Part):
    """The ``da`` rows of the ``sessions`` table.

    Attributes
    ----------
    catalog
        Whether the session exists in the archive already (then no Direct-Archive).
    prearchive
        The row helpers DA rows share with prearchive rows, and where a failed DA session goes.
    archiver
        Archives the session when it is idle or triggered.
    """

    catalog: Catalog
    prearchive: Prearchive
    archiver: Archiver

    @staticmethod
    def uri(row: sqlite3.Row) -> str:
        """``/xapi/direct-archive/P/UID/label`` of a row."""
        return f"/xapi/direct-archive/{row['project']}/{row['tag']}/{row['name']}"

    def get_or_create(
        self, project: str, hdr: DicomHeader, label: str, subject: str, params: ImportParams
    ) -> sqlite3.Row | None:
        """DirectArchiveSessionService.getOrCreate; ``None`` means fall back to the prearchive.

        The caller holds the lock.
        """
        row = self._find(project, hdr.study_instance_uid, label)
        if row is not None:
            if row["status"] != Status.RECEIVING:
                return None
            self.prearchive.touch(row)
            return row
        d = archive_dir(project, label)
        path = self._files.path(d)
        if path.exists() or self.catalog.find_experiment(project, label) is not None:
            return None
        path.mkdir(parents=True)
        ts = self.prearchive.new_timestamp()
        return self.prearchive.insert("da", project, ts, label, hdr, subject, params, None, d)

    def status(self, project: str, uid: str, label: str) -> dict[str, str] | None:
        """``GET /xapi/direct-archive/P/UID/label``: the DA row (SessionData fields) or ``None``."""
        with self._index.lock:
            row = self._find(project, uid, label)
            if row is None:
                return None
            d = self.prearchive.as_dict(row)
            d["url"] = f"/xapi/direct-archive/{project}/{uid}/{label}"
            d["id"] = str(row["n"])
            return d

    def trigger(self, project: str, uid: str, label: str) -> str:
        """``POST /xapi/direct-archive/P/UID/label``: archive a DA session now.

        Returns the archive URI. A failure moves the data to the prearchive and raises.

        Raises
        ------
        ClientError
            404 unknown session; 400 while files are still being received; archive conflicts.
        """
        with self._index.lock:
            row = self._find(project, uid, label)
            if row is None:
                raise ClientError(f"No direct-archive session {project}/{uid}/{label}", 404)
            if self._inflight.writing(int(row["n"])):
                raise ClientError(
                    f"Direct-archive session {label} is still receiving files; try again later."
                )
            if row["status"] != Status.RECEIVING:
                raise ClientError(f"Direct-archive session {label} is {row['status']}.", 409)
        return self.archive(row)

    def archive(self, row: sqlite3.Row) -> str:
        """Archive a DA session (no overwrite, no merge); on failure it goes to the prearchive."""
        target = Target(row["project"], row["subject"] or row["name"], row["name"])
        try:
            return self.archiver.archive(
                int(row["n"]), target, ArchiveFlags(False, False, False), "admin"
            )
        except StoreError as exc:
            # 423: another archive of this session is running; 404: it is gone already.
            if exc.status not in (404, 423):
                self._to_prearchive(int(row["n"]))
            raise

    def _find(self, project: str, uid: str, label: str) -> sqlite3.Row | None:
        return self._index.row(
            "SELECT * FROM sessions WHERE kind='da' AND project=? AND tag=? AND name=? "
            "ORDER BY n DESC",
            (project, uid, label),
        )

    def _to_prearchive(self, sn: int) -> None:
        """moveToPrearchive: a failed DA session becomes a prearchive session (§3.5)."""
        index = self._index
        with index.lock:
            row = index.session(sn)
            if row is None:
                return
            ts = self.prearchive.new_timestamp()
            d = prearchive_dir(row["project"], ts, row["name"])
            files = index.rows("SELECT scan, name FROM session_files WHERE session_n=?", (sn,))
            status = (
                row["status"] if row["status"] in (Status.CONFLICT, Status.ERROR) else Status.ERROR
            )
            for f in files:
                src = self._files.path(row["dir"], "SCANS", f["scan"], "DICOM", f["name"])
                dst = self._files.path(d, "SCANS", f["scan"], "DICOM", f["name"])
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(src, dst)
                except FileNotFoundError:
                    log.warning("direct-archive file missing: %s", src)
            index.execute(
                "UPDATE sessions SET kind='prearc', timestamp=?, dir=?, status=?, built=1 "
                "WHERE n=?",
                (ts, d, status, sn),
            )
            src_dir = self._files.path(row["dir"])
            if self.catalog.find_experiment(row["project"], row["name"]) is None:
                shutil.rmtree(src_dir, ignore_errors=True)
            index.commit()
