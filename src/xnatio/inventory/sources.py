"""Sources: a folder, a zip, a tar or a tar.gz, listed and opened member by member.

Archive sources are opened defensively: entries that would escape the extraction folder (``..``,
absolute paths), links, device files and decompression bombs make the whole archive refused with
an :class:`~xnatio.errors.InputError`.

They are also read strictly, as GNU tar, gzip and unzip read them, so that a damaged archive is
never taken for a shorter one: tar headers and gzip streams as :mod:`xnatio.inventory.tar`
explains, and every zip member is read whole by the inventory, so that its CRC-32 is checked. The
one-line :class:`~xnatio.errors.InputError` names the archive and the byte offset or member where
the damage is. Checking zip members while the upload streams
them would save one read of the archive, but a damaged member would then be found after other
batches were sent (see docs/benchmarks.md for the cost of reading it first).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Protocol

from xnatio.errors import InputError
from xnatio.inventory.members import (
    MAX_EXTRACT_BYTES,
    MAX_RATIO,
    name_skip_reason,
    unreadable_reason,
)
from xnatio.inventory.model import SkippedFile, Source

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
    "DamagedMemberError",
    "FolderSource",
    "Lister",
    "open_lister",
    "open_source",
]


class FolderSource:
    """A folder on disk, searched recursively.

    Parameters
    ----------
    root
        The folder. Symlinks to files are followed; symlinks to folders are followed unless they
        lead back into a folder already being scanned (a loop), which is reported as skipped.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, path: str) -> BinaryIO:
        """Open ``path`` (relative to :attr:`root`) for binary reading."""
        return open(self.root / path, "rb")

    def check_member(self, fp: BinaryIO) -> None:
        """Nothing to check: a file on disk has no checksum."""

    def close(self) -> None:
        """Nothing to release for a folder."""

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate files as ``(relative path, size)`` plus files skipped by name or type."""
        found: list[tuple[str, int]] = []
        skipped: list[SkippedFile] = []
        root_st = os.stat(self.root)
        # Iterative depth-first walk; each stack entry carries the (dev, inode) chain of its
        # ancestors so that a symlink pointing back up the tree is recognised as a loop.
        stack: list[tuple[Path, str, frozenset[tuple[int, int]]]] = [
            (self.root, "", frozenset({(root_st.st_dev, root_st.st_ino)}))
        ]
        seen_dirs: set[tuple[int, int]] = {(root_st.st_dev, root_st.st_ino)}
        while stack:
            folder, prefix, ancestors = stack.pop()
            try:
                with os.scandir(folder) as it:
                    items = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                # The folder itself: every file in it is unknown, so this is no skip by choice.
                skipped.append(SkippedFile(prefix or "./", unreadable_reason(exc)))
                continue
            subdirs: list[tuple[Path, str, frozenset[tuple[int, int]]]] = []
            for entry in items:
                rel = prefix + entry.name
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        skipped.append(SkippedFile(rel, "symlink loop"))
                    elif entry.is_symlink():
                        skipped.append(SkippedFile(rel, "broken symlink"))
                    else:
                        skipped.append(SkippedFile(rel, unreadable_reason(exc)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    reason = name_skip_reason(rel, is_dir=True)
                    if reason:
                        skipped.append(SkippedFile(rel + "/", reason))
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in ancestors:
                        skipped.append(SkippedFile(rel, "symlink loop"))
                        continue
                    if key in seen_dirs:
                        skipped.append(SkippedFile(rel, "folder already scanned (symlink)"))
                        continue
                    seen_dirs.add(key)
                    subdirs.append((Path(entry.path), rel + "/", ancestors | {key}))
                elif stat.S_ISREG(st.st_mode):
                    reason = name_skip_reason(rel)
                    if reason:
                        skipped.append(SkippedFile(rel, reason))
                    else:
                        found.append((rel, st.st_size))
                else:
                    skipped.append(SkippedFile(rel, "not a regular file"))
            # Reverse so that the stack pops sub-folders in name order.
            stack.extend(reversed(subdirs))
        return found, skipped


class DamagedMemberError(OSError):
    """An archive member failed its integrity check (CRC, size, local header) while being read.

    An :class:`OSError`, so that whatever reads a source (the request bodies, the C-STORE
    sender) reports it as the file that could not be read; the inventory turns it into an
    :class:`~xnatio.errors.InputError`.
    """


class Lister(Protocol):
    """A source that can also list its candidate files."""

    root: Path

    def open(self, path: str) -> BinaryIO: ...

    def close(self) -> None: ...

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]: ...

    def check_member(self, fp: BinaryIO) -> None:
        """Read the rest of ``fp`` (from :meth:`open`) where that checks its integrity (zip CRC).

        Raises :class:`DamagedMemberError` when it does not hold.
        """
        ...


def open_source(source: str | Path, *, max_extract_bytes: int = MAX_EXTRACT_BYTES) -> Source:
    """Open ``source`` as a folder, zip, tar or tar.gz source (by content, then by name).

    Raises
    ------
    InputError
        If ``source`` does not exist, is not a folder or a supported archive, or is unsafe.
    """
    return open_lister(Path(source), max_extract_bytes)


def open_lister(path: Path, max_extract_bytes: int = MAX_EXTRACT_BYTES) -> Lister:
    """Open ``path`` as a :class:`Lister` (see :func:`open_source`)."""
    if not path.exists():
        raise InputError(
            f"SOURCE {str(path)!r} does not exist; give a folder, .zip, .tar or .tar.gz"
        )
    if path.is_dir():
        return FolderSource(path)
    if not path.is_file():  # reading a FIFO would wait forever, a device has no end
        raise InputError(
            f"SOURCE {str(path)!r} is not a folder or a regular file (a device, FIFO or socket)"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise InputError(f"cannot read SOURCE {str(path)!r}: {exc.strerror}") from None
    name = path.name.lower()
    # tarfile and zipfile load only for such a source (start-up time of folder sources)
    from xnatio.inventory.tar import TarGzSource, TarSource
    from xnatio.inventory.zipped import ZipSource

    if head.startswith(b"\x1f\x8b"):
        return TarGzSource(path, max_extract_bytes=max_extract_bytes)
    if head.startswith(b"PK") or name.endswith(".zip"):
        return ZipSource(path, max_extract_bytes=max_extract_bytes)
    if head[257:262] == b"ustar" or name.endswith(".tar"):
        return TarSource(path)
    raise InputError(
        f"SOURCE {str(path)!r} is not a folder, .zip, .tar or .tar.gz/.tgz; "
        "pass the folder holding the DICOM files"
    )
