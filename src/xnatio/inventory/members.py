"""What every source applies to its entries: names never worth sending, and archive limits.

Archive members are checked by name before anything is read (no absolute paths, no ``..``), and
the expanded size of an archive against the limits of a decompression bomb.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from pathlib import Path

from xnatio.errors import InputError
from xnatio.inventory.model import UNREADABLE, SkippedFile

__all__ = [
    "MAX_EXTRACT_BYTES",
    "MAX_RATIO",
    "check_expansion",
    "check_member_name",
    "name_skip_reason",
    "split_by_name",
    "unreadable_reason",
]

# --------------------------------------------------------------------------------------------
# Names that are never DICOM instances worth sending

_OS_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "__macosx", "ehthumbs.db"})

# Archive safety limits. Real DICOM rarely compresses better than 10:1; a much higher ratio over a
# large total is the signature of a decompression bomb.
MAX_EXTRACT_BYTES = 1 << 40  # 1 TiB
MAX_RATIO = 100
_RATIO_FLOOR = 64 << 20  # the ratio check applies only above 64 MiB of expanded data


def name_skip_reason(rel: str, *, is_dir: bool = False) -> str | None:
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


def unreadable_reason(exc: OSError) -> str:
    """The skip reason of a file or folder that ``exc`` kept from being read."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{UNREADABLE}: permission denied"
    return f"{UNREADABLE}: {exc.strerror or exc}"


def check_member_name(archive: Path, name: str) -> str:
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


def check_expansion(archive: Path, expanded: int, compressed: int, max_bytes: int) -> None:
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


def split_by_name(
    members: Iterable[tuple[str, int]], skipped: list[SkippedFile]
) -> tuple[list[tuple[str, int]], list[SkippedFile]]:
    """Archive members as ``(path, size)`` candidates, apart from those skipped by their name."""
    found: list[tuple[str, int]] = []
    out = list(skipped)
    for rel, size in members:
        reason = name_skip_reason(rel)
        if reason:
            out.append(SkippedFile(rel, reason))
        else:
            found.append((rel, size))
    return found, out
