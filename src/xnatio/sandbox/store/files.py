"""The store's files: where each thing lives under the data folder, and safe writes there.

Layout under the data folder::

    index.sqlite
    prearchive/<project>/<timestamp>/<folder>/SCANS/<scan>/DICOM/<file>
    prearchive_unassigned/<timestamp>/<folder>/SCANS/<scan>/DICOM/<file>
    archive/<project>/arc001/<label>/SCANS/<scan>/<resource>/<path>
    archive/<project>/arc001/<label>/RESOURCES/<resource>/<path>
    tmp/

A Direct-Archive session is received straight into its ``archive/…/<label>`` folder
(docs/xnat-behaviour.md §4.1).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import BinaryIO

from xnatio.sandbox.store.model import ClientError, StoreFaults

__all__ = ["DataFolder", "archive_dir", "prearchive_dir", "resource_dir"]

COPY_BUFFER = 1 << 20


def prearchive_dir(project: str, timestamp: str, folder: str) -> str:
    """A prearchive session's folder; ``project`` ``""`` is the unassigned prearchive."""
    if project:
        return f"prearchive/{project}/{timestamp}/{folder}"
    return f"prearchive_unassigned/{timestamp}/{folder}"


def archive_dir(project: str, label: str) -> str:
    """An archived (or Direct-Archive) session's folder."""
    return f"archive/{project}/arc001/{label}"


def resource_dir(project: str, label: str, scan_id: str, resource: str) -> str:
    """A resource's folder: a scan's (``scan_id``) or the session's own (``scan_id`` ``""``)."""
    base = archive_dir(project, label)
    return f"{base}/SCANS/{scan_id}/{resource}" if scan_id else f"{base}/RESOURCES/{resource}"


class DataFolder:
    """The data folder: safe paths under it and file writes into it.

    Parameters
    ----------
    root
        The data folder; created with its ``tmp`` folder if missing.
    faults
        Fault knobs (delay before each write, a full disk); read at every write.
    """

    def __init__(self, root: Path, faults: StoreFaults) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.faults = faults
        self._checked_dirs: set[str] = set()

    def path(self, *parts: str) -> Path:
        """Join ``parts`` under the data folder and refuse anything that escapes it.

        Components are checked by name (no empty, ``.``, ``..``, NUL); the parent folder is also
        resolved once (symlinks) and remembered, so the per-file cost stays small.

        Raises
        ------
        ClientError
            "Invalid path: …" for a path that would leave the data folder or ends in a link.
        """
        comps: list[str] = []
        for part in parts:
            for c in part.split("/"):
                if c in ("", ".", "..") or "\x00" in c:
                    raise ClientError(f"Invalid path: {'/'.join(parts)}")
                comps.append(c)
        p = self.root.joinpath(*comps)
        parent = str(p.parent)
        if parent not in self._checked_dirs:
            resolved = Path(os.path.realpath(parent))
            if resolved != self.root and self.root not in resolved.parents:
                raise ClientError(f"Invalid path: {'/'.join(parts)}")
            if len(self._checked_dirs) > 100_000:
                self._checked_dirs.clear()
            self._checked_dirs.add(parent)
        if p.is_symlink():
            raise ClientError(f"Invalid path: {'/'.join(parts)}")
        return p

    def write(self, final: Path, prefix: bytes, stream: BinaryIO) -> tuple[int, str]:
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
                while chunk := stream.read(COPY_BUFFER):
                    f.write(chunk)
                    md5.update(chunk)
                    size += len(chunk)
            if target != final:
                os.replace(target, final)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return size, md5.hexdigest()

    def prune(self, d: Path) -> None:
        """Remove ``d`` if it is an empty folder (a timestamp folder left in the prearchive)."""
        try:
            if d != self.root and not any(d.iterdir()):
                d.rmdir()
        except OSError:
            pass

    @staticmethod
    def remove_empty_folders(top: Path) -> None:
        """Remove the empty folders under ``top`` and ``top`` itself, deepest first.

        Anything holding a file stays.
        """
        if top.is_dir():
            for folder, _, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
