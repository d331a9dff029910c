"""The one DICOM header reader: a streaming element walker and the rules for finding a data set.

The inventory, the sandbox's importer and the C-STORE splicer all read DICOM through this module,
so they agree on every file. Only element headers are decoded (PS3.5 section 7.1): values are
kept for the tags asked for, everything else (nested sequences, pixel data) is skipped, and the
stream is read forward only, so archive members and network streams work.

Where the data set starts, and how it is encoded
-----------------------------------------------
1. **Preamble.** If bytes 128-131 are ``DICM``, the file meta group starts at byte 132
   (PS3.10 section 7.1). Otherwise the file starts at byte 0, with or without a meta group.
2. **File meta group.** Present when the first tag (read little endian) is in group 0002. It is
   explicit VR little endian by the standard; a meta group whose first element carries no VR is
   read as implicit VR, as some old writers made it. It ends at the first tag of another group.
3. **Transfer syntax.** (0002,0010) gives the byte order and whether the data set is deflated
   (:func:`xnatio.dicom.syntax.classify`).
4. **VR style from the bytes.** Writers exist that label an implicit VR data set as explicit (and
   the reverse), so the first data element decides: a known VR at bytes 4-5 means explicit VR.
   When that contradicts the transfer syntax, the bytes win only if the first tag then belongs
   to a group a data set can start with (0003-0008); otherwise the transfer syntax stands.
5. **No transfer syntax** (no meta group, an empty (0002,0010), or a private UID): the VR style
   comes from the bytes as in 4; an explicit VR data set is big endian when its first group reads
   as 0003-0008 only in big endian; implicit VR is always little endian.
6. **Is it DICOM at all?** A file with a preamble or a meta group is. A file with neither is DICOM
   only if its first group (in the byte order of 5) is 0003-0008: data sets start with group
   0008 (or 0004 in a DICOMDIR), so stray binary and text files are refused with
   :class:`NotDicomError`. The inventory and the sandbox apply this verdict; the C-STORE splicer
   reads with ``strict=False``, because it only sends files the inventory accepted and must not
   judge them a second time. A meta group with no data set after it is an error.
7. **Deflated** data sets are inflated on the fly and read like any other (rule 4 applies to the
   inflated bytes).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Container
from dataclasses import dataclass, replace
from typing import BinaryIO

from xnatio.dicom.syntax import Encoding, classify, native_uid

__all__ = [
    "ITEM",
    "ITEM_END",
    "LONG_VRS",
    "SEQUENCE_END",
    "UNDEFINED_LENGTH",
    "VRS",
    "DicomFormatError",
    "Header",
    "HeaderReader",
    "NotDicomError",
    "Walker",
    "dataset_encoding",
    "inflate",
    "read_header",
    "text",
]

# VRs whose explicit encoding has two reserved bytes and a 4-byte length (PS3.5 table 7.1-1).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Every VR of PS3.5 table 6.2-1.
VRS = LONG_VRS | frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED_LENGTH = 0xFFFFFFFF
TRANSFER_SYNTAX_TAG = 0x00020010

_FIRST_GROUPS = range(0x0003, 0x0009)  # groups a data set can start with (rules 4-6)
_MAX_DEPTH = 32
_CHUNK = 65536
_LE_HEAD = struct.Struct("<HHI")
_BE_HEAD = struct.Struct(">HHI")
_LE_U32 = struct.Struct("<I")
_BE_U32 = struct.Struct(">I")


class DicomFormatError(ValueError):
    """The bytes do not follow the DICOM encoding where they had to be read."""


class NotDicomError(DicomFormatError):
    """Neither a preamble, a meta group nor a plausible data set start: not a DICOM file."""


def text(raw: bytes) -> str:
    """A value as text: latin-1 (one character per byte), padding and white space removed."""
    return raw.decode("latin-1").strip("\x00 \t\r\n\f\v")


def dataset_encoding(head: bytes, declared: Encoding | None) -> tuple[Encoding, bool]:
    """The encoding of a data set from its first 8 bytes (rules 4 and 5 of the module docstring).

    Parameters
    ----------
    head
        At least the first 8 bytes of the data set.
    declared
        What the transfer syntax says, or ``None`` without a (known) transfer syntax.

    Returns
    -------
    tuple
        The encoding to read the data set with, and whether its first tag is in a group a data
        set can start with (rule 6).
    """
    g_le = head[0] | head[1] << 8
    g_be = head[0] << 8 | head[1]
    explicit = head[4:6] in VRS
    if declared is not None:
        plausible = (g_le if declared.little_endian else g_be) in _FIRST_GROUPS
        if explicit != declared.explicit_vr and plausible:
            return replace(declared, explicit_vr=explicit), plausible
        return declared, plausible
    little = not (explicit and g_be in _FIRST_GROUPS and g_le not in _FIRST_GROUPS)
    plausible = (g_le if little else g_be) in _FIRST_GROUPS
    return Encoding(explicit_vr=explicit, little_endian=little), plausible


class Walker:
    """Data elements of one encoding, read forward from a stream and addressed by byte offset.

    Offsets are absolute: 0 is the first byte of ``head``. With ``keep`` every byte read stays in
    :attr:`data` (to pass them on, or to splice); without it, bytes before the element being read
    are dropped, so skipping a large value costs no memory.

    Parameters
    ----------
    read
        Returns up to ``n`` more bytes, ``b""`` at the end.
    head
        Bytes already read.
    keep
        Keep every byte read in :attr:`data`.
    first_read, chunk
        Bytes asked for by the first read and by later ones (more when an element needs more).
    limit
        With ``keep``, refuse to hold more than this many bytes.
    """

    __slots__ = (
        "_chunk",
        "_head",
        "_limit",
        "_read",
        "_u32",
        "base",
        "data",
        "eof",
        "explicit",
        "extra",
        "keep",
        "little_endian",
    )

    def __init__(
        self,
        read: Callable[[int], bytes],
        head: bytes = b"",
        *,
        keep: bool,
        first_read: int = _CHUNK,
        chunk: int = _CHUNK,
        limit: int | None = None,
    ) -> None:
        self._read = read
        self.data = head
        self.base = 0
        self.keep = keep
        self.eof = False
        self.extra: list[bytes] = []  # raw bytes handed out by read_more() (kept only)
        self._chunk = (first_read, chunk)
        self._limit = limit
        self.set_encoding(True, True)

    def set_encoding(self, explicit: bool, little: bool) -> None:
        """Read elements in this VR style and byte order from now on."""
        self.explicit = explicit
        self.little_endian = little
        self._head = _LE_HEAD if little else _BE_HEAD
        self._u32 = _LE_U32 if little else _BE_U32

    # -- bytes -----------------------------------------------------------------------------------

    def fill(self, start: int, end: int) -> bool:
        """Make :attr:`data` cover offsets up to ``end``; False if the stream ends first.

        Without ``keep``, bytes before ``start`` may be dropped (and skipped unread).
        """
        data = self.data
        if end <= self.base + len(data):
            return True
        if self.eof:
            return False
        if not self.keep and start > self.base:
            if not self._drop_before(start):
                return False
            data = self.data
        parts = [data]
        size = len(data)
        want = end - self.base
        while size < want:
            first, later = self._chunk
            self._chunk = (later, later)
            chunk = self._read(max(want - size, first, size if self.keep else 0))
            if not chunk:
                self.eof = True
                break
            parts.append(chunk)
            size += len(chunk)
        self.data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self.keep and self._limit is not None and size > self._limit:
            raise DicomFormatError(f"DICOM header larger than {self._limit} bytes")
        return size >= want

    def _drop_before(self, start: int) -> bool:
        """Forget bytes before ``start``, reading past any not yet read; False at the end."""
        have = self.base + len(self.data)
        if start < have:
            self.data = self.data[start - self.base :]
            self.base = start
            return True
        self.data = b""
        self.base = have
        while self.base < start:
            chunk = self._read(min(start - self.base, 1 << 20))
            if not chunk:
                self.eof = True
                return False
            self.base += len(chunk)
        return True

    def read_more(self) -> bytes:
        """The next chunk of the stream after :attr:`data` (recorded in :attr:`extra` if kept)."""
        if self.eof:
            return b""
        chunk = self._read(self._chunk[1])
        if not chunk:
            self.eof = True
        elif self.keep:
            self.extra.append(chunk)
            if self._limit is not None and len(self.data) + len(chunk) > self._limit:
                raise DicomFormatError(f"DICOM header larger than {self._limit} bytes")
        return chunk

    def value(self, start: int, length: int) -> bytes:
        """The ``length`` bytes at ``start``."""
        if not self.fill(start, start + length):
            raise DicomFormatError(f"data ends inside the value at byte {start}")
        i = start - self.base
        return self.data[i : i + length]

    # -- elements --------------------------------------------------------------------------------

    def element(
        self, pos: int, explicit: bool, last: int = 0xFFFFFFFF
    ) -> tuple[int, bytes, int, int]:
        """``(tag, VR, value offset, value length)`` of the element at ``pos``.

        The VR is ``b""`` in implicit VR and for items and delimiters. A tag above ``last`` is
        returned as ``(tag, b"", pos, 0)`` without looking further (it may be in another
        encoding, such as the first data set element after the meta group).
        """
        i = pos - self.base
        data = self.data
        if i + 12 > len(data):
            if not self.fill(pos, pos + 8):
                raise DicomFormatError(f"data ends inside the element header at byte {pos}")
            data = self.data
            i = pos - self.base
        group, elem, length = self._head.unpack_from(data, i)
        tag = group << 16 | elem
        if tag > last:
            return tag, b"", pos, 0
        if not explicit or group == 0xFFFE:
            return tag, b"", pos + 8, length
        vr = data[i + 4 : i + 6]
        if vr in LONG_VRS:
            if i + 12 > len(data):
                if not self.fill(pos, pos + 12):
                    raise DicomFormatError(f"data ends inside the element header at byte {pos}")
                data = self.data
                i = pos - self.base
            return tag, vr, pos + 12, self._u32.unpack_from(data, i + 8)[0]
        if vr in VRS:
            return tag, vr, pos + 8, length >> 16 if self.little_endian else length & 0xFFFF
        raise DicomFormatError(f"bad VR {vr!r} in ({group:04X},{elem:04X}) at byte {pos}")

    def at_end(self, pos: int) -> bool:
        """True when no element header can start at ``pos`` because the stream has ended."""
        return not self.fill(pos, pos + 1)

    def walk(
        self, pos: int, last: int, wanted: Container[int]
    ) -> tuple[int, dict[int, tuple[int, bytes]]]:
        """Read top-level elements from ``pos`` up to the first tag above ``last`` (or the end).

        Returns
        -------
        tuple
            The offset where reading stopped (the first element above ``last``, or the end of
            the data), and ``tag -> (value offset, value)`` for the ``wanted`` tags met.
        """
        found: dict[int, tuple[int, bytes]] = {}
        explicit = self.explicit
        while True:
            if pos - self.base + 8 > len(self.data) and self.at_end(pos):
                return pos, found
            tag, vr, start, length = self.element(pos, explicit, last)
            if tag > last:
                return pos, found
            if length == UNDEFINED_LENGTH:
                # An undefined-length UN holds implicit VR little endian items (PS3.5 6.2.2).
                pos = self._skip_items(start, explicit and vr != b"UN", 0)
            elif tag in wanted:
                found[tag] = (start, self.value(start, length))
                pos = start + length
            else:
                pos = start + length

    def skip(self, pos: int) -> int:
        """The offset just past the (top-level) element at ``pos``."""
        _, vr, start, length = self.element(pos, self.explicit)
        if length != UNDEFINED_LENGTH:
            return start + length
        return self._skip_items(start, self.explicit and vr != b"UN", 0)

    def _skip_items(self, pos: int, explicit: bool, depth: int) -> int:
        """Skip the items of an undefined-length value; return the offset after its delimiter."""
        if depth > _MAX_DEPTH:
            raise DicomFormatError("sequences nested too deeply")
        while True:
            tag, _, start, length = self.element(pos, explicit)
            if tag == SEQUENCE_END:
                return start
            if tag != ITEM:
                raise DicomFormatError(f"expected an item at byte {pos}, found {tag:08X}")
            pos = start + length
            if length != UNDEFINED_LENGTH:
                continue
            # An item of undefined length: a nested data set up to its Item Delimitation Item.
            pos = start
            while True:
                tag, vr, start, length = self.element(pos, explicit)
                if tag == ITEM_END:
                    pos = start
                    break
                if length == UNDEFINED_LENGTH:
                    pos = self._skip_items(start, explicit and vr != b"UN", depth + 1)
                else:
                    pos = start + length


def inflate(raw: bytes) -> bytes:
    """Inflate a whole deflated data set (PS3.5 annex A.5); a trailing pad byte is ignored.

    Raises
    ------
    DicomFormatError
        The bytes are not a raw deflate stream, or it ends before its last block.
    """
    z = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = z.decompress(raw) + z.flush()
    except zlib.error as exc:
        raise DicomFormatError(f"bad deflated data set: {exc}") from None
    if not z.eof:
        raise DicomFormatError("the deflated data set ends before its last block")
    return out


class _Inflater:
    """Reads the raw deflate stream that follows ``start`` in ``raw`` (PS3.5 annex A.5)."""

    def __init__(self, raw: Walker, start: int) -> None:
        self._raw = raw
        self._pending = raw.data[start - raw.base :]
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)

    def read(self, size: int) -> bytes:
        z = self._z
        while not z.eof:
            if not self._pending:
                self._pending = self._raw.read_more()
                if not self._pending:
                    raise DicomFormatError("the deflated data set ends before its last block")
            try:
                out = z.decompress(self._pending, max(size, 1))
            except zlib.error as exc:
                raise DicomFormatError(f"bad deflated data set: {exc}") from None
            self._pending = z.unconsumed_tail
            if out:
                return out
        return b""


@dataclass(frozen=True, slots=True)
class Header:
    """What :func:`read_header` found.

    Attributes
    ----------
    preamble
        The file has the 128-byte preamble and ``DICM``.
    meta
        Every element of the file meta group, tag -> raw value.
    transfer_syntax_uid
        (0002,0010), ``""`` when the file has none.
    encoding
        How the data set is encoded (after the rules of the module docstring).
    dataset_offset
        Where the data set starts in the file.
    values
        Tag -> raw value of the wanted top-level data set elements found.
    """

    preamble: bool
    meta: dict[int, bytes]
    transfer_syntax_uid: str
    encoding: Encoding
    dataset_offset: int
    values: dict[int, bytes]


class HeaderReader:
    """Reads a DICOM stream in two steps: :meth:`read_meta`, then :meth:`read_dataset`.

    Parameters
    ----------
    stream
        Positioned at the first byte of the file; need not be seekable.
    first_read
        Bytes asked for by the first read; most headers fit in 8-16 KiB.
    keep
        Keep every byte read, for :meth:`consumed`.
    limit
        With ``keep``, refuse headers longer than this (:class:`DicomFormatError`).
    strict
        Refuse a file without preamble and meta group whose first group is not one a data set
        starts with (rule 6 of the module docstring).

    Attributes
    ----------
    preamble
        Set by :meth:`read_meta` as soon as it is known (also when it raises later).
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        first_read: int = 8192,
        keep: bool = False,
        limit: int | None = None,
        strict: bool = True,
    ) -> None:
        self._raw = Walker(stream.read, keep=keep, first_read=first_read, limit=limit)
        self._strict = strict
        self.preamble = False
        self.meta: dict[int, bytes] = {}
        self.transfer_syntax_uid = ""
        self.dataset_offset = 0
        self.encoding = Encoding(explicit_vr=False, little_endian=True)

    def read_meta(self) -> None:
        """Read the preamble and the file meta group, and settle the data set's encoding.

        Raises
        ------
        NotDicomError
            Too short, or (when strict) no preamble, no meta group and no plausible data set
            start.
        DicomFormatError
            A malformed meta group, or none but a meta group in the file.
        """
        raw = self._raw
        self.preamble = raw.fill(0, 132) and raw.data[128:132] == b"DICM"
        pos = 132 if self.preamble else 0
        if not raw.fill(pos, pos + 8):
            if self.preamble:
                raise DicomFormatError("no data set after the preamble")
            raise NotDicomError("too short for DICOM")
        has_meta = _LE_HEAD.unpack_from(raw.data, pos - raw.base)[0] == 0x0002
        if has_meta:
            pos = self._read_meta_group(pos)
            if raw.at_end(pos):
                raise DicomFormatError("no data set after the file meta information")
        self.dataset_offset = pos
        self.transfer_syntax_uid = text(self.meta.get(TRANSFER_SYNTAX_TAG, b""))
        declared = classify(self.transfer_syntax_uid)
        if declared is not None and declared.deflated:
            self.encoding = declared  # the VR style is settled on the inflated bytes
            return
        if raw.fill(pos, pos + 8):
            i = pos - raw.base
            self.encoding, plausible = dataset_encoding(raw.data[i : i + 8], declared)
        else:
            plausible = False
            self.encoding = declared or self.encoding
        if self._strict and not (self.preamble or has_meta or plausible):
            raise NotDicomError("no preamble, no file meta group and no data set start")

    def _read_meta_group(self, pos: int) -> int:
        raw = self._raw
        i = pos - raw.base
        explicit = raw.data[i + 4 : i + 6] in VRS
        while raw.fill(pos, pos + 8):
            if _LE_HEAD.unpack_from(raw.data, pos - raw.base)[0] != 0x0002:
                break  # the data set, possibly in another encoding
            tag, _, start, length = raw.element(pos, explicit)
            if length == UNDEFINED_LENGTH:
                raise DicomFormatError("undefined length in the file meta group")
            self.meta[tag] = raw.value(start, length)
            pos = start + length
        return pos

    def dataset_walker(self) -> Walker:
        """A walker positioned for the data set (inflating a deflated one); after read_meta."""
        if not self.encoding.deflated:
            raw = self._raw
            raw.set_encoding(self.encoding.explicit_vr, self.encoding.little_endian)
            return raw
        inflated = Walker(_Inflater(self._raw, self.dataset_offset).read, keep=False)
        if inflated.fill(0, 8):
            encoding, _ = dataset_encoding(inflated.data[:8], self.encoding)
            inflated.set_encoding(encoding.explicit_vr, encoding.little_endian)
        return inflated

    def read_dataset(self, last: int, wanted: Container[int]) -> dict[int, bytes]:
        """Top-level data set values of the ``wanted`` tags, reading up to tag ``last``.

        Raises
        ------
        DicomFormatError
            The data set ends inside an element, or does not follow its encoding.
        """
        walker = self.dataset_walker()
        start = 0 if self.encoding.deflated else self.dataset_offset
        _, found = walker.walk(start, last, wanted)
        return {tag: value for tag, (_, value) in found.items()}

    def consumed(self) -> bytes:
        """Every byte read from the stream so far (with ``keep`` only)."""
        raw = self._raw
        if not raw.keep:
            raise RuntimeError("consumed() needs a HeaderReader made with keep=True")
        return raw.data + b"".join(raw.extra) if raw.extra else raw.data

    @property
    def effective_syntax_uid(self) -> str:
        """(0002,0010), or the native syntax recognised from the bytes when there is none."""
        return self.transfer_syntax_uid or native_uid(
            self.encoding.explicit_vr, self.encoding.little_endian
        )


def read_header(
    stream: BinaryIO,
    wanted: Container[int],
    last: int,
    *,
    first_read: int = 8192,
) -> Header:
    """Read the meta group and the ``wanted`` top-level data set elements up to tag ``last``.

    Parameters
    ----------
    stream
        Positioned at the first byte of the file; read forward only.
    wanted
        Tags (``0xGGGGEEEE``) whose raw values to return.
    last
        Reading stops at the first top-level tag above this one.
    first_read
        Bytes asked for by the first read.

    Raises
    ------
    DicomFormatError
        See :meth:`HeaderReader.read_meta` and :meth:`HeaderReader.read_dataset`.
    """
    reader = HeaderReader(stream, first_read=first_read)
    reader.read_meta()
    values = reader.read_dataset(last, wanted)
    return Header(
        reader.preamble,
        reader.meta,
        reader.transfer_syntax_uid,
        reader.encoding,
        reader.dataset_offset,
        values,
    )
