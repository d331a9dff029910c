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

__all__ = [
    "DatasetHead",
    "DatasetParseError",
    "dataset_chunks",
    "file_meta_header",
    "open_dataset",
    "splice_patient_comments",
]

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

PATIENT_COMMENTS = 0x00104000
_LT_MAX = 10240
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
# VRs with a 2-byte reserved field and a 4-byte length in explicit VR (PS3.5 table 7.1-1).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_CHUNK = 4 * 1024 * 1024
_HEAD_READ = 256 * 1024


class DatasetParseError(ValueError):
    """The bytes do not follow the DICOM encoding rules where we needed to read them."""


class _NeedMore(Exception):
    """The buffer ended in the middle of an element; read more and try again."""


@dataclass(frozen=True, slots=True)
class DatasetHead:
    """Where a file's data set starts and how it is encoded.

    Attributes
    ----------
    transfer_syntax_uid
        From (0002,0010); implicit VR little endian when the file has no meta group.
    offset
        Byte offset of the data set in the file.
    head
        The first bytes of the file (at least up to :attr:`offset`), already read from the stream.
    """

    transfer_syntax_uid: str
    offset: int
    head: bytes


def _read_at_least(stream: BinaryIO, buf: bytes, size: int) -> bytes:
    """Extend ``buf`` from ``stream`` until it holds ``size`` bytes or the stream ends."""
    parts = [buf]
    have = len(buf)
    while have < size:
        chunk = stream.read(max(size - have, _HEAD_READ))
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


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
    head = _read_at_least(stream, b"", _HEAD_READ)
    if head[128:132] == b"DICM":
        pos = 132
    elif head[:2] == b"\x02\x00" and head[4:6].isalpha():
        pos = 0  # meta group without a preamble
    else:
        return DatasetHead(_sniff(head), 0, head)
    transfer_syntax = ""
    # The meta group is always explicit VR little endian (PS3.10 section 7.1).
    while True:
        if len(head) < pos + 8:
            head = _read_at_least(stream, head, pos + 8)
            if len(head) < pos + 8:
                break
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            break
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            head = _read_at_least(stream, head, pos + 12)
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if length == _UNDEFINED:
            raise DatasetParseError("undefined length in the file meta group")
        head = _read_at_least(stream, head, start + length)
        if len(head) < start + length:
            raise DatasetParseError("file ends inside the file meta group")
        if elem == 0x0010:
            transfer_syntax = (
                head[start : start + length].rstrip(b"\x00 ").decode("ascii", "replace")
            )
        pos = start + length
    return DatasetHead(transfer_syntax or IMPLICIT_VR_LITTLE_ENDIAN, pos, head)


def _sniff(head: bytes) -> str:
    """The encoding of a data set that has no file meta group, guessed from its first element."""
    if len(head) < 8:
        return IMPLICIT_VR_LITTLE_ENDIAN
    vr = head[4:6]
    if not (vr.isalpha() and vr.isupper()):
        return IMPLICIT_VR_LITTLE_ENDIAN
    # Groups are small numbers (0x0008 first, usually): the byte order that reads smaller wins.
    (little,) = struct.unpack_from("<H", head, 0)
    (big,) = struct.unpack_from(">H", head, 0)
    return EXPLICIT_VR_LITTLE_ENDIAN if little <= big else EXPLICIT_VR_BIG_ENDIAN


class _Walker:
    """Walks data elements in one encoding; raises :class:`_NeedMore` at the buffer's end."""

    def __init__(self, buf: bytes, explicit: bool, little: bool) -> None:
        self.buf = buf
        self.explicit = explicit
        self.e = "<" if little else ">"

    def _need(self, end: int) -> None:
        if end > len(self.buf):
            raise _NeedMore

    def tag(self, pos: int) -> int:
        self._need(pos + 4)
        group, elem = struct.unpack_from(self.e + "HH", self.buf, pos)
        return int(group) << 16 | int(elem)

    def header(self, pos: int, explicit: bool) -> tuple[int, int, bytes]:
        """Return (value start, value length, VR) of the element at ``pos``."""
        tag = self.tag(pos)
        if tag in (_ITEM, _ITEM_END, _SEQ_END) or not explicit:
            self._need(pos + 8)
            (length,) = struct.unpack_from(self.e + "I", self.buf, pos + 4)
            return pos + 8, int(length), b""
        self._need(pos + 8)
        vr = self.buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            self._need(pos + 12)
            (length,) = struct.unpack_from(self.e + "I", self.buf, pos + 8)
            return pos + 12, int(length), vr
        if not vr.isalpha():
            raise DatasetParseError(f"bad VR {vr!r} at offset {pos}")
        (length,) = struct.unpack_from(self.e + "H", self.buf, pos + 6)
        return pos + 8, int(length), vr

    def skip_element(self, pos: int, explicit: bool) -> int:
        """Return the offset just past the element at ``pos``."""
        start, length, vr = self.header(pos, explicit)
        if length != _UNDEFINED:
            return start + length
        # An undefined-length UN holds implicit VR little endian content (PS3.5 section 6.2.2).
        return self._skip_items(start, explicit and vr != b"UN")

    def _skip_items(self, pos: int, explicit: bool) -> int:
        while True:
            tag = self.tag(pos)
            start, length, _ = self.header(pos, explicit)
            if tag == _SEQ_END:
                return start
            if tag != _ITEM:
                raise DatasetParseError(f"expected an item at offset {pos}, found {tag:08X}")
            if length != _UNDEFINED:
                pos = start + length
                continue
            pos = start
            while self.tag(pos) != _ITEM_END:
                pos = self.skip_element(pos, explicit)
            pos += 8


def _element(tag: int, value: bytes, explicit: bool, little: bool) -> bytes:
    e = "<" if little else ">"
    if explicit:
        return struct.pack(e + "HH2sH", tag >> 16, tag & 0xFFFF, b"LT", len(value)) + value
    return struct.pack(e + "HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _splice(
    buf: bytes, explicit: bool, little: bool, value: bytes, complete: bool
) -> tuple[bytes, int]:
    """Splice Patient Comments into the top level of ``buf`` (a data set prefix).

    Returns the new prefix and how many bytes of ``buf`` it replaces. ``complete`` says that
    ``buf`` is the whole data set, so reaching its end means "insert at the end".
    """
    walker = _Walker(buf, explicit, little)
    pos = 0
    group_length_at = -1
    while pos < len(buf) or not complete:
        tag = walker.tag(pos)
        if tag >= PATIENT_COMMENTS:
            break
        if tag == 0x00100000:
            group_length_at = pos
        pos = walker.skip_element(pos, explicit)
    insert_at = pos
    end = pos
    if pos < len(buf) and walker.tag(pos) == PATIENT_COMMENTS:
        end = walker.skip_element(pos, explicit)
    new = _element(PATIENT_COMMENTS, value, explicit, little)
    prefix = bytearray(buf[:insert_at])
    if group_length_at >= 0:
        # A retired group length (0010,0000) must still add up after the change.
        start, _, _ = walker.header(group_length_at, explicit)
        e = "<" if little else ">"
        (old,) = struct.unpack_from(e + "I", prefix, start)
        struct.pack_into(e + "I", prefix, start, old + len(new) - (end - insert_at))
    return bytes(prefix) + new, end


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
    ts = head.transfer_syntax_uid
    explicit = ts != IMPLICIT_VR_LITTLE_ENDIAN
    little = ts != EXPLICIT_VR_BIG_ENDIAN
    if ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        raw = head.head[head.offset :] + stream.read()
        try:
            # decompressobj tolerates the trailing NUL pad byte after the deflate stream.
            inflater = zlib.decompressobj(-15)
            inflated = inflater.decompress(raw) + inflater.flush()
        except zlib.error as exc:
            raise DatasetParseError(f"cannot inflate deflated data set: {exc}") from exc
        try:
            prefix, used = _splice(inflated, True, True, value, True)
        except (_NeedMore, struct.error) as exc:
            raise DatasetParseError("deflated data set ends in the middle of an element") from exc
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = packer.compress(prefix) + packer.compress(inflated[used:]) + packer.flush()
        return body, iter(())
    buf = head.head[head.offset :]
    complete = False
    while True:
        try:
            prefix, used = _splice(buf, explicit, little, value, complete)
            break
        except _NeedMore:
            if complete:
                raise DatasetParseError("data set ends in the middle of an element") from None
            more = stream.read(max(len(buf), _HEAD_READ))
            if more:
                buf += more
            else:
                complete = True
        except struct.error as exc:
            raise DatasetParseError(str(exc)) from exc
    return prefix + buf[used:], iter_chunks(stream)


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
    if head.transfer_syntax_uid != DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
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
    if vr in _LONG_VRS:
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
