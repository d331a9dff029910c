"""The DICOM header values the sandbox's import path needs, read with the shared reader.

XNAT reads each incoming object only up to a stop tag (docs/xnat-behaviour.md §3.4 step 1) and
copies the rest of the stream. pydicom's reader costs around a millisecond per file, which alone
would use most of a core at the required 1,000 files/s, so the import reads element headers with
:mod:`xnatio.dicom.reader` (the reader the inventory and the C-STORE sender use, with the same
answer for every transfer syntax and for files without a meta group). It keeps only the string
values the importer needs and skips everything else, including nested sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from xnatio.dicom.reader import DicomFormatError, HeaderReader, text
from xnatio.xnat import naming

__all__ = [
    "DicomHeader",
    "HeaderError",
    "read_header",
    "scan_folder_name",
    "template_file_name",
]

# The highest tag the importer needs (StudyComments); reading stops at the first tag above it.
STOP_TAG = 0x00324000

_WANTED: dict[int, str] = {
    0x00080016: "sop_class_uid",
    0x00080018: "sop_instance_uid",
    0x00080020: "study_date",
    0x00080030: "study_time",
    0x00080050: "accession_number",
    0x00080060: "modality",
    0x00081030: "study_description",
    0x0008103E: "series_description",
    0x00100010: "patient_name",
    0x00100020: "patient_id",
    0x001021B0: "additional_patient_history",
    0x00104000: "patient_comments",
    0x0020000D: "study_instance_uid",
    0x0020000E: "series_instance_uid",
    0x00200011: "series_number",
    0x00200013: "instance_number",
    0x00324000: "study_comments",
}

_WANTED_TAGS = frozenset(_WANTED)
_FIRST_READ = 16 * 1024
_MAX_HEADER = 64 * 1024 * 1024

# The bytes are not a DICOM object the reader can parse: the shared reader's error.
HeaderError = DicomFormatError


@dataclass(frozen=True, slots=True)
class DicomHeader:
    """The header values the import path uses; ``""`` when an element is absent.

    ``sop_class_uid`` is the dataset-level SOP Class UID only: XNAT ignores the file meta's
    MediaStorageSOPClassUID, which is why a DICOMDIR is refused.
    """

    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    modality: str = ""
    study_description: str = ""
    series_description: str = ""
    patient_name: str = ""
    patient_id: str = ""
    additional_patient_history: str = ""
    patient_comments: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    series_number: str = ""
    instance_number: str = ""
    study_comments: str = ""
    transfer_syntax_uid: str = ""
    extra: dict[int, str] = field(default_factory=dict)


def read_header(
    stream: BinaryIO, extra_tags: frozenset[int] = frozenset()
) -> tuple[DicomHeader, bytes]:
    """Read a DICOM header from ``stream``.

    Parameters
    ----------
    stream
        Positioned at the first byte of the object; need not be seekable.
    extra_tags
        Further top-level tags (as ``0xGGGGEEEE``) whose values to keep in
        :attr:`DicomHeader.extra`, for custom routing rules; reading then stops after the
        highest of them.

    Returns
    -------
    tuple
        The header values, and every byte consumed from the stream so far (write these first,
        then copy the rest of the stream).

    Raises
    ------
    HeaderError
        If the bytes are not a DICOM object the reader understands.
    """
    reader = HeaderReader(stream, first_read=_FIRST_READ, keep=True, limit=_MAX_HEADER)
    reader.read_meta()
    last = max(STOP_TAG, *extra_tags) if extra_tags else STOP_TAG
    raw = reader.read_dataset(last, _WANTED_TAGS | extra_tags if extra_tags else _WANTED_TAGS)
    values = {_WANTED[tag]: text(value) for tag, value in raw.items() if tag in _WANTED}
    extra = {tag: text(value) for tag, value in raw.items() if tag in extra_tags}
    header = DicomHeader(transfer_syntax_uid=reader.transfer_syntax_uid, extra=extra, **values)
    return header, reader.consumed()


def template_file_name(h: DicomHeader) -> str:
    """XNAT's default stored file name: study UID, series and instance numbers, hash.

    See docs/xnat-behaviour.md §4.3.
    """
    return naming.template_file_name(
        h.study_instance_uid,
        h.series_number,
        h.instance_number,
        h.sop_class_uid,
        h.sop_instance_uid,
    )


def scan_folder_name(h: DicomHeader) -> str:
    """The scan folder (= scan ID) for an object (docs/xnat-behaviour.md §3.4 step 8)."""
    return naming.scan_folder(h.series_number, h.series_instance_uid)
