"""Zip sources: listed, opened member by member, and every member's CRC-32 checked.

Loaded only when a source is a zip file (:func:`xnatio.inventory.sources.open_source`).
"""

from __future__ import annotations

import io
import stat
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, cast

from xnatio.errors import InputError
from xnatio.inventory.members import (
    MAX_EXTRACT_BYTES,
    check_expansion,
    check_member_name,
    name_skip_reason,
)
from xnatio.inventory.model import UNREADABLE, SkippedFile
from xnatio.inventory.sources import DamagedMemberError

__all__ = ["ZipSource"]


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
