"""Archiving: moving a prearchive or Direct-Archive session into the archive, with XNAT's
conflict and overwrite rules (docs/xnat-behaviour.md §3.8).

One archive step at a time per session and per destination (423 otherwise). The checks run
under the index lock after every file still being written into the session has landed; the
files are then moved without the lock, and the catalog is updated in one transaction.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import archive_dir
from xnatio.sandbox.store.model import (
    ArchiveFlags,
    ClientError,
    ServerError,
    Status,
    Target,
    scan_sort_key,
    scan_xsi,
    session_xsi,
)

__all__ = ["Archiver", "parse_dest"]

log = logging.getLogger(__name__)

# (scan folder, archived scan ID): where each scan of the session goes.
ScanPlan = dict[str, str]


def parse_dest(dest: str | None) -> tuple[str | None, str | None, str | None]:
    """Split ``/archive/projects/P[/subjects/S[/experiments/E]]`` into its parts; a bare
    ``/archive`` names nothing (XNAT parses it as an empty archive URI).

    Raises
    ------
    ClientError
        "Parameter dest format error" for anything else.
    """
    if not dest:
        return None, None, None
    parts = [p for p in dest.split("/") if p]
    if parts[:1] == ["data"] or parts[:1] == ["REST"]:
        parts = parts[1:]
    if parts[:1] == ["archive"]:
        parts = parts[1:]
        if not parts:
            return None, None, None
    if len(parts) < 2 or parts[0] != "projects" or len(parts) % 2:
        raise ClientError("Parameter dest format error")
    pairs = dict(zip(parts[::2], parts[1::2], strict=True))
    if not set(pairs) <= {"projects", "subjects", "experiments"}:
        raise ClientError("Parameter dest format error")
    return pairs.get("projects"), pairs.get("subjects"), pairs.get("experiments")


@dataclass(eq=False, repr=False)
class Archiver(Part):
    """Archives sessions of the ``sessions`` table into the catalog.

    Attributes
    ----------
    catalog
        The archive's rows: the checks read them, the merge writes them.
    """

    catalog: Catalog

    def target(self, row: sqlite3.Row, dest: str | None) -> Target:
        """Where session ``row`` goes: ``dest`` where it says, the row's own names otherwise.

        An experiment in ``dest`` may be an accession ID; a subject found by ID or label is
        named by its label. The caller holds the lock.
        """
        project, subject, exp = parse_dest(dest)
        project = project or row["project"]
        label = row["name"]
        if exp:
            found = self.catalog.find_experiment(project, exp)
            label = found["label"] if found is not None else exp
        subject = subject or row["subject"] or label
        subj = self.catalog.find_subject(project, subject)
        if subj is not None:
            subject = subj["label"]
        return Target(project, subject, label)

    def archive(self, sn: int, target: Target, flags: ArchiveFlags, user: str) -> str:
        """Archive session row ``sn``; the 423/409 checks of §3.8, then the merge.

        On a 409-type failure the row becomes CONFLICT, on other failures ERROR (§3.5). Returns
        the archive URI.

        Raises
        ------
        ClientError
            423 while the session or the destination is being archived, 404 for a missing
            project or a session gone meanwhile, 409 for the §3.8 conflicts.
        ServerError
            When the files cannot be moved.
        """
        index = self._index
        tkey = (target.project, target.label)
        with index.lock:
            self._inflight.check_archive(sn, tkey)
            self.catalog.require_project(target.project)
            self._inflight.begin_archive(sn, tkey)
            index.execute("UPDATE sessions SET status=?, built=1 WHERE n=?", (Status.ARCHIVING, sn))
        try:
            row, files, plan = self._checked_plan(sn, target, flags)
            self._move_files(row, files, target, plan)
            with index.lock:
                self._catalog_files(row, files, target, plan, user)
                index.commit()
            if row["kind"] == "prearc":
                src = self._files.path(str(row["dir"]))
                shutil.rmtree(src, ignore_errors=True)
                self._files.prune(src.parent)
            return target.uri
        finally:
            with index.lock:
                self._inflight.end_archive(sn, tkey)

    def _checked_plan(
        self, sn: int, target: Target, flags: ArchiveFlags
    ) -> tuple[sqlite3.Row, list[sqlite3.Row], ScanPlan]:
        """Wait for the session's writes, then run the checks; a refusal marks the row."""
        index = self._index
        with index.lock:
            # Files still being written into this session finish first.
            self._inflight.wait_drained(sn)
            row = index.session(sn)
            if row is None:  # archived or moved meanwhile by another request
                raise ClientError("Unable to find the session to archive.", 404)
            files = index.rows("SELECT * FROM session_files WHERE session_n=?", (sn,))
            try:
                return row, files, self._plan(row, files, target, flags)
            except ClientError as exc:
                index.set_status(sn, Status.CONFLICT if exc.status == 409 else Status.ERROR)
                index.commit()
                raise

    def _move_files(
        self, row: sqlite3.Row, files: list[sqlite3.Row], target: Target, plan: ScanPlan
    ) -> None:
        src_dir = str(row["dir"])
        dst_dir = archive_dir(target.project, target.label)
        try:
            for f in files:
                src = self._files.path(src_dir, "SCANS", f["scan"], "DICOM", f["name"])
                dst = self._files.path(dst_dir, "SCANS", plan[f["scan"]], "DICOM", f["name"])
                if src != dst:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
        except OSError as exc:
            with self._index.lock:
                self._index.set_status(int(row["n"]), Status.ERROR)
                self._index.commit()
            raise ServerError(f"Unable to archive session: {exc}") from exc

    # -- the checks of §3.8 --------------------------------------------------------------------

    def _plan(
        self, row: sqlite3.Row, files: list[sqlite3.Row], t: Target, flags: ArchiveFlags
    ) -> ScanPlan:
        """Run the §3.8 checks; return the mapping from new scan folder to archived scan ID."""
        new_scans: dict[str, str] = {}
        modalities: list[str] = []
        for f in files:
            new_scans.setdefault(f["scan"], f["series_uid"])
            modalities.append(f["modality"])
        exp = self.catalog.find_experiment(t.project, t.label)
        plan = {s: s for s in new_scans}
        exp_dir = self._files.path(archive_dir(t.project, t.label))
        if exp is None:
            self._check_unfinished_tree(row, files, exp_dir, flags)
            return plan
        if not flags.merge:
            raise ClientError("Session already exists, retry with overwrite enabled", 409)
        self._check_merge(row, exp, t, flags, modalities)
        self._renumber_scans(exp, new_scans, plan, flags)
        if not flags.overwrite_files:
            self._check_same_files(exp, files, plan)
        return plan

    @staticmethod
    def _check_unfinished_tree(
        row: sqlite3.Row, files: list[sqlite3.Row], exp_dir: Path, flags: ArchiveFlags
    ) -> None:
        """A new session whose archive folder already holds files (an unfinished Direct-Archive
        session) is merged only as the flags allow."""
        if not exp_dir.exists() or row["kind"] == "da" or not any(exp_dir.iterdir()):
            return
        if not flags.merge:
            raise ClientError("Session already exists with matching files.", 409)
        if not flags.overwrite_files and any(
            (exp_dir / "SCANS" / f["scan"] / "DICOM" / f["name"]).exists() for f in files
        ):
            raise ClientError("Session already exists with matching files.", 409)

    def _check_merge(
        self,
        row: sqlite3.Row,
        exp: sqlite3.Row,
        t: Target,
        flags: ArchiveFlags,
        modalities: list[str],
    ) -> None:
        """Merging into an archived session keeps its subject, modality and (unless overridden)
        its study UID."""
        subj = self.catalog.find_subject(t.project, t.subject)
        if subj is None or subj["id"] != exp["subject_id"]:
            raise ClientError(
                "Invalid modification of session subject via archive process.: "
                f"{t.label} Already Exists for another Subject",
                409,
            )
        if exp["xsi_type"] != session_xsi(modalities):
            raise ClientError(
                "Invalid modification of session modality via archive process.  "
                "Data may require a manual merge.",
                409,
            )
        if not flags.override and exp["uid"] and exp["uid"] != row["tag"]:
            raise ClientError("Invalid modification of session UID via archive process.", 409)

    def _renumber_scans(
        self, exp: sqlite3.Row, new_scans: dict[str, str], plan: ScanPlan, flags: ArchiveFlags
    ) -> None:
        """A scan ID taken by another series gets a free ID; a series already archived under
        another ID is a conflict unless overridden."""
        old = {r["scan_id"]: r["uid"] for r in self.catalog.scan_rows(exp["id"])}
        used = set(old) | set(new_scans)
        for scan, uid in new_scans.items():
            if scan in old:
                if old[scan] != uid:
                    plan[scan] = _free_scan_id(scan, used)
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

    def _check_same_files(self, exp: sqlite3.Row, files: list[sqlite3.Row], plan: ScanPlan) -> None:
        """Without overwrite_files, no incoming DICOM file may replace an archived one."""
        existing = {
            (r["scan_id"], r["path"])
            for r in self._index.rows(
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

    # -- the catalog after the move ------------------------------------------------------------

    def _catalog_files(
        self,
        row: sqlite3.Row,
        files: list[sqlite3.Row],
        t: Target,
        plan: ScanPlan,
        user: str,
    ) -> None:
        """Record the moved files in the catalog and forget the session row; caller holds
        the lock."""
        eid = self._experiment_for(row, files, t, user)
        resources: dict[str, int] = {}
        for f in sorted(files, key=lambda f: (scan_sort_key(plan[f["scan"]]), f["name"])):
            scan_id = plan[f["scan"]]
            if scan_id not in resources:
                self._index.execute(
                    "INSERT OR IGNORE INTO scans(experiment_id,scan_id,uid,type,"
                    "series_description,modality,xsi_type) VALUES(?,?,?,?,?,?,?)",
                    (
                        eid,
                        scan_id,
                        f["series_uid"],
                        f["series_description"],
                        f["series_description"],
                        f["modality"],
                        scan_xsi(f["modality"]),
                    ),
                )
                resources[scan_id] = self.catalog.resource_n(eid, scan_id, "DICOM", "DICOM", "RAW")
            self._index.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)",
                (resources[scan_id], f["name"], f["size"], f["md5"], f["sop_uid"], f["sop_class"]),
            )
        self._index.execute("DELETE FROM session_files WHERE session_n=?", (row["n"],))
        self._index.execute("DELETE FROM sessions WHERE n=?", (row["n"],))

    def _experiment_for(
        self, row: sqlite3.Row, files: list[sqlite3.Row], t: Target, user: str
    ) -> str:
        """The accession ID of the destination experiment, created (with its subject) if new."""
        sid = self.catalog.subject_id(t.project, t.subject, user)
        exp = self.catalog.find_experiment(t.project, t.label)
        if exp is not None:
            eid = str(exp["id"])
            if not exp["uid"]:
                # A pre-created (empty) experiment takes the study's details on its first merge.
                self._index.execute(
                    "UPDATE experiments SET uid=?, date=?, time=? WHERE id=?",
                    (row["tag"], row["scan_date"], row["scan_time"], eid),
                )
            return eid
        modalities = [f["modality"] for f in files]
        mods = [m for m in modalities if m]
        modality = max(set(mods), key=mods.count) if mods else ""
        return self.catalog.insert_experiment(
            t.project,
            sid,
            t.label,
            session_xsi(modalities),
            row["tag"],
            row["scan_date"],
            row["scan_time"],
            modality,
            user,
        )


def _free_scan_id(scan: str, used: set[str]) -> str:
    """The next free scan ID: the next number for a numeric ID, ``<scan>_<i>`` otherwise."""
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
