"""Sources: a folder, a zip, a tar or a tar.gz, listed and opened member by member.

Archive sources are opened defensively: entries that would escape the extraction folder (``..``,
absolute paths), links, device files and decompression bombs make the whole archive refused with
an :class:`~xnatio.errors.InputError`.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from xnatio.errors import InputError
from xnatio.inventory.model import SkippedFile, Source

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
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


class Lister(Protocol):
    """A source that can also list its candidate files."""

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
