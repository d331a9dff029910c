"""Byte-level handling of DICOM files for C-STORE: find the data set, splice Patient Comments.

A C-STORE sends the data set without the 128-byte preamble and without the file meta group, in
the transfer syntax named by the file meta. :func:`open_dataset` locates it;
:func:`splice_patient_comments` rewrites only the few bytes around Patient Comments (0010,4000),
so pixel data is never decoded and the source file is never modified. Encodings follow DICOM
PS3.5 section 7 (data elements) and annex A (transfer syntaxes).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from xnatio.dicom.reader import (
    LONG_VRS,
    DicomFormatError,
    HeaderReader,
    Walker,
    dataset_encoding,
    inflate,
)
from xnatio.dicom.syntax import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    Encoding,
)

__all__ = [
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "DatasetHead",
    "DatasetParseError",
    "dataset_chunks",
    "file_meta_header",
    "iter_chunks",
    "open_dataset",
    "splice_patient_comments",
]

PATIENT_COMMENTS = 0x00104000
_PATIENT_GROUP_LENGTH = frozenset({0x00100000})
_LT_MAX = 10240
_CHUNK = 4 * 1024 * 1024
_HEAD_READ = 256 * 1024

# One error for every byte-level problem, whichever reader found it.
DatasetParseError = DicomFormatError


@dataclass(frozen=True, slots=True)
class DatasetHead:
    """Where a file's data set starts and how it is encoded.

    Attributes
    ----------
    transfer_syntax_uid
        From (0002,0010); for a file without one, the native syntax its bytes show
        (:mod:`xnatio.dicom.reader`, rule 5).
    offset
        Byte offset of the data set in the file.
    head
        The first bytes of the file (at least up to :attr:`offset`), already read from the stream.
    encoding
        How the data set is encoded; for a deflated one, before inflating (the VR style of the
        inflated bytes is settled when they are read).
    """

    transfer_syntax_uid: str
    offset: int
    head: bytes
    encoding: Encoding


def open_dataset(stream: BinaryIO) -> DatasetHead:
    """Read the start of a DICOM file and locate its data set.

    Parameters
    ----------
    stream
        The file, positioned at its first byte. It is read forward only (archive members work).

    Returns
    -------
    DatasetHead
        The transfer syntax, the data set offset and the bytes read so far.

    Raises
    ------
    DatasetParseError
        If the file meta group is malformed.
    """
    reader = HeaderReader(stream, first_read=_HEAD_READ, keep=True, strict=False)
    reader.read_meta()
    return DatasetHead(
        reader.effective_syntax_uid, reader.dataset_offset, reader.consumed(), reader.encoding
    )


def _element(tag: int, value: bytes, explicit: bool, little: bool) -> bytes:
    e = "<" if little else ">"
    if explicit:
        return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, b"LT", len(value)) + value
    return struct.pack(e + "HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _splice(walker: Walker, value: bytes) -> tuple[bytes, int]:
    """Splice Patient Comments into the top level of the data set ``walker`` reads (from 0).

    Returns the new first bytes of the data set (up to and with the new element) and the offset
    in the data set where its own bytes resume.
    """
    insert_at, found = walker.walk(0, PATIENT_COMMENTS - 1, _PATIENT_GROUP_LENGTH)
    end = insert_at
    if not walker.at_end(insert_at) and walker.element(insert_at, False)[0] == PATIENT_COMMENTS:
        end = walker.skip(insert_at)
    if not walker.fill(0, end):
        raise DatasetParseError("data set ends in the middle of Patient Comments")
    explicit, little = walker.explicit, walker.little_endian
    new = _element(PATIENT_COMMENTS, value, explicit, little)
    prefix = bytearray(walker.data[:insert_at])
    if 0x00100000 in found:
        # A retired group length (0010,0000) must still add up after the change.
        start, _ = found[0x00100000]
        e = "<" if little else ">"
        (old,) = struct.unpack_from(e + "I", prefix, start)
        struct.pack_into(e + "I", prefix, start, old + len(new) - (end - insert_at))
    return bytes(prefix) + new, end


def _splice_deflated(raw: bytes, head: DatasetHead, value: bytes) -> bytes:
    """Inflate a whole deflated data set, splice Patient Comments, deflate it again."""
    inflated = inflate(raw)
    walker = Walker(lambda _: b"", inflated, keep=True)
    if len(inflated) >= 8:
        encoding, _ = dataset_encoding(inflated[:8], head.encoding)
        walker.set_encoding(encoding.explicit_vr, encoding.little_endian)
    prefix, used = _splice(walker, value)
    packer = zlib.compressobj(6, zlib.DEFLATED, -15)
    return packer.compress(prefix) + packer.compress(inflated[used:]) + packer.flush()


def splice_patient_comments(
    stream: BinaryIO, head: DatasetHead, comment: str
) -> tuple[bytes, Iterator[bytes]]:
    """Data set bytes of a file with Patient Comments (0010,4000) set to ``comment``.

    Only the top level of the data set is walked up to (0010,4000); an existing Patient Comments
    element is replaced, otherwise one is inserted in tag order. A retired group length (0010,0000)
    is kept consistent. Deflated data sets are inflated, changed and deflated again.

    Parameters
    ----------
    stream
        The file, positioned just after ``head.head`` (as left by :func:`open_dataset`).
    head
        The result of :func:`open_dataset` on the same stream.
    comment
        The new value (ASCII). It is padded with a space to an even length.

    Returns
    -------
    tuple
        The first bytes of the new data set, and an iterator over the rest (the file's own bytes).

    Raises
    ------
    DatasetParseError
        If the data set cannot be walked up to (0010,4000) or the comment is too long.
    """
    value = comment.encode("ascii")
    if len(value) % 2:
        value += b" "
    if len(value) > _LT_MAX:
        raise DatasetParseError("Patient Comments longer than 10240 characters")
    if head.encoding.deflated:
        raw = head.head[head.offset :] + b"".join(iter_chunks(stream))
        return _splice_deflated(raw, head, value), iter(())
    walker = Walker(stream.read, head.head[head.offset :], keep=True, first_read=_HEAD_READ)
    walker.set_encoding(head.encoding.explicit_vr, head.encoding.little_endian)
    prefix, used = _splice(walker, value)
    return prefix + walker.data[used:], iter_chunks(stream)


def dataset_chunks(stream: BinaryIO, comment: str | None) -> Iterator[bytes]:
    """The data set of the file in ``stream`` as it goes on the wire, in chunks.

    The file's own bytes after the meta group, with Patient Comments set to ``comment`` unless it
    is ``None``. A deflated data set of odd length gets the single trailing NUL byte that
    PS3.5 annex A.5 asks for, because receivers refuse odd-length fragments.
    """
    head = open_dataset(stream)
    if comment is not None:
        first, rest = splice_patient_comments(stream, head, comment)
    else:
        first, rest = head.head[head.offset :], iter_chunks(stream)
    if not head.encoding.deflated:
        yield first
        yield from rest
        return
    total = 0
    for chunk in (first, *rest):
        total += len(chunk)
        yield chunk
    if total % 2:
        yield b"\x00"


def iter_chunks(stream: BinaryIO, size: int = _CHUNK) -> Iterator[bytes]:
    """Yield the rest of ``stream`` in chunks of at most ``size`` bytes."""
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


def _meta_element(elem: int, vr: bytes, value: bytes) -> bytes:
    if vr in LONG_VRS:
        return struct.pack("<HH2sHI", 0x0002, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, elem, vr, len(value)) + value


def file_meta_header(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    *,
    implementation_class_uid: str,
    implementation_version: str = "",
    source_aet: str = "",
) -> bytes:
    """The 128-byte preamble, ``DICM`` and a file meta group (DICOM PS3.10 section 7.1).

    Put in front of a received data set, it makes a DICOM file of it; the data set itself is
    not touched. The group is explicit VR little endian, as the standard requires.

    Parameters
    ----------
    sop_class_uid, sop_instance_uid
        Media Storage SOP Class and Instance UIDs (0002,0002) and (0002,0003).
    transfer_syntax_uid
        The data set's transfer syntax (0002,0010).
    implementation_class_uid, implementation_version
        Who wrote the file (0002,0012) and (0002,0013).
    source_aet
        The AE title the data came from (0002,0016), left out when empty.

    Examples
    --------
    >>> head = file_meta_header("1.2", "1.2.3", EXPLICIT_VR_LITTLE_ENDIAN,
    ...                         implementation_class_uid="2.25.1")
    >>> head[128:132], len(head) % 2
    (b'DICM', 0)
    """

    def ui(value: str) -> bytes:
        raw = value.encode("ascii")
        return raw + b"\x00" if len(raw) % 2 else raw

    def text(value: str) -> bytes:
        raw = value.encode("ascii", "replace")
        return raw + b" " if len(raw) % 2 else raw

    body = _meta_element(0x0001, b"OB", b"\x00\x01")
    body += _meta_element(0x0002, b"UI", ui(sop_class_uid))
    body += _meta_element(0x0003, b"UI", ui(sop_instance_uid))
    body += _meta_element(0x0010, b"UI", ui(transfer_syntax_uid))
    body += _meta_element(0x0012, b"UI", ui(implementation_class_uid))
    if implementation_version:
        body += _meta_element(0x0013, b"SH", text(implementation_version[:16]))
    if source_aet:
        body += _meta_element(0x0016, b"AE", text(source_aet[:16]))
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return bytes(128) + b"DICM" + length + body
