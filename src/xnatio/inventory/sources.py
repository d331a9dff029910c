"""Sources: a folder, a zip, a tar or a tar.gz, listed and opened member by member.

Archive sources are opened defensively: entries that would escape the extraction folder (``..``,
absolute paths), links, device files and decompression bombs make the whole archive refused with
an :class:`~xnatio.errors.InputError`.

They are also read strictly, as GNU tar, gzip and unzip read them, so that a damaged archive is
never taken for a shorter one. Python's :mod:`tarfile` ends the listing at the first header it
cannot read, as if the archive ended there; here every header must be valid up to the
end-of-archive marker (two zero blocks), and only zero bytes may follow it. A gzip stream is read
to its end, so that its CRC and length are checked, and every zip member is read whole by the
inventory, so that its CRC is. The one-line :class:`~xnatio.errors.InputError` names the archive
and the byte offset or member where the damage is. Checking zip members while the upload streams
them would save one read of the archive, but a damaged member would then be found after other
batches were sent (see docs/benchmarks.md for the cost of reading it first).
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from xnatio.errors import InputError
from xnatio.inventory.model import UNREADABLE, SkippedFile, Source

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
    "DamagedMemberError",
    "FolderSource",
    "Lister",
    "TarGzSource",
    "TarSource",
    "ZipSource",
    "open_lister",
    "open_source",
]

# --------------------------------------------------------------------------------------------
# Names that are never DICOM instances worth sending

_OS_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "__macosx", "ehthumbs.db"})

# Archive safety limits. Real DICOM rarely compresses better than 10:1; a much higher ratio over a
# large total is the signature of a decompression bomb.
MAX_EXTRACT_BYTES = 1 << 40  # 1 TiB
MAX_RATIO = 100
_RATIO_FLOOR = 64 << 20  # the ratio check applies only above 64 MiB of expanded data


def _name_skip_reason(rel: str, *, is_dir: bool = False) -> str | None:
    """Reason to skip ``rel`` by its name alone, or None."""
    base = rel.rsplit("/", 1)[-1]
    parts = rel.split("/")
    if any(p.lower() in _OS_FILES for p in parts):
        return "OS file"
    if any(p.startswith(".") for p in parts):
        return "hidden folder" if is_dir else "hidden file"
    if not is_dir and base.upper() == "DICOMDIR":
        return "DICOMDIR"
    return None


def _unreadable(exc: OSError) -> str:
    """The skip reason of a file or folder that ``exc`` kept from being read."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{UNREADABLE}: permission denied"
    return f"{UNREADABLE}: {exc.strerror or exc}"


# --------------------------------------------------------------------------------------------
# Sources


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
                skipped.append(SkippedFile(prefix or "./", _unreadable(exc)))
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
                        skipped.append(SkippedFile(rel, _unreadable(exc)))
                    continue
                if stat.S_ISDIR(st.st_mode):
                    reason = _name_skip_reason(rel, is_dir=True)
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
                    reason = _name_skip_reason(rel)
                    if reason:
                        skipped.append(SkippedFile(rel, reason))
                    else:
                        found.append((rel, st.st_size))
                else:
                    skipped.append(SkippedFile(rel, "not a regular file"))
            # Reverse so that the stack pops sub-folders in name order.
            stack.extend(reversed(subdirs))
        return found, skipped


def _check_member_name(archive: Path, name: str) -> str:
    """Return the normalised member path, refusing anything that could escape a folder."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise InputError(
            f"{archive.name}: refusing archive with absolute member path {name!r}; "
            "repack it with relative paths"
        )
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(
            f"{archive.name}: refusing archive with member {name!r} that points outside the "
            "archive (path traversal); repack it without '..' in member names"
        )
    return "/".join(parts)


def _check_expansion(archive: Path, expanded: int, compressed: int, max_bytes: int) -> None:
    """Refuse decompression bombs: too much data in total, or an implausible ratio."""
    if expanded > max_bytes:
        raise InputError(
            f"{archive.name}: refusing archive that expands to more than {max_bytes:,} bytes "
            "(possible decompression bomb); extract it yourself and pass the folder"
        )
    if expanded > _RATIO_FLOOR and expanded > MAX_RATIO * max(compressed, 1):
        raise InputError(
            f"{archive.name}: refusing archive with compression ratio above {MAX_RATIO}:1 "
            "(possible decompression bomb); extract it yourself and pass the folder"
        )


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
            rel = _check_member_name(self.root, info.filename)
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
            _check_expansion(self.root, total, self.root.stat().st_size, max_bytes)
            if rel in self._names:
                self._skipped.append(
                    SkippedFile(rel, "replaced by a later member with the same name")
                )
                self._entries = [e for e in self._entries if e[0] != rel]
            self._names[rel] = info.filename
            reason = _name_skip_reason(rel)
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


def _split_by_name(
    members: Iterable[tuple[str, int]], skipped: list[SkippedFile]
) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
    """Archive members as ``(path, size)`` candidates, apart from those skipped by their name."""
    found: list[tuple[str, int]] = []
    out = list(skipped)
    for rel, size in members:
        reason = _name_skip_reason(rel)
        if reason:
            out.append(SkippedFile(rel, reason))
        else:
            found.append((rel, size))
    return found, out


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
    rel = _check_member_name(archive, member.name)
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
        return _split_by_name(sizes, self._skipped)

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
                with (
                    gzip.GzipFile(fileobj=raw, mode="rb") as gz,
                    tarfile.open(
                        fileobj=gz, mode="r|", tarinfo=_StrictTarInfo, bufsize=1 << 20
                    ) as tf,
                ):
                    walk = _TarWalk(self.root, tf, "tar.gz")
                    for member in walk:
                        self._extract_member(tf, member, compressed, limit)
                    # Reading to the end makes gzip check the stream's CRC-32 and length.
                    stream = cast(BinaryIO, tf.fileobj)  # after the zero block just read
                    walk.check_tail(stream.read, tf.offset + tarfile.BLOCKSIZE)
            except _HeaderDamage as exc:
                raise _first_header(self.root, "tar.gz", exc) from None
            except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
                where = f"damaged gzip data near byte {raw.tell():,} of the file ({exc})"
                if walk is None:
                    raise _damaged(self.root, "tar.gz", where, None) from None
                raise walk.error(where) from None
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
        _check_expansion(self.root, self._total, compressed, limit)
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
        return _split_by_name(self._entries.items(), self._skipped)

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
