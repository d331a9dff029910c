"""Listings of archived sessions: scans, resources, files and the experiment document
(docs/xnat-behaviour.md §1.5, §4.2).

Every listing returns ``None`` when the session is not archived, so the HTTP layer can answer 404
with XNAT's message for the path it serves.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import DataFolder, resource_dir

__all__ = ["ArchiveListings", "ListedFile", "file_row", "listed_file"]

# A scan's (or, with scan_id '', the session's) resources with their file counts and sizes
# (CatalogResourceList plus counts).
_RESOURCES_OF_SCAN = (
    "SELECT r.n, r.label, r.format, r.content, count(f.path) AS cnt, "
    "coalesce(sum(f.size),0) AS sz FROM resources r LEFT JOIN files f "
    "ON f.resource_n=r.n WHERE r.experiment_id=? AND r.scan_id=? "
    "GROUP BY r.n ORDER BY r.n"
)


def file_row(exp: sqlite3.Row, scan_id: str, r: sqlite3.Row) -> dict[str, str]:
    """One row of a file listing, from a ``resources`` join ``files`` row ``r``.

    Columns: Name, Size, URI, collection, file_tags, file_format, file_content, cat_ID,
    digest (MD5 hex).
    """
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


@dataclass(frozen=True)
class ListedFile:
    """A file of a listing, with what a download needs: where its bytes are, and the names
    XNAT builds the entry's path from (docs/xnat-behaviour.md §14.5).

    Attributes
    ----------
    row
        The listing row (:func:`file_row`).
    source
        The stored file.
    session_label, scan_id, scan_type, resource
        The session's label, the scan's ID and type (``""`` for a session resource) and the
        resource's label.
    path
        The file's path inside its resource.
    """

    row: dict[str, str]
    source: Path
    session_label: str
    scan_id: str
    scan_type: str
    resource: str
    path: str


def listed_file(
    folder: DataFolder, exp: sqlite3.Row, scan_id: str, scan_type: str, r: sqlite3.Row
) -> ListedFile:
    """A :class:`ListedFile` from a ``resources`` join ``files`` row ``r`` of session ``exp``."""
    base = resource_dir(exp["project"], exp["label"], scan_id, r["label"])
    return ListedFile(
        row=file_row(exp, scan_id, r),
        source=folder.path(base, *r["path"].split("/")),
        session_label=exp["label"],
        scan_id=scan_id,
        scan_type=scan_type,
        resource=r["label"],
        path=r["path"],
    )


@dataclass(eq=False, repr=False)
class ArchiveListings(Part):
    """Read-only views of archived sessions.

    Attributes
    ----------
    catalog
        Finds a session by project, subject and label.
    """

    catalog: Catalog

    def scans(self, project: str, subject: str, label: str) -> list[dict[str, str]] | None:
        """``…/experiments/E/scans`` rows, or ``None`` if the experiment is not archived."""
        with self._index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None:
                return None
            return self._scan_dicts(exp["id"])

    def scan_resources(
        self, project: str, subject: str | None, label: str, scan: str | None
    ) -> list[dict[str, str]] | None:
        """``…/scans/{id}/resources`` rows (CatalogResourceList columns plus file counts), or
        ``None`` if the session or the scan is missing; ``scan`` ``None`` lists the session's
        own resources (``…/experiments/{E}/resources``)."""
        with self._index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None or (scan is not None and not self.catalog.has_scan(exp["id"], scan)):
                return None
            rows = self._index.rows(_RESOURCES_OF_SCAN, (exp["id"], scan or ""))
        return [
            {
                "xnat_abstractresource_id": str(r["n"]),
                "label": r["label"],
                "element_name": "xnat:resourceCatalog",
                "category": "scans" if scan is not None else "resources",
                "cat_id": scan if scan is not None else exp["id"],
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
        with self._index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None:
                return None
            scan_items = [self._scan_item(exp["id"], s) for s in self._scan_dicts(exp["id"])]
        data_fields = {
            "ID": exp["id"],
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

    def scan_files(
        self, project: str, subject: str, label: str, scans: str = "ALL"
    ) -> list[dict[str, str]] | None:
        """``…/scans/{ALL|*|a,b}/files`` rows (§4.2), ``None`` if the experiment is missing.

        Columns as :func:`file_row`.
        """
        found = self._scan_file_rows(project, subject, label, scans)
        if found is None:
            return None
        exp, rows = found
        return [file_row(exp, r["scan_id"], r) for r in rows]

    def scan_file_sources(
        self, project: str, subject: str, label: str, scans: str = "ALL"
    ) -> list[ListedFile] | None:
        """The files of :meth:`scan_files` with where they are stored (for downloads)."""
        found = self._scan_file_rows(project, subject, label, scans)
        if found is None:
            return None
        exp, rows = found
        return [listed_file(self._files, exp, r["scan_id"], r["type"], r) for r in rows]

    def _scan_file_rows(
        self, project: str, subject: str, label: str, scans: str
    ) -> tuple[sqlite3.Row, list[sqlite3.Row]] | None:
        with self._index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None:
                return None
            wanted = [] if scans in ("ALL", "*") else sorted(set(scans.split(",")))
            # Filter in SQL (the UNIQUE(experiment_id, scan_id, label) index serves it): a client
            # listing a 100,000-file session scan by scan must not pay for every file each time.
            only = f" AND r.scan_id IN ({','.join('?' * len(wanted))})" if wanted else ""
            rows = self._index.rows(
                "SELECT r.n, r.scan_id, r.label, r.format, r.content, f.path, f.size, f.md5, "  # noqa: S608 - only '?' placeholders are interpolated
                "s.type FROM resources r JOIN files f ON f.resource_n=r.n "
                "JOIN scans s ON s.experiment_id=r.experiment_id AND s.scan_id=r.scan_id "
                f"WHERE r.experiment_id=?{only} ORDER BY s.n, r.n, f.path",
                (exp["id"], *wanted),
            )
        return exp, rows

    def scan_file_uids(self, project: str, subject: str, label: str) -> dict[str, list[str]]:
        """SOP Instance UIDs stored per scan (from the index), for exact checks in tests."""
        with self._index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None:
                return {}
            rows = self._index.rows(
                "SELECT r.scan_id, f.sop_uid FROM resources r JOIN files f ON f.resource_n=r.n "
                "WHERE r.experiment_id=? AND r.label='DICOM' ORDER BY f.path",
                (exp["id"],),
            )
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r["scan_id"], []).append(r["sop_uid"])
        return out

    def _scan_dicts(self, eid: str) -> list[dict[str, str]]:
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
                "modality": r["modality"],
            }
            for r in self.catalog.scan_rows(eid)
        ]

    def _scan_item(self, eid: str, s: dict[str, str]) -> dict[str, Any]:
        """One scan of the experiment document, with its resources as children."""
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
            for r in self._index.rows(_RESOURCES_OF_SCAN, (eid, s["ID"]))
        ]
        return {
            "meta": {"xsi:type": s["xsiType"], "isHistory": False},
            "data_fields": {
                "ID": s["ID"],
                "UID": s["UID"],
                "type": s["type"],
                "series_description": s["series_description"],
                "modality": s["modality"],
                "quality": "usable",
                "image_session_ID": eid,
                "xnat_imagescandata_id": int(s["xnat_imagescandata_id"]),
            },
            "children": [{"field": "file", "items": files}] if files else [],
        }
