"""Inventory of a DICOM source: which files to send, and what their headers say.

A source is a folder (searched recursively) or a ``.zip``, ``.tar`` or ``.tar.gz``/``.tgz`` file.
Only the first few hundred bytes of each file are parsed: a small reader in this module walks the
DICOM elements (PS3.5 section 7) up to Instance Number (0020,0013), which is all the upload needs.
This is several times faster than a general parser and keeps no dataset in memory, so a 100,000-file
session costs one small :class:`DicomFile` per instance.

Archive sources are opened defensively: entries that would escape the extraction folder (``..``,
absolute paths), links, device files and decompression bombs make :func:`build_inventory` refuse the
whole archive with an :class:`~xnatio.errors.InputError`.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, cast

from xnatio.errors import InputError

__all__ = [
    "DicomFile",
    "FolderSource",
    "Inventory",
    "ScanProgress",
    "SkippedFile",
    "Source",
    "TarGzSource",
    "TarSource",
    "ZipSource",
    "build_inventory",
    "open_source",
    "read_header",
]


@dataclass(frozen=True, slots=True)
class DicomFile:
    """One DICOM instance found in a source.

    Attributes
    ----------
    path
        Path relative to the source root (folder) or the member name (archive source), with ``/``
        separators. Used in reports and to open the file through :meth:`Source.open`.
    size
        Size of the file in bytes, exactly as stored in the source.
    sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid
        UIDs from the header (SOP Class from the dataset, falling back to the file meta).
    series_number, instance_number
        As strings, ``""`` when absent.
    transfer_syntax_uid
        From the file meta information; ``""`` if the file has none (implicit VR little endian
        is then assumed by receivers).
    modality
        ``""`` when absent.
    """

    path: str
    size: int
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: str
    instance_number: str
    transfer_syntax_uid: str
    modality: str


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file left out of the upload, and why (for example ``"not DICOM"``, ``"DICOMDIR"``)."""

    path: str
    reason: str


class Source(Protocol):
    """Where the files are: a folder, a zip, a tar or a tar.gz."""

    root: Path

    def open(self, path: str) -> BinaryIO:
        """Open the file at ``path`` (a :attr:`DicomFile.path`) for reading from its first byte."""
        ...

    def close(self) -> None:
        """Release open archives and remove any temporary extraction folder."""
        ...


@dataclass
class Inventory:
    """Everything found in a source.

    Use it as a context manager (``with build_inventory(src) as inv:``) to close the source, which
    removes any temporary extraction folder.

    Attributes
    ----------
    source
        The opened source; use ``inventory.source.open(f.path)`` to read a file.
    files
        DICOM instances to send, sorted by study, series number, instance number and path.
    skipped
        Files left out, with the reason.
    """

    source: Source
    files: list[DicomFile]
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Sum of the sizes of :attr:`files`."""
        return sum(f.size for f in self.files)

    def close(self) -> None:
        """Close the source (idempotent)."""
        self.source.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


ScanProgress = Callable[[int, int], None]

# --------------------------------------------------------------------------------------------
# Names that are never DICOM instances worth sending

_OS_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "__macosx", "ehthumbs.db"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

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
            except PermissionError:
                skipped.append(
                    SkippedFile(prefix.rstrip("/") or ".", "unreadable: permission denied")
                )
                continue
            except OSError as exc:
                skipped.append(
                    SkippedFile(prefix.rstrip("/") or ".", f"unreadable: {exc.strerror}")
                )
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
                    elif exc.errno in (errno.EACCES, errno.EPERM):
                        skipped.append(SkippedFile(rel, "unreadable: permission denied"))
                    else:
                        skipped.append(SkippedFile(rel, f"unreadable: {exc.strerror}"))
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
                self._skipped.append(SkippedFile(rel, "unreadable: encrypted zip member"))
            else:
                self._entries.append((rel, info.file_size))

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        return list(self._entries), list(self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open member ``path``; safe to call from several threads at once."""
        return cast(BinaryIO, self._zip.open(self._names[path]))

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


class TarSource:
    """An uncompressed tar file, read in place through the members' data offsets.

    Parameters
    ----------
    path
        The tar file.
    """

    def __init__(self, path: Path) -> None:
        self.root = path
        self._members: dict[str, tuple[int, int]] = {}
        self._skipped: list[SkippedFile] = []
        try:
            with tarfile.open(path, mode="r:") as tf:
                for member in tf:
                    rel = _tar_member_check(path, member)
                    if not member.isfile() or not rel:
                        continue
                    if rel in self._members:
                        self._skipped.append(
                            SkippedFile(rel, "replaced by a later member with the same name")
                        )
                    self._members[rel] = (member.offset_data, member.size)
        except tarfile.TarError as exc:
            raise InputError(
                f"{path.name}: not a readable tar file ({exc}); check the file"
            ) from None
        self._fd = os.open(path, os.O_RDONLY)

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        sizes = ((rel, size) for rel, (_, size) in self._members.items())
        return _split_by_name(sizes, self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open member ``path``; safe to call from several threads at once."""
        offset, size = self._members[path]
        return cast(BinaryIO, io.BufferedReader(_Slice(self._fd, offset, size), 65536))

    def close(self) -> None:
        """Close the tar file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TarGzSource:
    """A gzip-compressed tar, extracted once into a private temporary folder.

    Extraction writes regular files only, checks every member name and stops as soon as the
    expanded size passes the limits. The folder is removed by :meth:`close`.

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
        try:
            self._extract(max_extract_bytes)
        except BaseException:
            self.close()
            raise

    def _extract(self, max_bytes: int) -> None:
        compressed = self.root.stat().st_size
        limit = min(max_bytes, shutil.disk_usage(self._dir).free)
        total = 0
        try:
            with tarfile.open(self.root, mode="r|gz") as tf:
                for member in tf:
                    rel = _tar_member_check(self.root, member)
                    if not member.isfile() or not rel:
                        continue
                    total += member.size
                    _check_expansion(self.root, total, compressed, limit)
                    src = tf.extractfile(member)
                    if src is None:  # pragma: no cover - regular files always have data
                        continue
                    dest = self._dir / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if dest.is_dir():
                        raise InputError(
                            f"{self.root.name}: member {member.name!r} is both a file and a "
                            "folder; repack the archive"
                        )
                    if rel in self._entries:
                        self._skipped.append(
                            SkippedFile(rel, "replaced by a later member with the same name")
                        )
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                    self._entries[rel] = member.size
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise InputError(
                f"{self.root.name}: not a readable tar.gz file ({exc}); check the file"
            ) from None

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
        """List candidate members as ``(path, size)`` plus members skipped by name."""
        return _split_by_name(self._entries.items(), self._skipped)

    def open(self, path: str) -> BinaryIO:
        """Open the extracted copy of member ``path``."""
        if path not in self._entries:
            raise FileNotFoundError(path)
        return open(self._dir / path, "rb")

    def close(self) -> None:
        """Remove the extraction folder (idempotent)."""
        shutil.rmtree(self._dir, ignore_errors=True)


class _Lister(Protocol):
    root: Path

    def open(self, path: str) -> BinaryIO: ...

    def close(self) -> None: ...

    def entries(self) -> tuple[list[tuple[str, int]], list[SkippedFile]]: ...


def open_source(source: str | Path, *, max_extract_bytes: int = MAX_EXTRACT_BYTES) -> Source:
    """Open ``source`` as a folder, zip, tar or tar.gz source (by content, then by name).

    Raises
    ------
    InputError
        If ``source`` does not exist, is not a folder or a supported archive, or is unsafe.
    """
    return _open(Path(source), max_extract_bytes)


def _open(path: Path, max_extract_bytes: int) -> _Lister:
    if not path.exists():
        raise InputError(
            f"SOURCE {str(path)!r} does not exist; give a folder, .zip, .tar or .tar.gz"
        )
    if path.is_dir():
        return FolderSource(path)
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


# --------------------------------------------------------------------------------------------
# Header reader


class _Truncated(Exception):
    """The data ended in the middle of an element."""


class _Corrupt(Exception):
    """The bytes do not follow the DICOM encoding."""


class _Buffer:
    """Bytes pulled on demand from an iterator of chunks."""

    __slots__ = ("chunks", "data", "pos")

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.data = b""
        self.pos = 0

    def need(self, n: int) -> bool:
        while len(self.data) - self.pos < n:
            chunk = next(self.chunks, b"")
            if not chunk:
                return False
            self.data = self.data[self.pos :] + chunk
            self.pos = 0
        return True

    def take(self, n: int) -> bytes:
        if not self.need(n):
            raise _Truncated
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            avail = len(self.data) - self.pos
            if avail >= n:
                self.pos += n
                return
            n -= avail
            self.pos = len(self.data)
            if not self.need(1):
                raise _Truncated


def _file_chunks(fp: BinaryIO) -> Iterator[bytes]:
    while chunk := fp.read(65536):
        yield chunk


def _inflate_chunks(buf: _Buffer) -> Iterator[bytes]:
    """Inflate the rest of ``buf`` (raw deflate, PS3.5 A.5) a little at a time."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    pending = buf.data[buf.pos :]
    buf.pos = len(buf.data)
    while True:
        if not pending:
            pending = next(buf.chunks, b"")
            if not pending:
                return
        try:
            out = d.decompress(pending, 65536)
        except zlib.error as exc:
            raise _Corrupt(str(exc)) from None
        pending = d.unconsumed_tail
        if out:
            yield out
        elif d.eof:
            return


_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ALL_VRS = _LONG_VRS | frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_STOP = 0x00200013  # Instance Number: the highest tag the inventory needs
_WANTED = {
    0x00020002: "meta_class",
    0x00020003: "meta_instance",
    0x00020010: "ts",
    0x00080016: "sop_class",
    0x00080018: "sop_instance",
    0x00080060: "modality",
    0x0020000D: "study",
    0x0020000E: "series",
    0x00200011: "series_number",
    0x00200013: "instance_number",
}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_EXPLICIT_BE = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")


def _read_element(buf: _Buffer, implicit: bool, little: bool) -> tuple[int, bytes | None, int]:
    """Read one element header: ``(tag, vr or None, length)``."""
    head = buf.take(8)
    g, e = struct.unpack("<HH" if little else ">HH", head[:4])
    tag = g << 16 | e
    if g == 0xFFFE or implicit:
        (length,) = struct.unpack("<I" if little else ">I", head[4:])
        return tag, None, length
    vr = head[4:6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack("<I" if little else ">I", buf.take(4))
    elif vr in _ALL_VRS:
        (length,) = struct.unpack("<H" if little else ">H", head[6:])
    else:
        raise _Corrupt(f"bad VR {vr!r} in ({g:04X},{e:04X})")
    return tag, vr, length


def _skip_undefined(buf: _Buffer, implicit: bool, little: bool, depth: int = 0) -> None:
    """Skip the items of an undefined-length value up to its Sequence Delimitation Item."""
    if depth > 32:
        raise _Corrupt("sequences nested too deeply")
    while True:
        tag, _, length = _read_element(buf, True, little)
        if tag == _SEQ_END:
            return
        if tag != _ITEM:
            raise _Corrupt(f"unexpected tag {tag:08X} in a sequence")
        if length != _UNDEFINED:
            buf.skip(length)
            continue
        # An item of undefined length: a nested dataset ending with an Item Delimitation Item.
        while True:
            tag, vr, length = _read_element(buf, implicit, little)
            if tag == _ITEM_END:
                break
            if length == _UNDEFINED:
                _skip_undefined(buf, implicit or vr == b"UN", little, depth + 1)
            else:
                buf.skip(length)


def _parse(
    buf: _Buffer, implicit: bool, little: bool, values: dict[str, str], *, meta: bool
) -> None:
    """Read elements into ``values`` until group 0002 ends (meta) or past :data:`_STOP`."""
    if not meta and buf.need(8):
        # Some writers encode the dataset with another VR style than the transfer syntax says;
        # trust what the first element looks like, as other toolkits do.
        looks_explicit = buf.data[buf.pos + 4 : buf.pos + 6] in _ALL_VRS
        implicit = not looks_explicit
    while True:
        if not buf.need(8 if meta else 1):
            return
        if meta:
            (g,) = struct.unpack("<H", buf.data[buf.pos : buf.pos + 2])
            if g != 0x0002:
                return
        tag, vr, length = _read_element(buf, implicit, little)
        if tag > _STOP and not meta:
            return
        if tag >= 0xFFFE0000:
            raise _Corrupt(f"unexpected item tag {tag:08X} in the dataset")
        name = _WANTED.get(tag)
        if length == _UNDEFINED:
            # Explicit VR undefined-length UN holds implicit VR little endian data (PS3.5 6.2.2).
            _skip_undefined(buf, implicit or vr == b"UN", little)
        elif name is not None:
            values[name] = buf.take(length).decode("ascii", "replace").strip("\x00 ")
        else:
            buf.skip(length)


def read_header(fp: BinaryIO) -> dict[str, str] | str:
    """Read the identifying elements of a DICOM file.

    Parameters
    ----------
    fp
        The file, positioned at its first byte.

    Returns
    -------
    dict or str
        The values found, keyed ``sop_class``, ``sop_instance``, ``study``, ``series``,
        ``series_number``, ``instance_number``, ``modality``, ``ts``, ``meta_class``; or a skip
        reason (``"not DICOM"``, ``"DICOMDIR"``, ``"truncated or corrupt DICOM header"``, ...).
    """
    first = fp.read(8192)
    buf = _Buffer(_file_chunks(fp))
    buf.data = first
    values: dict[str, str] = {}
    preamble = len(first) >= 132 and first[128:132] == b"DICM"
    try:
        if preamble:
            buf.pos = 132
            _parse(buf, False, True, values, meta=True)
            if values.get("meta_class") == DICOMDIR_SOP_CLASS:
                return "DICOMDIR"
            ts = values.get("ts", "")
            implicit, little = ts == _IMPLICIT_LE, ts != _EXPLICIT_BE
            if ts in _DEFLATED:
                buf = _Buffer(_inflate_chunks(buf))
            _parse(buf, implicit, little, values, meta=False)
        else:
            # No preamble: accept only data that starts like a DICOM header (group 0002 or
            # 0008) and carries both SOP UIDs, so that stray binary files are not mistaken.
            if len(first) < 8:
                return "not DICOM"
            g_le = first[0] | first[1] << 8
            g_be = first[0] << 8 | first[1]
            explicit = first[4:6] in _ALL_VRS
            little = not (explicit and g_be in (0x0002, 0x0008) and g_le not in (0x0002, 0x0008))
            group = g_le if little else g_be
            if group not in (0x0002, 0x0008):
                return "not DICOM"
            if group == 0x0002:
                _parse(buf, False, True, values, meta=True)
                ts = values.get("ts", "")
                implicit, little = ts == _IMPLICIT_LE, ts != _EXPLICIT_BE
                if ts in _DEFLATED:
                    buf = _Buffer(_inflate_chunks(buf))
            else:
                implicit = not explicit
            _parse(buf, implicit, little, values, meta=False)
    except (_Truncated, _Corrupt, struct.error):
        if not preamble:
            return "not DICOM"
        return "truncated or corrupt DICOM header"
    if values.get("sop_class") == DICOMDIR_SOP_CLASS:
        return "DICOMDIR"
    if not values.get("sop_class"):
        values["sop_class"] = values.get("meta_class", "")
    if not values.get("sop_instance") or not values.get("sop_class"):
        if not preamble:
            return "not DICOM"
        missing = "SOP Instance UID" if not values.get("sop_instance") else "SOP Class UID"
        return f"DICOM without {missing} (XNAT would reject it)"
    return values


# --------------------------------------------------------------------------------------------
# Scanning


def _num_key(value: str) -> tuple[int, float, str]:
    """Sort numbers numerically and anything else after them, as text."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _sort_key(f: DicomFile) -> tuple[str, tuple[int, float, str], tuple[int, float, str], str]:
    return (f.study_instance_uid, _num_key(f.series_number), _num_key(f.instance_number), f.path)


def _examine(
    source: _Lister, rel: str, size: int, intern: dict[str, str]
) -> DicomFile | SkippedFile:
    try:
        with source.open(rel) as fp:
            result = read_header(fp)
    except PermissionError:
        return SkippedFile(rel, "unreadable: permission denied")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return SkippedFile(rel, "symlink loop")
        return SkippedFile(rel, f"unreadable: {exc.strerror or exc}")
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError) as exc:
        return SkippedFile(rel, f"unreadable: {exc}")
    if isinstance(result, str):
        return SkippedFile(rel, result)

    # Values shared by many files (study, series, class, syntax) are stored once.
    def shared(key: str) -> str:
        value = result.get(key, "")
        return intern.setdefault(value, value)

    return DicomFile(
        path=rel,
        size=size,
        sop_instance_uid=result["sop_instance"],
        sop_class_uid=shared("sop_class"),
        study_instance_uid=shared("study"),
        series_instance_uid=shared("series"),
        series_number=shared("series_number"),
        instance_number=result.get("instance_number", ""),
        transfer_syntax_uid=shared("ts"),
        modality=shared("modality"),
    )


def _summarise_reasons(skipped: list[SkippedFile]) -> str:
    counts: dict[str, int] = {}
    for s in skipped:
        counts[s.reason] = counts.get(s.reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return ", ".join(f"{n} {reason}" for reason, n in top)


def build_inventory(
    source: str | Path,
    *,
    workers: int = 4,
    progress: ScanProgress | None = None,
    max_extract_bytes: int = MAX_EXTRACT_BYTES,
) -> Inventory:
    """Scan ``source`` (folder, .zip, .tar, .tar.gz/.tgz) and read DICOM headers only.

    Parameters
    ----------
    source
        A folder (searched recursively) or an archive file.
    workers
        Threads reading headers in parallel (helps on cold caches and network file systems).
    progress
        Called as ``progress(files_done, files_total)`` from the calling thread, at most a few
        hundred times per scan and always once at the end.
    max_extract_bytes
        Refuse archives that expand to more than this many bytes.

    Returns
    -------
    Inventory
        DICOM files sorted by study, series number, instance number and path (numbers compare
        numerically), and the skipped files with reasons. Close it (or use ``with``) when done.

    Raises
    ------
    InputError
        Missing source, unsupported or unsafe archive, empty folder, or no DICOM file found.
    """
    src = _open(Path(source), max_extract_bytes)
    try:
        candidates, skipped = src.entries()
        if not candidates and not skipped:
            raise InputError(
                f"SOURCE {str(source)!r} is empty; give the folder holding the DICOM files"
            )
        total = len(candidates)
        files: list[DicomFile] = []
        intern: dict[str, str] = {}
        step = max(1, total // 200)
        # Small chunks for small scans keep the progress display moving.
        chunk = max(1, min(64, total // 100))

        def work(start: int) -> list[DicomFile | SkippedFile]:
            return [
                _examine(src, rel, size, intern) for rel, size in candidates[start : start + chunk]
            ]

        done = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for results in pool.map(work, range(0, total, chunk)):
                for r in results:
                    if isinstance(r, DicomFile):
                        files.append(r)
                    else:
                        skipped.append(r)
                before = done
                done += len(results)
                if progress is not None and (done // step != before // step or done == total):
                    progress(done, total)
        if not files:
            raise InputError(
                f"no DICOM files found in {str(source)!r} ({len(skipped)} files skipped: "
                f"{_summarise_reasons(skipped)}); check SOURCE"
            )
        files.sort(key=_sort_key)
        skipped.sort(key=lambda s: s.path)
        return Inventory(source=src, files=files, skipped=skipped)
    except BaseException:
        src.close()
        raise
