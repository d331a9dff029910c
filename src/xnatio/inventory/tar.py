"""Tar and tar.gz sources, read as GNU tar and gzip read them.

Python's :mod:`tarfile` ends the listing at the first header it cannot read (a bad checksum, a
short header, the end of the file), as if the archive ended there. Here only the end-of-archive
marker (a zero block) ends it, and only zero bytes may follow that marker; anything else is damage
named by its byte offset and the member before it. A ``.tar.gz`` is decompressed by
:class:`_Gunzip`, which reads the gzip stream to its end so that zlib checks its CRC-32 and length
(tarfile's own gzip reader checks neither).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

from xnatio.errors import InputError
from xnatio.inventory.members import (
    MAX_EXTRACT_BYTES,
    check_expansion,
    check_member_name,
    split_by_name,
)
from xnatio.inventory.model import SkippedFile

__all__ = ["TarGzSource", "TarSource"]

# Compressed bytes read at a time, and the most decompressed bytes one step may produce (a
# decompression bomb expands a little at a time, so the limits of the extraction can act).
_GZ_IN = 1 << 20
_GZ_OUT = 4 << 20


class _GzipDamage(Exception):
    """The gzip stream is damaged (not a zlib.error, which tarfile would turn into its own)."""


class _Gunzip(io.RawIOBase):
    """A gzip file's decompressed bytes, read forward; zlib checks each member's CRC-32 and size.

    Members follow one another (as ``cat a.gz b.gz`` makes); zero bytes after the last one are
    padding. Damage raises :class:`_GzipDamage` naming the compressed byte reached (a bad CRC is
    zlib's "incorrect data check"), as does a file that ends too soon.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._inflate = zlib.decompressobj(31)  # 16 + 15: the gzip wrapper, a 32 KiB window
        self._out = b""
        self._pos = 0
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def _input(self) -> bytes:
        data = self._raw.read(_GZ_IN)
        self.consumed += len(data)
        return data

    def _next_member(self) -> bool:
        """Start the next gzip member after the one that ended; False at the end of the file."""
        rest = self._inflate.unused_data
        while not (rest := rest.lstrip(b"\0")):
            rest = self._input()
            if not rest:
                return False
        self._inflate = zlib.decompressobj(31)
        self._out, self._pos = self._inflate.decompress(rest, _GZ_OUT), 0
        return True

    def _fill(self) -> bool:
        """Decompress more into the output buffer; False at the end of the file."""
        while True:
            if self._inflate.eof:
                if not self._next_member():
                    return False
            else:
                data = self._inflate.unconsumed_tail or self._input()
                if not data:
                    raise EOFError("the file ends before the end of its compressed data")
                self._out, self._pos = self._inflate.decompress(data, _GZ_OUT), 0
            if self._out:
                return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            if self._pos >= len(self._out) and not self._fill():
                return b""
        except (zlib.error, EOFError) as exc:
            raise _GzipDamage(
                f"damaged gzip data near byte {self.consumed:,} of the file ({exc})"
            ) from None
        end = len(self._out) if size is None or size < 0 else self._pos + size
        chunk = self._out[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Slice(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``offset`` of a shared file descriptor (pread)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._pos)
        if n <= 0:
            return 0
        data = os.pread(self._fd, n, self._offset + self._pos)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _tar_member_check(archive: Path, member: tarfile.TarInfo) -> str:
    """Normalised member path; refuses links, devices and sparse members."""
    rel = check_member_name(archive, member.name)
    if member.issym() or member.islnk():
        raise InputError(
            f"{archive.name}: refusing archive with link member {member.name!r} -> "
            f"{member.linkname!r}; repack it without links"
        )
    if member.isdev():
        raise InputError(
            f"{archive.name}: refusing archive with device or fifo member {member.name!r}; "
            "repack it with regular files only"
        )
    if member.issparse():
        raise InputError(
            f"{archive.name}: refusing archive with sparse member {member.name!r}; "
            "repack it with regular files only"
        )
    return rel


class _HeaderDamage(Exception):
    """A tar header that is not the end-of-archive marker and cannot be read."""


class _StrictTarInfo(tarfile.TarInfo):
    """Tar headers as GNU tar reads them: only a zero block ends the archive.

    :meth:`tarfile.TarFile.next` takes a header with a bad checksum, a short header or the end
    of the file for the end of the archive; raising another exception type here makes it pass
    the problem on instead.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _StrictTarInfo:
        if not buf:
            raise _HeaderDamage("the archive ends without its end-of-archive marker")
        if len(buf) != tarfile.BLOCKSIZE:
            raise _HeaderDamage("the archive ends inside a header")
        if buf.count(0) == tarfile.BLOCKSIZE:
            return super().frombuf(buf, encoding, errors)  # the end-of-archive marker
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            raise _HeaderDamage(f"damaged header ({exc})") from None


def _damaged(archive: Path, kind: str, what: str, last: str | None) -> InputError:
    after = f", after member {last!r}" if last else ", in its first member"
    return InputError(
        f"{archive.name}: not a readable {kind} file: {what}{after}; the archive is damaged or "
        "truncated (check it with 'tar tvf'), fix or replace it"
    )


class _TarWalk:
    """The members of an open tar file in order, with the offset of what is being read."""

    def __init__(self, archive: Path, tf: tarfile.TarFile, kind: str) -> None:
        self.archive, self.tf, self.kind = archive, tf, kind
        self.last: str | None = None
        # Offsets count in the tar stream, which in a tar.gz is the uncompressed one.
        self.inside = " of the uncompressed tar" if kind != "tar" else ""

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        while True:
            offset = self.tf.offset
            try:
                member = self.tf.next()
            except (_HeaderDamage, tarfile.ReadError) as exc:
                raise self.error(f"{exc} at byte {offset:,}{self.inside}") from None
            if member is None:
                return
            self.last = member.name
            yield member

    def error(self, what: str) -> InputError:
        return _damaged(self.archive, self.kind, what, self.last)

    def check_tail(self, read: Callable[[int], bytes], pos: int) -> None:
        """Only zero bytes may follow the end-of-archive marker (GNU tar pads with them).

        ``read(n)`` returns the next bytes of the archive from byte ``pos`` on, ``b""`` at its end.
        """
        while chunk := read(1 << 20):
            if chunk.count(0) != len(chunk):
                nonzero = pos + len(chunk) - len(chunk.lstrip(b"\0"))
                raise self.error(
                    f"data after the end-of-archive marker at byte {nonzero:,}{self.inside} "
                    "(a damaged header read as the end, or archives joined together)"
                )
            pos += len(chunk)


def _first_header(archive: Path, kind: str, exc: _HeaderDamage) -> InputError:
    return _damaged(archive, kind, f"{exc} at byte 0", None)  # raised while tarfile.open reads


class TarSource:
    """An uncompressed tar file, read in place through the members' data offsets.

    Every header is read and checked before anything is sent (tar keeps no checksum of the data
    itself); the rest of the file after the end-of-archive marker must be zeros.

    Parameters
    ----------
    path
        The tar file.
    """

    def __init__(self, path: Path) -> None:
        self.root = path
        self._members: dict[str, tuple[int, int]] = {}
        self._skipped: list[SkippedFile] = []
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._scan()
        except BaseException:
            self.close()
            raise

    def _scan(self) -> None:
        path = self.root
        try:
            with tarfile.open(path, mode="r:", tarinfo=_StrictTarInfo) as tf:
                walk = _TarWalk(path, tf, "tar")
                for member in walk:
                    rel = _tar_member_check(path, member)
                    if not member.isfile() or not rel:
                        continue
                    if rel in self._members:
                        self._skipped.append(
                            SkippedFile(rel, "replaced by a later member with the same name")
                        )
                    self._members[rel] = (member.offset_data, member.size)
                pos = tf.offset

                def read(n: int) -> bytes:
                    nonlocal pos
                    chunk = os.pread(self._fd, n, pos)
                    pos += len(chunk)
                    return chunk

                walk.check_tail(read, pos)
        except _HeaderDamage as exc:
            raise _first_header(path, "tar", exc) from None
        except tarfile.TarError as exc:
            raise InputError(
                f"{path.name}: not a readable tar file ({exc}); check the file"
            ) from None

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        sizes = ((rel, size) for rel, (_, size) in self._members.items())
        return split_by_name(sizes, self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open member ``path``; safe to call from several threads at once."""
        offset, size = self._members[path]
        return cast(BinaryIO, io.BufferedReader(_Slice(self._fd, offset, size), 65536))

    def check_member(self, fp: BinaryIO) -> None:
        """Nothing to check: tar keeps no checksum of a member's data."""

    def close(self) -> None:
        """Close the tar file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TarGzSource:
    """A gzip-compressed tar, extracted once into a private temporary folder.

    Extraction writes regular files only, checks every member name and stops as soon as the
    expanded size passes the limits. The whole gzip stream is read, so its CRC-32 and length
    are checked, and every tar header with it, before anything is sent. The folder is removed
    by :meth:`close`.

    Parameters
    ----------
    path
        The ``.tar.gz`` / ``.tgz`` file.
    max_extract_bytes
        Refuse archives that expand to more than this in total.
    """

    def __init__(self, path: Path, *, max_extract_bytes: int = MAX_EXTRACT_BYTES) -> None:
        self.root = path
        self._dir = Path(tempfile.mkdtemp(prefix="xnatio-src-"))
        self._entries: dict[str, int] = {}
        self._skipped: list[SkippedFile] = []
        self._total = 0  # bytes extracted so far
        try:
            self._extract(max_extract_bytes)
        except BaseException:
            self.close()
            raise

    def _extract(self, max_bytes: int) -> None:
        compressed = self.root.stat().st_size
        limit = min(max_bytes, shutil.disk_usage(self._dir).free)
        with open(self.root, "rb") as raw:
            walk: _TarWalk | None = None
            try:
                # tarfile's default buffer: a larger one is copied again at every header.
                with tarfile.open(fileobj=_Gunzip(raw), mode="r|", tarinfo=_StrictTarInfo) as tf:
                    walk = _TarWalk(self.root, tf, "tar.gz")
                    for member in walk:
                        self._extract_member(tf, member, compressed, limit)
                    # Reading to the end makes zlib check the stream's CRC-32 and length.
                    stream = cast(BinaryIO, tf.fileobj)  # after the zero block just read
                    walk.check_tail(stream.read, tf.offset + tarfile.BLOCKSIZE)
            except _HeaderDamage as exc:
                raise _first_header(self.root, "tar.gz", exc) from None
            except _GzipDamage as exc:
                if walk is None:
                    raise _damaged(self.root, "tar.gz", str(exc), None) from None
                raise walk.error(str(exc)) from None
            except tarfile.TarError as exc:
                raise InputError(
                    f"{self.root.name}: not a readable tar.gz file ({exc}); check the file"
                ) from None
            except OSError as exc:
                raise InputError(
                    f"{self.root.name}: cannot extract it ({exc.strerror or exc}); "
                    "extract it yourself and pass the folder"
                ) from None

    def _extract_member(
        self, tf: tarfile.TarFile, member: tarfile.TarInfo, compressed: int, limit: int
    ) -> None:
        rel = _tar_member_check(self.root, member)
        if not member.isfile() or not rel:
            return
        self._total += member.size
        check_expansion(self.root, self._total, compressed, limit)
        src = tf.extractfile(member)
        if src is None:  # pragma: no cover - regular files always have data
            return
        dest = self._dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir():
            raise InputError(
                f"{self.root.name}: member {member.name!r} is both a file and a folder; "
                "repack the archive"
            )
        if rel in self._entries:
            self._skipped.append(SkippedFile(rel, "replaced by a later member with the same name"))
        with open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        self._entries[rel] = member.size

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        return split_by_name(self._entries.items(), self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open the extracted copy of member ``path``."""
        if path not in self._entries:
            raise FileNotFoundError(path)
        return open(self._dir / path, "rb")

    def check_member(self, fp: BinaryIO) -> None:
        """Nothing left to check: the gzip CRC-32 covered every member during extraction."""

    def close(self) -> None:
        """Remove the extraction folder (idempotent)."""
        shutil.rmtree(self._dir, ignore_errors=True)
