"""What clients do to a prearchive session: commit, build, reset, move, delete, and the two
other commit paths, ``/data/services/archive`` and the import service's own
(docs/xnat-behaviour.md §3.4, §3.9 item 3, §9).

Every action but a commit refuses a session that another operation holds: a status outside the
interruptible set, an archive step in progress, or (for move and delete) files still arriving.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import dataclass

from xnatio.sandbox.store.archive import Archiver
from xnatio.sandbox.store.catalog import Catalog
from xnatio.sandbox.store.core import Part
from xnatio.sandbox.store.files import prearchive_dir
from xnatio.sandbox.store.model import (
    ArchiveFlags,
    ClientError,
    ServerError,
    Status,
    StoreError,
    Target,
    auto_archives,
)
from xnatio.sandbox.store.prearchive import Prearchive

__all__ = ["PrearchiveActions", "parse_prearchive_uri"]

_UNASSIGNED_REFUSED = "Projects in the unassigned folder cannot be archived."


def parse_prearchive_uri(uri: str) -> tuple[str, str, str]:
    """(project, timestamp, folder) of ``[/data]/prearchive/projects/P/TS/FOLDER``.

    Raises
    ------
    ClientError
        "Invalid prearchive path: …" for anything else.
    """
    parts = [p for p in uri.split("/") if p]
    if parts[:1] in (["data"], ["REST"]):
        parts = parts[1:]
    if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
        raise ClientError(f"Invalid prearchive path: {uri}")
    return parts[2], parts[3], parts[4]


@dataclass(eq=False, repr=False)
class PrearchiveActions(Part):
    """Commit, build, reset-status, move and delete of prearchive sessions.

    Attributes
    ----------
    catalog
        Projects (existence, prearchive codes).
    prearchive
        Finds the rows the actions apply to.
    archiver
        Archives what a commit archives.
    """

    catalog: Catalog
    prearchive: Prearchive
    archiver: Archiver

    def commit(
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
        index = self._index
        with index.lock:
            row = self.prearchive.find_or_404(project, timestamp, folder)
            if row["status"] not in Status.INTERRUPTIBLE:
                raise ClientError("session document locked", 409)
            aa = row["autoarchive"]
            if aa is None and row["project"]:
                aa = self.catalog.project_code(row["project"])
                index.execute("UPDATE sessions SET autoarchive=? WHERE n=?", (aa, row["n"]))
            code = self.catalog.project_code(row["project"]) if row["project"] else None
            archive = auto_archive is True or auto_archives(aa, code)
            # The build itself is instant here: BUILDING then READY.
            self._build(row)
            index.commit()
            if not archive:
                return 200, self.prearchive.uri(row)
            if not row["project"]:
                raise ClientError(_UNASSIGNED_REFUSED, 403)
            target = self.archiver.target(row, dest)
            flags = ArchiveFlags.for_commit(overwrite, overwrite_files, code)
        return 301, self.archiver.archive(int(row["n"]), target, flags, user)

    def build(self, project: str, timestamp: str, folder: str) -> str:
        """``POST <prearchive uri>?action=build`` (§9): build the session document now.

        The session becomes READY (its scan listings become available); nothing is archived.
        Returns the prearchive URI.

        Raises
        ------
        ClientError
            404 unknown session; 409 "session document locked" while it is archiving or in
            another non-interruptible state.
        """
        with self._index.lock:
            row = self.prearchive.find_or_404(project, timestamp, folder)
            if self._locked(row):
                raise ClientError("session document locked", 409)
            self._build(row)
            self._index.commit()
            return self.prearchive.uri(row)

    def reset_status(
        self, project: str, timestamp: str, folder: str, *, tag: str | None = None
    ) -> str:
        """``POST <prearchive uri>?action=reset-status[&tag=UID]`` (§9).

        Like XNAT's resetStatus, the row is re-read from the session folder whatever its
        status: READY if a session document exists (it was built), RECEIVING otherwise. The
        row's auto-archive, prevent_anon, prevent_auto_commit and SOURCE are kept; ``tag``
        replaces the StudyInstanceUID. Returns the prearchive URI. ClientError 404 if unknown.
        """
        with self._index.lock:
            row = self.prearchive.find_or_404(project, timestamp, folder)
            status = Status.READY if row["built"] else Status.RECEIVING
            self._index.execute(
                "UPDATE sessions SET status=?, tag=? WHERE n=?",
                (status, tag or row["tag"], row["n"]),
            )
            self._index.commit()
            return self.prearchive.uri(row)

    def move(self, project: str, timestamp: str, folder: str, new_project: str) -> str | None:
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
        if not new_project or not self.catalog.project_exists(new_project):
            raise ClientError("Unable to modify session data for destination project.", 403)
        index = self._index
        with index.lock:
            row = self.prearchive.find_or_404(project, timestamp, folder)
            if self._locked(row) or self._inflight.writing(int(row["n"])):
                return None
            if (row["project"] or "") == new_project:
                return self.prearchive.uri(row)
            if self.prearchive.find(new_project, timestamp, folder) is not None:
                raise ClientError(
                    f"A session {new_project}/{timestamp}/{folder} already exists.", 409
                )
            src = self._files.path(row["dir"])
            d = prearchive_dir(new_project, timestamp, folder)
            dst = self._files.path(d)
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.exists():
                    os.replace(src, dst)
            except OSError as exc:
                raise ServerError(f"Unable to move the session: {exc}") from exc
            self._files.prune(src.parent)
            index.execute(
                "UPDATE sessions SET project=?, dir=?, status=?, built=1 WHERE n=?",
                (new_project, d, Status.READY, row["n"]),
            )
            index.commit()
            moved = index.session(int(row["n"]))
            assert moved is not None
            return self.prearchive.uri(moved)

    def delete(self, project: str, timestamp: str, folder: str) -> None:
        """``DELETE <prearchive uri>`` (§9): remove the session's row and its files.

        Raises
        ------
        ClientError
            404 unknown session; 409 while it is archiving, locked, or receiving files.
        """
        index = self._index
        with index.lock:
            row = self.prearchive.find_or_404(project, timestamp, folder)
            if self._locked(row) or self._inflight.writing(int(row["n"])):
                raise ClientError(
                    f"The session {project}/{timestamp}/{folder} is locked: {row['status']}", 409
                )
            index.execute("DELETE FROM session_files WHERE session_n=?", (row["n"],))
            index.execute("DELETE FROM sessions WHERE n=?", (row["n"],))
            index.commit()
            src = self._files.path(row["dir"])
        shutil.rmtree(src, ignore_errors=True)
        self._files.prune(src.parent)

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
        project, ts, folder = parse_prearchive_uri(src)
        with self._index.lock:
            row = self.prearchive.find(project, ts, folder)
            if row is None:
                raise ClientError(f"Unable to find prearchive session {src}", 404)
            if self._locked(row):
                raise ClientError("Operation already in progress on this prearchive entry.", 403)
            if not row["project"]:
                raise ClientError(_UNASSIGNED_REFUSED, 403)
            target = self.archiver.target(row, dest)
            code = self.catalog.project_code(row["project"])
            flags = ArchiveFlags.for_commit(overwrite, overwrite_files, code)
        return self.archiver.archive(int(row["n"]), target, flags, user)

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
            step = self._build_for_import(uri, dest, overwrite, overwrite_files, auto_archive)
            if step is None:
                continue
            if isinstance(step, str):
                out.append(step)
                continue
            try:
                out.append(self.archiver.archive(*step, user))
            except StoreError as exc:
                raise ClientError("unable to archive for the Prearchive session") from exc
        self._index.commit()
        return out

    def _build_for_import(
        self,
        uri: str,
        dest: str | None,
        overwrite: str | None,
        overwrite_files: bool,
        auto_archive: bool,
    ) -> str | tuple[int, Target, ArchiveFlags] | None:
        """Build one session of :meth:`commit_import`; what to archive, the URI to answer with
        when nothing is, or ``None`` when the build was interrupted (or the row is gone)."""
        project, ts, folder = parse_prearchive_uri(uri)
        index = self._index
        with index.lock:
            row = self.prearchive.find(project, ts, folder)
            if row is None or row["status"] not in Status.INTERRUPTIBLE:
                return None
            if self._inflight.writing(int(row["n"])):
                # Another batch is writing: the build is interrupted and nothing archived.
                index.set_status(int(row["n"]), Status.RECEIVING)
                return None
            self._build(row)
            if not auto_archive:
                return uri
            try:
                if not row["project"]:
                    raise ClientError(_UNASSIGNED_REFUSED)
                target = self.archiver.target(row, dest)
                code = self.catalog.project_code(row["project"])
            except ClientError as exc:
                raise ClientError("unable to archive for the Prearchive session") from exc
            flags = ArchiveFlags.for_commit(overwrite, overwrite_files, code)
            return int(row["n"]), target, flags

    def _build(self, row: sqlite3.Row) -> None:
        """The build: instant here, the session document exists and the row is READY."""
        self._index.execute(
            "UPDATE sessions SET status=?, built=1 WHERE n=?", (Status.READY, row["n"])
        )

    def _locked(self, row: sqlite3.Row) -> bool:
        """Whether another operation holds the session (a locked status or an archive step)."""
        return row["status"] not in Status.INTERRUPTIBLE or self._inflight.archiving(int(row["n"]))
