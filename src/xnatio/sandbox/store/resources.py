"""Files in resources of archived sessions and scans (docs/xnat-behaviour.md §7).

A resource is found by label or by its row number (XNAT's resource ID). Uploads may be archives
that are unpacked into the resource (``extract=true``); their entries must be regular files with
relative paths.
"""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from xnatio.sandbox.bodies import archive_format
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import COPY_BUFFER, resource_dir
from xnatio.sandbox.store.listings import ListedFile, file_row, listed_file
from xnatio.sandbox.store.model import ClientError, ServerError

__all__ = ["Resources"]

# A resource of a session or scan by label or ID (XNAT's resource ID, its row number).
_RESOURCE = (
    "SELECT * FROM resources WHERE experiment_id=? AND scan_id=? "
    "AND (label=? OR CAST(n AS TEXT)=?) ORDER BY label<>? LIMIT 1"
)
# A resource of a session or scan by label or ID, joined with one of its files.
_FILE_IN_RESOURCE = (
    "SELECT r.n, r.label FROM resources r JOIN files f ON f.resource_n=r.n "
    "WHERE r.experiment_id=? AND r.scan_id=? AND (r.label=? OR CAST(r.n AS TEXT)=?) "
    "AND f.path=?"
)


@dataclass(eq=False, repr=False)
class Resources(Part):
    """Resource files: store, list, find and delete.

    Attributes
    ----------
    catalog
        Finds the session and scan a resource belongs to, and its resource rows.
    """

    catalog: Catalog

    # put_file, create and the route in web/resources.py take a resource's location as the
    # URL gives it (project, subject, session label, scan, resource): the same parameters.
    def put_file(
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
        exp = self._resolve(project, subject, label, scan)
        scan_id = scan or ""
        _check_label(resource)
        rel = _check_rel_path(path)
        with self._index.lock:
            # An existing resource may be named by its ID (pyxnat does), a new one by its label.
            found = self._resource_row(exp, scan_id, resource)
            if found is not None:
                rn, resource = int(found["n"]), str(found["label"])
            else:
                rn = self.catalog.resource_n(exp["id"], scan_id, resource, fmt, content)
            self._index.commit()
        base = resource_dir(exp["project"], exp["label"], scan_id, resource)
        duplicates: list[str] = []
        if extract and _archive_kind(rel) is not None:
            for name, member in _archive_members(rel, stream, self._files.path("tmp")):
                self._store_member(rn, base, _check_rel_path(name), member, overwrite, duplicates)
        else:
            self._store_member(rn, base, rel, stream, overwrite, duplicates)
        self._index.commit()
        return duplicates

    def create(
        self,
        project: str,
        subject: str,
        label: str,
        scan: str | None,
        resource: str,
        *,
        fmt: str = "",
        content: str = "",
    ) -> None:
        """Create an empty resource (``PUT …/resources/{label}``, §7).

        Raises
        ------
        ClientError
            The 404s of a missing parent; 409 "Specified resource already exists." when the
            session or scan has a resource of that label or ID.
        """
        exp = self._resolve(project, subject, label, scan)
        _check_label(resource)
        with self._index.lock:
            scan_id = scan or ""
            if self._resource_row(exp, scan_id, resource):
                raise ClientError("Specified resource already exists.", 409)
            self.catalog.resource_n(exp["id"], scan_id, resource, fmt, content)
            self._index.commit()

    def delete(self, project: str, subject: str, label: str, scan: str | None, res: str) -> None:
        """Delete a resource with its files (``DELETE …/resources/{R}``).

        Raises
        ------
        ClientError
            The 404s of a missing parent; 404 "Unable to find the specified catalog." for a
            missing resource.
        """
        exp = self._resolve(project, subject, label, scan)
        scan_id = scan or ""
        with self._index.lock:
            found = self._resource_row(exp, scan_id, res)
            if found is None:
                raise ClientError("Unable to find the specified catalog.", 404)
            self._index.execute("DELETE FROM files WHERE resource_n=?", (found["n"],))
            self._index.execute("DELETE FROM resources WHERE n=?", (found["n"],))
            self._index.commit()
            folder = self._files.path(
                resource_dir(exp["project"], exp["label"], scan_id, found["label"])
            )
        shutil.rmtree(folder, ignore_errors=True)

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
        exp = self._resolve(project, subject, label, scan)
        scan_id = scan or ""
        with self._index.lock:
            row = self._resource_row(exp, scan_id, resource, name)
            if row is None:
                raise ClientError("Unable to find file.", 404)
            path = self._file_path(exp, scan_id, row["label"], name)
            self._index.execute("DELETE FROM files WHERE resource_n=? AND path=?", (row["n"], name))
            self._index.commit()
            path.unlink(missing_ok=True)

    def files(
        self, project: str, subject: str, label: str, scan: str | None, resource: str
    ) -> list[dict[str, str]] | None:
        """Files of one resource (same columns as a scan file listing), ``None`` if missing."""
        index = self._index
        with index.lock:
            exp = self.catalog.resolve_experiment(project, subject, label)
            if exp is None:
                return None
            scan_id = scan or ""
            rows = index.rows(
                "SELECT r.n, r.label, r.format, r.content, f.path, f.size, f.md5 FROM resources r "
                "JOIN files f ON f.resource_n=r.n WHERE r.experiment_id=? AND r.scan_id=? "
                "AND (r.label=? OR CAST(r.n AS TEXT)=?) ORDER BY f.path",
                (exp["id"], scan_id, resource, resource),
            )
            if not rows and (
                index.row(
                    "SELECT 1 FROM resources WHERE experiment_id=? AND scan_id=? "
                    "AND (label=? OR CAST(n AS TEXT)=?)",
                    (exp["id"], scan_id, resource, resource),
                )
                is None
            ):
                return None
        return [file_row(exp, scan_id, r) for r in rows]

    def file_sources(
        self, project: str, subject: str, label: str, scan: str | None, resource: str
    ) -> list[ListedFile] | None:
        """The files of :meth:`files` with where they are stored (for downloads)."""
        scan_id = scan or ""
        with self._index.lock:
            found = self._find(project, subject, label, scan_id, resource)
            if found is None:
                return None
            exp, res = found
            rows = self._index.rows(
                "SELECT r.n, r.label, r.format, r.content, f.path, f.size, f.md5 FROM resources r "
                "JOIN files f ON f.resource_n=r.n WHERE r.n=? ORDER BY f.path",
                (res["n"],),
            )
            scan_row = self._index.row(
                "SELECT type FROM scans WHERE experiment_id=? AND scan_id=?", (exp["id"], scan_id)
            )
        scan_type = str(scan_row["type"]) if scan_row is not None else ""
        return [listed_file(self._files, exp, scan_id, scan_type, r) for r in rows]

    def file_path(
        self, project: str, subject: str, label: str, scan: str | None, resource: str, path: str
    ) -> Path | None:
        """Where a stored resource file is on disk (resource by label or ID), or ``None``."""
        scan_id = scan or ""
        with self._index.lock:
            found = self._find(project, subject, label, scan_id, resource, path)
            if found is None:
                return None
            exp, res = found
            return self._file_path(exp, scan_id, res["label"], path)

    def _find(
        self,
        project: str,
        subject: str,
        label: str,
        scan_id: str,
        resource: str,
        path: str | None = None,
    ) -> tuple[sqlite3.Row, sqlite3.Row] | None:
        """The session and :meth:`_resource_row`, or ``None`` when either is missing."""
        exp = self.catalog.resolve_experiment(project, subject, label)
        if exp is None:
            return None
        found = self._resource_row(exp, scan_id, resource, path)
        return None if found is None else (exp, found)

    def _resource_row(
        self, exp: sqlite3.Row, scan_id: str, resource: str, path: str | None = None
    ) -> sqlite3.Row | None:
        """A resource of a session or scan by label or ID; with ``path``, one holding that file.

        The caller holds the index lock.
        """
        query, last = (_RESOURCE, resource) if path is None else (_FILE_IN_RESOURCE, path)
        return self._index.row(query, (exp["id"], scan_id, resource, resource, last))

    def _file_path(self, exp: sqlite3.Row, scan_id: str, resource: str, path: str) -> Path:
        base = resource_dir(exp["project"], exp["label"], scan_id, resource)
        return self._files.path(base, *path.split("/"))

    def _resolve(self, project: str, subject: str, label: str, scan: str | None) -> sqlite3.Row:
        """The experiment a resource belongs to, with XNAT's 404 for each missing level."""
        catalog = self.catalog
        with self._index.lock:
            catalog.require_project(project)
            if catalog.find_subject(project, subject) is None:
                raise ClientError("Unable to identify subject", 404)
            exp = catalog.resolve_experiment(project, subject, label)
            if exp is None:
                raise ClientError("Unable to identify image session", 404)
            if scan is not None and not catalog.has_scan(exp["id"], scan):
                raise ClientError("Unable to identify scan", 404)
            return exp

    def _store_member(
        self,
        rn: int,
        base: str,
        rel: str,
        stream: BinaryIO,
        overwrite: bool,
        duplicates: list[str],
    ) -> None:
        with self._index.lock:
            exists = self._index.row("SELECT 1 FROM files WHERE resource_n=? AND path=?", (rn, rel))
        if exists is not None and not overwrite:
            duplicates.append(rel)
            return
        final = self._files.path(base, *rel.split("/"))
        try:
            size, md5 = self._files.write(final, b"", stream)
        except OSError as exc:
            raise ServerError(f"Unable to store {rel}: {exc}") from exc
        with self._index.lock:
            self._index.execute(
                "INSERT OR REPLACE INTO files VALUES(?,?,?,?,?,?)", (rn, rel, size, md5, "", "")
            )


def _check_label(resource: str) -> None:
    """Refuse a resource label that is empty or would leave its folder."""
    if not resource or "/" in resource or resource in (".", ".."):
        raise ClientError(f"Invalid resource label: {resource}")


def _check_rel_path(path: str) -> str:
    """Refuse absolute paths, ``..``, empty and drive-like components; return a clean path."""
    path = path.replace("\\", "/")
    if path.startswith("/"):
        raise ClientError(f"Invalid file path: {path}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or ":" in p or "\x00" in p for p in parts):
        raise ClientError(f"Invalid file path: {path}")
    return "/".join(parts)


def _archive_kind(name: str) -> str | None:
    """Archive format from a (case-sensitive) file name, as XNAT's Format does (§3.2)."""
    fmt = archive_format(name)
    return None if fmt == "UNKNOWN" else fmt


def _archive_members(name: str, stream: BinaryIO, tmp_dir: Path) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (entry name, stream) for the regular files of an archive; refuse links."""
    kind = _archive_kind(name)
    if kind == "GZ":
        with gzip.GzipFile(fileobj=stream, mode="rb") as gz:
            yield name.rsplit("/", 1)[-1][: -len(".gz")] or "file", gz  # type: ignore[misc]
        return
    if kind in ("TAR", "TGZ"):
        yield from _tar_members(stream, kind)
        return
    # Zip needs random access: spool the body to a temporary file inside the data folder.
    spool = tmp_dir / f"upload-{uuid.uuid4().hex}.zip"
    try:
        with open(spool, "wb") as out:
            shutil.copyfileobj(stream, out, COPY_BUFFER)
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


def _tar_members(stream: BinaryIO, kind: str) -> Iterator[tuple[str, BinaryIO]]:
    try:
        with tarfile.open(fileobj=stream, mode="r|gz" if kind == "TGZ" else "r|") as tf:
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
