"""Projects, subjects and experiments: creating them and finding them (docs/xnat-behaviour.md §5).

The catalog is the archive's side of the index: ``projects``, ``subjects``, ``experiments``,
``scans``, ``resources`` and ``files``. It answers the project and subject listings (§4.2) and
gives every other part of the store one way to look a row up: subjects by accession ID or,
case-insensitively, by label; experiments by accession ID or label.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.model import AA_NAMES, UNASSIGNED, VALID_ID, ClientError, now_str

__all__ = ["Catalog"]


@dataclass(eq=False, repr=False)
class Catalog(Part):
    """The archive's rows in the index.

    Every public method takes the index lock, except ``create_subject``, ``insert_experiment``
    and ``resource_n``, which the parts that archive call with the lock held.
    """

    # -- projects ------------------------------------------------------------------------------

    def create_project(self, project_id: str, *, prearchive_code: int = 0) -> bool:
        """Create a project; return ``True`` if created, ``False`` if it existed.

        Raises
        ------
        ClientError
            417 "Invalid character in project ID." for IDs outside ``[A-Za-z0-9_-]``.
        """
        if not VALID_ID.match(project_id) or project_id == UNASSIGNED:
            raise ClientError("Invalid character in project ID.", 417)
        index = self._index
        with index.lock:
            if index.row("SELECT 1 FROM projects WHERE id=?", (project_id,)):
                return False
            index.execute(
                "INSERT INTO projects VALUES(?,?,?)", (project_id, prearchive_code, now_str())
            )
            index.commit()
            return True

    def project_exists(self, project_id: str) -> bool:
        """Whether a project with exactly this ID exists."""
        with self._index.lock:
            return self._index.row("SELECT 1 FROM projects WHERE id=?", (project_id,)) is not None

    def require_project(self, project: str) -> None:
        """Raise ClientError 404 "Unable to identify project" unless ``project`` exists."""
        if not self.project_exists(project):
            raise ClientError("Unable to identify project", 404)

    def set_prearchive_code(self, project_id: str, code: int) -> None:
        """Set the project's auto-archive code: 0 Manual, 4 AutoArchive, 5 AutoArchiveOverwrite."""
        if code not in AA_NAMES:
            raise ClientError(f"Invalid prearchive code: {code}")
        with self._index.lock:
            cur = self._index.execute(
                "UPDATE projects SET prearchive_code=? WHERE id=?", (code, project_id)
            )
            if cur.rowcount == 0:
                raise ClientError("Unable to identify project", 404)
            self._index.commit()

    def get_prearchive_code(self, project_id: str) -> int:
        """The project's prearchive code (404 ClientError if missing)."""
        code = self.project_code(project_id)
        if code is None:
            raise ClientError("Unable to identify project", 404)
        return code

    def project_code(self, project_id: str) -> int | None:
        """The project's prearchive code, or ``None`` if there is no such project."""
        with self._index.lock:
            row = self._index.row("SELECT prearchive_code FROM projects WHERE id=?", (project_id,))
            return None if row is None else int(row[0])

    def list_projects(self) -> list[dict[str, str]]:
        """``/data/projects`` rows: ID, secondary_ID, name, description, pi_*, URI."""
        with self._index.lock:
            rows = self._index.rows("SELECT id FROM projects ORDER BY id")
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

    # -- subjects ------------------------------------------------------------------------------

    def find_subject(self, project: str, subject: str) -> sqlite3.Row | None:
        """By accession ID, then label (case-insensitive, as XNAT matches subjects)."""
        index = self._index
        with index.lock:
            row = index.row("SELECT * FROM subjects WHERE project=? AND id=?", (project, subject))
            if row is None:
                row = index.row(
                    "SELECT * FROM subjects WHERE project=? AND lower(label)=lower(?) ORDER BY n",
                    (project, subject),
                )
            return row

    def create_subject(self, project: str, label: str, user: str) -> str:
        """Insert a subject and return its accession ID; the caller holds the lock."""
        cur = self._index.execute(
            "INSERT INTO subjects(project,label,insert_date,insert_user) VALUES(?,?,?,?)",
            (project, label, now_str(), user),
        )
        sid = f"XNAT_S{cur.lastrowid:05d}"
        self._index.execute("UPDATE subjects SET id=? WHERE n=?", (sid, cur.lastrowid))
        return sid

    def subject_id(self, project: str, label: str, user: str) -> str:
        """The accession ID of a subject, created if missing; the caller holds the lock."""
        subj = self.find_subject(project, label)
        return str(subj["id"]) if subj is not None else self.create_subject(project, label, user)

    def put_subject(self, project: str, label: str, *, user: str = "admin") -> tuple[str, bool]:
        """Create a subject if missing; return (accession ID, created).

        Raises
        ------
        ClientError
            404 if the project is missing, 417 for a label outside ``[A-Za-z0-9_-]``.
        """
        with self._index.lock:
            found = self._existing(project, label, self.find_subject, "subject")
            if found is not None:
                return found, False
            sid = self.create_subject(project, label, user)
            self._index.commit()
            return sid, True

    def subjects(self, project: str | None) -> list[dict[str, str]]:
        """``/data/projects/P/subjects`` rows (§4.2); every project's with ``project`` ``None``
        (``/data/subjects``)."""
        with self._index.lock:
            if project is None:
                rows = self._index.rows("SELECT * FROM subjects ORDER BY n")
            else:
                rows = self._index.rows(
                    "SELECT * FROM subjects WHERE project=? ORDER BY n", (project,)
                )
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

    def subject_project(self, subject_id: str) -> str | None:
        """The project of a subject accession ID (``/data/subjects/{ID}``), or ``None``."""
        with self._index.lock:
            row = self._index.row("SELECT project FROM subjects WHERE id=?", (subject_id,))
        return None if row is None else str(row[0])

    # -- experiments ---------------------------------------------------------------------------

    def find_experiment(self, project: str, experiment: str) -> sqlite3.Row | None:
        """By accession ID, then by label (exactly)."""
        index = self._index
        with index.lock:
            row = index.row(
                "SELECT * FROM experiments WHERE project=? AND id=?", (project, experiment)
            )
            if row is None:
                row = index.row(
                    "SELECT * FROM experiments WHERE project=? AND label=?", (project, experiment)
                )
            return row

    def resolve_experiment(
        self, project: str, subject: str | None, label: str
    ) -> sqlite3.Row | None:
        """The experiment named by a project, subject (ID or label) and label (ID or label)."""
        with self._index.lock:
            exp = self.find_experiment(project, label)
            if exp is None:
                return None
            if subject is not None:
                subj = self.find_subject(project, subject)
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
        with self._index.lock:
            found = self._existing(project, label, self.find_experiment, "experiment")
            if found is not None:
                return found, False
            if self.find_subject(project, subject) is None and not VALID_ID.match(subject):
                raise ClientError("Invalid character in subject label.", 417)
            sid = self.subject_id(project, subject, user)
            eid = self.insert_experiment(project, sid, label, xsi_type, "", "", "", "", user)
            self._index.commit()
            return eid, True

    def insert_experiment(
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
        """Insert an experiment and return its accession ID; the caller holds the lock."""
        cur = self._index.execute(
            "INSERT INTO experiments(project,subject_id,label,xsi_type,uid,date,time,modality,"
            "insert_date,insert_user) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (project, subject_id, label, xsi_type, uid, date, time_, modality, now_str(), user),
        )
        eid = f"XNAT_E{cur.lastrowid:05d}"
        self._index.execute("UPDATE experiments SET id=? WHERE n=?", (eid, cur.lastrowid))
        return eid

    def experiments(self, project: str | None, subject: str | None = None) -> list[dict[str, str]]:
        """``/data/projects/P[/subjects/S]/experiments`` rows (§4.2); every project's with
        ``project`` ``None`` (``/data/experiments``).

        Besides the default columns, each row holds ``time``, ``modality`` and ``insert_user``
        for ``columns=`` to choose (§14.6).
        """
        index = self._index
        with index.lock:
            if project is None:
                rows = index.rows("SELECT * FROM experiments ORDER BY n")
            elif subject is None:
                rows = index.rows(
                    "SELECT * FROM experiments WHERE project=? ORDER BY n", (project,)
                )
            else:
                subj = self.find_subject(project, subject)
                if subj is None:
                    return []
                rows = index.rows(
                    "SELECT * FROM experiments WHERE project=? AND subject_id=? ORDER BY n",
                    (project, subj["id"]),
                )
            labels = {
                r["id"]: r["label"]
                for r in index.rows(
                    "SELECT id,label FROM subjects WHERE project=? OR ? IS NULL", (project, project)
                )
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
                "time": r["time"],
                "modality": r["modality"],
                "insert_user": r["insert_user"],
            }
            for r in rows
        ]

    def experiment_ref(self, experiment_id: str) -> tuple[str, str, str] | None:
        """(project, subject ID, experiment ID) for an experiment accession ID, or ``None``.

        ``/data/experiments/{ID}`` takes accession IDs only (labels need a project).
        """
        with self._index.lock:
            row = self._index.row(
                "SELECT project, subject_id FROM experiments WHERE id=?", (experiment_id,)
            )
        return None if row is None else (str(row[0]), str(row[1]), experiment_id)

    def _existing(
        self, project: str, label: str, find: Callable[[str, str], sqlite3.Row | None], kind: str
    ) -> str | None:
        """For a PUT: the accession ID of the row ``find`` finds, or ``None`` when a new one may
        be created; 404 for a missing project, 417 for a label outside ``[A-Za-z0-9_-]``."""
        self.require_project(project)
        row = find(project, label)
        if row is not None:
            return str(row["id"])
        if not VALID_ID.match(label):
            raise ClientError(f"Invalid character in {kind} label.", 417)
        return None

    def type_counts(self) -> dict[str, int]:
        """How many projects, subjects and experiments of each XSI type the archive holds."""
        with self._index.lock:
            counts = {
                "xnat:projectData": int(self._index.rows("SELECT count(*) FROM projects")[0][0]),
                "xnat:subjectData": int(self._index.rows("SELECT count(*) FROM subjects")[0][0]),
            }
            for r in self._index.rows("SELECT xsi_type, count(*) FROM experiments GROUP BY 1"):
                counts[str(r[0])] = int(r[1])
        return counts

    # -- scans and resources -------------------------------------------------------------------

    def scan_rows(self, eid: str) -> list[sqlite3.Row]:
        """The scans of experiment ``eid`` in the order they were archived."""
        return self._index.rows("SELECT * FROM scans WHERE experiment_id=? ORDER BY n", (eid,))

    def has_scan(self, eid: str, scan: str) -> bool:
        """Whether experiment ``eid`` has a scan with this ID; the caller holds the lock."""
        found = self._index.row(
            "SELECT 1 FROM scans WHERE experiment_id=? AND scan_id=?", (eid, scan)
        )
        return found is not None

    def resource_n(self, eid: str, scan_id: str, label: str, fmt: str, content: str) -> int:
        """The row number of a resource, created if missing; the caller holds the lock.

        ``scan_id`` ``""`` names a session resource; ``fmt`` and ``content`` apply only to a
        new resource.
        """
        r = self._index.row(
            "SELECT n FROM resources WHERE experiment_id=? AND scan_id=? AND label=?",
            (eid, scan_id, label),
        )
        if r is not None:
            return int(r[0])
        cur = self._index.execute(
            "INSERT INTO resources(experiment_id,scan_id,label,format,content) VALUES(?,?,?,?,?)",
            (eid, scan_id, label, fmt, content),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid
