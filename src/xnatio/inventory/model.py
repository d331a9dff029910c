"""What an inventory holds: the DICOM files found, the files left out, and where they are."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

__all__ = [
    "UNREADABLE",
    "DicomFile",
    "Inventory",
    "ScanProgress",
    "SkippedFile",
    "Source",
    "describe_skipped",
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
        From the file meta information; ``""`` if the file has none. The C-STORE sender then
        names the native syntax the bytes show (:mod:`xnatio.dicom.reader`, rule 5).
    modality
        ``""`` when absent.
    vr_mismatch
        True when the data set's bytes are in the other VR style than ``transfer_syntax_uid``
        says (implicit VR data labelled explicit, or the reverse: a writer's mistake, see
        :mod:`xnatio.dicom.reader`, rule 4). The C-STORE sender then names the native syntax
        the bytes are in, or leaves the file unsent when no transfer syntax can carry it (implicit
        VR under a compressed syntax): a receiver would misread it.
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
    vr_mismatch: bool = False


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file left out of the upload, and why (for example ``"not DICOM"``, ``"DICOMDIR"``).

    A folder's path ends with ``/``. Reasons of files and folders that could not be read (no
    permission, an I/O error) start with ``"unreadable"``; see :attr:`unreadable`.
    """

    path: str
    reason: str

    @property
    def unreadable(self) -> bool:
        """True for a file or folder that could not be read, rather than one not wanted."""
        return self.reason.startswith(UNREADABLE)


UNREADABLE = "unreadable"
"""The start of the reason of every :class:`SkippedFile` that could not be read."""


def describe_skipped(skipped: list[SkippedFile]) -> str:
    """How many files were left out, the unreadable ones counted apart.

    Examples
    --------
    >>> describe_skipped([SkippedFile("a/", "unreadable: permission denied"),
    ...                   SkippedFile("b.txt", "not DICOM")])
    '2 files skipped: 1 unreadable, 1 not DICOM or not wanted'
    >>> describe_skipped([])
    '0 files skipped'
    """
    if not skipped:
        return "0 files skipped"
    unreadable = sum(1 for s in skipped if s.unreadable)
    return (
        f"{len(skipped)} files skipped: {unreadable} unreadable, "
        f"{len(skipped) - unreadable} not DICOM or not wanted"
    )


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
