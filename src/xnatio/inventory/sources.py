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
import io
import os
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from xnatio.errors import InputError
from xnatio.inventory.members import (
    MAX_EXTRACT_BYTES,
    MAX_RATIO,
    check_expansion,
    check_member_name,
    name_skip_reason,
    unreadable_reason,
)
from xnatio.inventory.model import UNREADABLE, SkippedFile, Source

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
    "DamagedMemberError",
    "FolderSource",
    "Lister",
    "ZipSource",
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


# What zipfile raises for a damaged member: a bad CRC or local header (BadZipFile), bad deflate
# data (zlib.error), data that ends early (EOFError).
_ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError)


class _CheckedMember(io.BufferedIOBase):
    """A zip member's stream whose damage surfaces as :class:`DamagedMemberError`."""

    def __init__(self, inner: BinaryIO, archive: Path, name: str) -> None:
        super().__init__()
        self._inner = inner
        self._where = f"{archive.name}: member {name!r}"

    def _damaged(self, exc: Exception) -> DamagedMemberError:
        return DamagedMemberError(f"{self._where} is damaged ({exc})")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._inner.read(-1 if size is None else size)
        except _ZIP_DAMAGE as exc:
            raise self._damaged(exc) from None

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seekable(self) -> bool:
        return self._inner.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:  # zipfile seeks by reading (from the start, to go back)
            return self._inner.seek(offset, whence)
        except _ZIP_DAMAGE as exc:
            raise self._damaged(exc) from None

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()
        super().close()


class ZipSource:
    """A zip file, read member by member without extraction.

    Parameters
    ----------
    path
        The zip file.
    max_extract_bytes
        Refuse archives whose members expand to more than this in total.
    """

    def __init__(self, path: Path, *, max_extract_bytes: int = MAX_EXTRACT_BYTES) -> None:
        self.root = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(
                f"{path.name}: not a readable zip file ({exc}); check the file"
            ) from None
        self._names: dict[str, str] = {}
        self._entries: list[tuple[str, int]] = []
        self._skipped: list[SkippedFile] = []
        try:
            self._scan(max_extract_bytes)
        except BaseException:
            self._zip.close()
            raise

    def _scan(self, max_bytes: int) -> None:
        total = 0
        for info in self._zip.infolist():
            mode = info.external_attr >> 16
            rel = check_member_name(self.root, info.filename)
            if stat.S_ISLNK(mode):
                raise InputError(
                    f"{self.root.name}: refusing archive with link member {info.filename!r}; "
                    "repack it without links"
                )
            if info.is_dir() or not rel:
                continue
            if mode and not stat.S_ISREG(mode) and stat.S_IFMT(mode):
                raise InputError(
                    f"{self.root.name}: refusing archive with special member {info.filename!r} "
                    "(device, fifo or socket); repack it with regular files only"
                )
            total += info.file_size
            check_expansion(self.root, total, self.root.stat().st_size, max_bytes)
            if rel in self._names:
                self._skipped.append(
                    SkippedFile(rel, "replaced by a later member with the same name")
                )
                self._entries = [e for e in self._entries if e[0] != rel]
            self._names[rel] = info.filename
            reason = name_skip_reason(rel)
            if reason:
                self._skipped.append(SkippedFile(rel, reason))
            elif info.flag_bits & 0x1:
                self._skipped.append(SkippedFile(rel, f"{UNREADABLE}: encrypted zip member"))
            else:
                self._entries.append((rel, info.file_size))

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        return list(self._entries), list(self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open member ``path``; safe to call from several threads at once.

        Raises
        ------
        DamagedMemberError
            Now or while reading: the member's local header, data or CRC-32 is damaged.
        """
        try:
            inner = self._zip.open(self._names[path])
        except _ZIP_DAMAGE as exc:
            where = f"{self.root.name}: member {path!r}"
            raise DamagedMemberError(f"{where} is damaged ({exc})") from None
        return cast(BinaryIO, _CheckedMember(cast(BinaryIO, inner), self.root, path))

    def check_member(self, fp: BinaryIO) -> None:
        """Read the rest of a member opened with :meth:`open`: zipfile checks its CRC-32 at the end.

        Raises
        ------
        DamagedMemberError
            The member's data does not match its CRC-32 or is cut short.
        """
        while fp.read(1 << 20):
            pass

    def close(self) -> None:
        """Close the zip file."""
        self._zip.close()


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
    # tarfile loads only for a tar source (start-up time of the usual folder sources)
    from xnatio.inventory.tar import TarGzSource, TarSource

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
