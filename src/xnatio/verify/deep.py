"""Deep verification: every data element of a stored file against the local file, streaming.

Both files are read forward, element by element, in step: values are compared in chunks, so
neither file is held in memory, and nested sequences are compared item by item (XNAT re-encodes
the start of the data set, and may write a sequence with another length encoding, §3.4 step 11).
What XNAT itself changes does not count as a difference (docs/xnat-behaviour.md §3.4, §6.2):

- the file meta information (group 0002), rewritten when the file is stored;
- group length elements (gggg,0000) and data set trailing padding (FFFC,FFFC);
- padding at the end of a value (spaces or NULs);
- Patient Comments (0010,4000) holding the routing string of the session (C-STORE routing);
- Pixel Data that XNAT stored in another transfer syntax (decompressed or compressed on
  arrival): it is not compared, and a note says so.

Anything else an uploader expects to change (anonymisation) is described by an
:data:`ExpectedEdits` callable: for an instance, the top-level elements and the values the
stored file should hold instead (``None``: the element is removed; ``...``: any value or none,
such as the record XNAT keeps of the scripts it applied).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import BinaryIO, cast

from xnatio.dicom.reader import (
    ITEM,
    ITEM_END,
    SEQUENCE_END,
    UNDEFINED_LENGTH,
    DicomFormatError,
    HeaderReader,
    Walker,
)
from xnatio.dicom.syntax import classify
from xnatio.inventory import DicomFile

__all__ = ["CompareAgain", "DeepResult", "ExpectedEdits", "compare_streams"]

ExpectedValue = bytes | None | EllipsisType
ExpectedEdits = Callable[[DicomFile], Mapping[int, ExpectedValue]]
"""For a local instance: top-level tag -> the raw value the stored file should hold (None:
removed; ``...``: anything, or nothing). Differences in those elements are then checked against
this, not the local file."""

_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_PADDING = 0xFFFCFFFC
_PATIENT_COMMENTS = 0x00104000
_CHUNK = 1 << 20
_SMALL = 65536  # values up to this size may be compared without their padding
_TOP, _UNDEFINED = -1, -2  # ends of a level: the end of the data, or an item delimiter
_MAX_DEPTH = 32
_MAX_LISTED = 20
_ITEM_START = b"\xfe\xff\x00\xe0"  # an Item tag, little endian
_KEEP = 1 << 20  # bytes of each file kept while they compare equal, for a second look


@dataclass
class DeepResult:
    """What an element-by-element comparison found.

    Attributes
    ----------
    differences
        One line per differing element (``(gggg,eeee)`` paths; values are not shown, they may
        identify a patient).
    notes
        What was not compared, and why.
    elements
        Elements compared.
    """

    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elements: int = 0
    more: int = 0

    def add(self, line: str) -> None:
        if len(self.differences) < _MAX_LISTED:
            self.differences.append(line)
        else:
            self.more += 1

    def summary(self) -> str:
        """The differences as one line."""
        tail = f" and {self.more} more" if self.more else ""
        return "; ".join(self.differences) + tail


@dataclass(frozen=True, slots=True)
class _Head:
    tag: int
    vr: bytes
    start: int
    length: int


class _Side:
    """One file's data set, read forward."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        reader = HeaderReader(stream, first_read=_SMALL, strict=False)
        reader.read_meta()
        self.name = name
        self.syntax = reader.effective_syntax_uid
        self.walker: Walker = reader.dataset_walker()
        self.start = 0 if reader.encoding.deflated else reader.dataset_offset
        self.explicit = self.walker.explicit
        self.little = self.walker.little_endian
        encoding = classify(self.syntax)
        self.encapsulated = encoding is not None and encoding.encapsulated

    def head(self, pos: int, explicit: bool) -> _Head:
        return _Head(*self.walker.element(pos, explicit))

    def value(self, start: int, length: int) -> bytes:
        return self.walker.value(start, length)

    def skip(self, head: _Head, explicit: bool, depth: int = 0) -> int:
        """The offset after the value of ``head``."""
        if head.length != UNDEFINED_LENGTH:
            return head.start + head.length
        nested = explicit and head.vr != b"UN"
        if depth > _MAX_DEPTH:
            raise DicomFormatError("sequences nested too deeply")
        pos = head.start
        while True:
            item = self.head(pos, nested)
            if item.tag == SEQUENCE_END:
                return item.start
            if item.tag != ITEM:
                raise DicomFormatError(f"expected an item at byte {pos} of the {self.name} file")
            if item.length != UNDEFINED_LENGTH:
                pos = item.start + item.length
                continue
            pos = item.start
            while True:
                inner = self.head(pos, nested)
                if inner.tag == ITEM_END:
                    pos = inner.start
                    break
                pos = self.skip(inner, nested, depth + 1)


class _Level:
    """The elements of one data set or item on one side, one at a time."""

    def __init__(self, side: _Side, pos: int, explicit: bool, end: int) -> None:
        self.side = side
        self.explicit = explicit
        self.end = end
        self.after = pos
        self.head: _Head | None = None
        self.move(pos)

    def move(self, pos: int) -> None:
        side = self.side
        if (self.end == _TOP and side.walker.at_end(pos)) or (0 <= self.end <= pos):
            self.head, self.after = None, max(pos, self.end)
            return
        head = side.head(pos, self.explicit)
        if self.end == _UNDEFINED and head.tag == ITEM_END:
            self.head, self.after = None, head.start
            return
        self.head = head

    def skip(self) -> None:
        assert self.head is not None
        self.move(self.side.skip(self.head, self.explicit))


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _ignored(tag: int) -> bool:
    return tag & 0xFFFF == 0 or tag == _PADDING


def _stripped(value: bytes) -> bytes:
    return value.rstrip(b" \x00")


@dataclass
class _Context:
    local: _Side
    remote: _Side
    expected: Mapping[int, ExpectedValue]
    routing: bytes | None
    result: DeepResult


class CompareAgain(Exception):
    """The files differ beyond the bytes kept for a second look: open both again and call
    :func:`compare_streams` with ``fast=False``."""


class _Recorder:
    """A stream that keeps what was read from it (up to ``limit`` bytes), to be read again."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.kept = bytearray()
        self.dropped = False

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        if chunk and not self.dropped:
            if len(self.kept) + len(chunk) > self._limit:
                self.dropped, self.kept = True, bytearray()
            else:
                self.kept += chunk
        return chunk

    def replay(self) -> BinaryIO:
        """The kept bytes, then the rest of the stream."""
        return cast(BinaryIO, _Replay(bytes(self.kept), self._stream))


class _Replay:
    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if size < 0 else min(size, len(self._head))
            out, self._head = bytes(self._head[:n]), self._head[n:]
            return out
        return self._stream.read(size)


def _same_data_set(a: _Recorder, b: _Recorder) -> bool | None:
    """Whether the data sets after the file meta groups are byte for byte the same, comparing
    chunk by chunk in C; None when bytes cannot tell (another transfer syntax, or deflated)."""
    readers = []
    for r in (a, b):
        reader = HeaderReader(cast(BinaryIO, r), first_read=_SMALL, strict=False)
        reader.read_meta()
        readers.append(reader)
    ra, rb = readers
    if ra.transfer_syntax_uid != rb.transfer_syntax_uid or ra.encoding.deflated:
        return None
    pending_a = bytes(a.kept[ra.dataset_offset :])
    pending_b = bytes(b.kept[rb.dataset_offset :])
    while True:
        if not pending_a:
            pending_a = a.read(_SMALL)
        if not pending_b:
            pending_b = b.read(_SMALL)
        if not pending_a or not pending_b:
            return not pending_a and not pending_b
        n = min(len(pending_a), len(pending_b))
        if pending_a[:n] != pending_b[:n]:
            return False
        pending_a, pending_b = pending_a[n:], pending_b[n:]


def compare_streams(
    local: BinaryIO,
    remote: BinaryIO,
    *,
    expected: Mapping[int, ExpectedValue] | None = None,
    routing: str | None = None,
    fast: bool = True,
) -> DeepResult:
    """Compare the data elements (outside group 0002) of two DICOM files, reading each once.

    Data sets that are byte for byte the same (the usual case) are recognised by comparing
    bytes; only files that differ are walked element by element. The first
    :data:`_KEEP` bytes of each are kept for that second look.

    Parameters
    ----------
    local, remote
        The local file and the stored one, each positioned at its first byte.
    expected
        Top-level tag -> the raw value the stored file should hold instead of the local one
        (None: removed), from an :data:`ExpectedEdits` callable.
    routing
        The Patient Comments value that routes the session (``Project:P Subject:S Session:E``);
        a stored Patient Comments equal to it is XNAT's routing, not a difference.
    fast
        Compare bytes first (False: walk the elements at once).

    Raises
    ------
    DicomFormatError
        Either file does not follow the DICOM encoding.
    CompareAgain
        The files differ after the bytes kept: call again, on fresh streams, with
        ``fast=False``.
    """
    if fast and not expected:
        ra, rb = _Recorder(local, _KEEP), _Recorder(remote, _KEEP)
        if _same_data_set(ra, rb):
            return DeepResult()
        if ra.dropped or rb.dropped:
            raise CompareAgain
        local, remote = ra.replay(), rb.replay()
    result = DeepResult()
    a, b = _Side(local, "local"), _Side(remote, "stored")
    if a.syntax != b.syntax:
        result.notes.append(f"stored in transfer syntax {b.syntax} (the local file: {a.syntax})")
    if a.little != b.little:
        result.notes.append("stored in another byte order: the data elements were not compared")
        return result
    ctx = _Context(a, b, expected or {}, routing.encode() if routing else None, result)
    _compare_level(
        ctx, _Level(a, a.start, a.explicit, _TOP), _Level(b, b.start, b.explicit, _TOP), "", 0
    )
    return result


def _compare_level(ctx: _Context, la: _Level, lb: _Level, path: str, depth: int) -> None:
    """Compare two data sets (or items) element by element, merging by tag."""
    top = depth == 0
    while la.head is not None or lb.head is not None:
        ha, hb = la.head, lb.head
        if hb is None or (ha is not None and ha.tag < hb.tag):
            assert ha is not None
            gone = ctx.expected.get(ha.tag, b"")
            if not _ignored(ha.tag) and not (top and (gone is None or gone is ...)):
                ctx.result.add(f"{path}{_name(ha.tag)} is not in the stored file")
            la.skip()
        elif ha is None or hb.tag < ha.tag:
            if not _ignored(hb.tag) and not (top and _expected_value(ctx, lb, hb)):
                ctx.result.add(f"{path}{_name(hb.tag)} is only in the stored file")
            lb.skip()
        else:
            ctx.result.elements += 1
            if _ignored(ha.tag):
                la.skip()
                lb.skip()
            elif top and ha.tag in ctx.expected:
                if not _expected_value(ctx, lb, hb):
                    ctx.result.add(f"{path}{_name(ha.tag)} does not hold the expected value")
                la.skip()
                lb.skip()
            elif top and ha.tag == _PATIENT_COMMENTS and _expected_value(ctx, lb, hb):
                la.skip()
                lb.skip()
            elif ha.tag in _PIXEL_TAGS:
                _compare_pixels(ctx, la, lb)
            elif _is_sequence(la, lb):
                _compare_sequence(ctx, la, lb, f"{path}{_name(ha.tag)}", depth)
            elif not _values_equal(ctx, la, lb):
                ctx.result.add(f"{path}{_name(ha.tag)} differs")
                la.skip()
                lb.skip()


def _expected_value(ctx: _Context, lb: _Level, hb: _Head) -> bool:
    """True when the stored element holds what XNAT's routing or the expected edits say."""
    if hb.tag in ctx.expected:
        want = ctx.expected[hb.tag]
    elif hb.tag == _PATIENT_COMMENTS:
        want = ctx.routing
    else:
        want = None
    if want is ...:
        return True
    if want is None or hb.length == UNDEFINED_LENGTH or hb.length > _SMALL:
        return False
    return _stripped(lb.side.value(hb.start, hb.length)) == _stripped(want)


def _values_equal(ctx: _Context, la: _Level, lb: _Level) -> bool:
    """Compare two defined-length values in chunks; True (both consumed) when equal."""
    ha, hb = la.head, lb.head
    assert ha is not None
    assert hb is not None
    if UNDEFINED_LENGTH in (ha.length, hb.length):
        return False
    if ha.length != hb.length:
        if max(ha.length, hb.length) > _SMALL:
            return False
        same = _stripped(la.side.value(ha.start, ha.length)) == _stripped(
            lb.side.value(hb.start, hb.length)
        )
    else:
        same = True
        for offset in range(0, ha.length, _CHUNK):
            n = min(_CHUNK, ha.length - offset)
            va = la.side.value(ha.start + offset, n)
            vb = lb.side.value(hb.start + offset, n)
            if va != vb and not (ha.length <= _SMALL and _stripped(va) == _stripped(vb)):
                same = False
                break
    if same:
        la.skip()
        lb.skip()
    return same


def _is_sequence(la: _Level, lb: _Level) -> bool:
    ha, hb = la.head, lb.head
    assert ha is not None
    assert hb is not None
    if b"SQ" in (ha.vr, hb.vr) or UNDEFINED_LENGTH in (ha.length, hb.length):
        return True
    # Implicit VR carries no VR: a value that starts with an Item tag on either side is read
    # as a sequence (the other side may encode the same sequence with other lengths).
    return any(
        h.length >= 8 and level.side.value(h.start, 4) == _ITEM_START
        for level, h in ((la, ha), (lb, hb))
        if not level.explicit
    )


def _items(level: _Level, depth: int) -> tuple[_Side, bool, int, int]:
    """(side, nested explicit VR, first item offset, end of the sequence or _UNDEFINED)."""
    head = level.head
    assert head is not None
    if depth >= _MAX_DEPTH:
        raise DicomFormatError("sequences nested too deeply")
    nested = level.explicit and head.vr != b"UN"
    end = _UNDEFINED if head.length == UNDEFINED_LENGTH else head.start + head.length
    return level.side, nested, head.start, end


def _next_item(side: _Side, pos: int, explicit: bool, end: int) -> tuple[_Head | None, int]:
    """The item at ``pos``, or None and the offset after the sequence."""
    if end >= 0 and pos >= end:
        return None, end
    head = side.head(pos, explicit)
    if head.tag == SEQUENCE_END:
        return None, head.start
    if head.tag != ITEM:
        raise DicomFormatError(f"expected an item at byte {pos} of the {side.name} file")
    return head, head.start


def _compare_sequence(ctx: _Context, la: _Level, lb: _Level, path: str, depth: int) -> None:
    sa, ea, pa, enda = _items(la, depth)
    sb, eb, pb, endb = _items(lb, depth)
    index = 0
    while True:
        ia, pa = _next_item(sa, pa, ea, enda)
        ib, pb = _next_item(sb, pb, eb, endb)
        if ia is None or ib is None:
            if ia is not None or ib is not None:
                ctx.result.add(f"{path} has another number of items in the stored file")
                la.skip()
                lb.skip()
                return
            break
        item_end_a = _UNDEFINED if ia.length == UNDEFINED_LENGTH else ia.start + ia.length
        item_end_b = _UNDEFINED if ib.length == UNDEFINED_LENGTH else ib.start + ib.length
        inner_a = _Level(sa, ia.start, ea, item_end_a)
        inner_b = _Level(sb, ib.start, eb, item_end_b)
        _compare_level(ctx, inner_a, inner_b, f"{path}[{index}]", depth + 1)
        pa, pb = inner_a.after, inner_b.after
        index += 1
    la.move(pa)
    lb.move(pb)


def _compare_pixels(ctx: _Context, la: _Level, lb: _Level) -> None:
    """Pixel Data: native values in chunks, encapsulated fragments one by one."""
    ha, hb = la.head, lb.head
    assert ha is not None
    assert hb is not None
    undefined = (ha.length == UNDEFINED_LENGTH, hb.length == UNDEFINED_LENGTH)
    if undefined[0] != undefined[1] or la.side.encapsulated != lb.side.encapsulated:
        ctx.result.notes.append(
            f"{_name(ha.tag)} Pixel Data not compared: stored in transfer syntax "
            f"{lb.side.syntax}, the local file has {la.side.syntax}"
        )
        la.skip()
        lb.skip()
    elif not undefined[0]:
        if not _values_equal(ctx, la, lb):
            ctx.result.add(f"{_name(ha.tag)} Pixel Data differs")
            la.skip()
            lb.skip()
    else:
        _compare_fragments(ctx, la, lb)


def _compare_fragments(ctx: _Context, la: _Level, lb: _Level) -> None:
    # Walks the two item lists in step like _compare_sequence, but a fragment is bytes, not a
    # nested data set, and its items end where their length says (no delimiter): kept apart.
    sa, ea, pa, _ = _items(la, 0)
    sb, eb, pb, _ = _items(lb, 0)
    ha = la.head
    assert ha is not None
    index = 0
    while True:
        ia, pa = _next_item(sa, pa, ea, _UNDEFINED)
        ib, pb = _next_item(sb, pb, eb, _UNDEFINED)
        if ia is None or ib is None:
            if ia is not None or ib is not None:
                ctx.result.add(f"{_name(ha.tag)} Pixel Data has another number of fragments")
                la.skip()
                lb.skip()
                return
            break
        same = ia.length == ib.length
        for offset in range(0, ia.length if same else 0, _CHUNK):
            n = min(_CHUNK, ia.length - offset)
            if sa.value(ia.start + offset, n) != sb.value(ib.start + offset, n):
                same = False
                break
        if not same:
            ctx.result.add(f"{_name(ha.tag)} Pixel Data differs in fragment {index}")
        pa, pb = ia.start + ia.length, ib.start + ib.length
        index += 1
    la.move(pa)
    lb.move(pb)
