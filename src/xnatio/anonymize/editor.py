"""Edit one DICOM file in two passes: plan (read the header, apply the scripts, know the length),
then stream (the file's own bytes with the planned pieces put in).

Plan pass
    The preamble and file meta group are read with :class:`xnatio.dicom.reader.HeaderReader`;
    the data set is read as a tree up to the scripts' horizon (:mod:`xnatio.anonymize.tree`),
    the scripts run on it, and the tree is written back as pieces (:mod:`.encode`). Cost: the
    header bytes up to the horizon, plus reading through the rest of the file when a script can
    touch every tag (``removeAllPrivateTags``, ``(XXX#,XXXX)``, ``*/...``).
Stream pass
    :meth:`Edit.open` gives a file object over the source: new bytes where the plan put them,
    the source's own bytes everywhere else (read with ``readinto`` straight into the caller's
    buffer: pixel data is never decoded nor held whole).

File meta group
    Kept byte for byte unless the scripts change SOP Class or SOP Instance UID: then Media
    Storage SOP Class/Instance UID (0002,0002)/(0002,0003) follow, and the group is written anew
    in explicit VR little endian with its group length (0002,0000) recomputed. The 128-byte
    preamble is always written as zeros (it may carry a TIFF header or anything else).
Deflated data sets
    Inflated whole in memory in the plan pass, edited like any explicit VR little endian data set
    and deflated again (zlib level 6, raw deflate); the plan holds the new bytes, so the stream
    pass sends them as they are.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from xnatio.anonymize.encode import Pieces, element_header, encode_region
from xnatio.anonymize.errors import AnonymizeError
from xnatio.anonymize.tree import CHANGED, DELETED, NEW, ORIGINAL, DataSet, Element, read_tree
from xnatio.anonymize.values import decode, dictionary_vr
from xnatio.dicom.reader import DicomFormatError, HeaderReader, Walker, dataset_encoding

__all__ = ["IDENTITY_TAGS", "Change", "Edit", "EditedFile", "changes_of", "read_plan_input"]

_FIRST_READ = 64 * 1024
_COPY = 1 << 20
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_MEDIA_CLASS, _MEDIA_INSTANCE = 0x00020002, 0x00020003

#: What names and files an instance on an XNAT server: SOP Class and Instance UID, Modality,
#: Study and Series Instance UID, Series Number (the scan folder) and Instance Number.
IDENTITY_TAGS = (0x00080016, 0x00080018, 0x00080060, 0x0020000D, 0x0020000E, 0x00200011, 0x00200013)


@dataclass(frozen=True, slots=True)
class Change:
    """One edit, for ``--dry-run`` displays and reports.

    Attributes
    ----------
    path
        Where, as a DicomEdit tag path (``(0008,1115)[0]/(0020,000E)``).
    action
        ``"set"``, ``"add"`` or ``"delete"``.
    before, after
        Values as text (``None`` for none; a sequence shows as ``<sequence>``).
    """

    path: str
    action: str
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class Edit:
    """The plan for one file: its exact new length and how to produce it.

    Attributes
    ----------
    pieces
        New bytes and ``(start, end)`` source ranges, in file offsets, covering the whole output.
    length
        Bytes of the edited file (preamble and meta group included).
    dataset_offset
        Where the data set starts in the edited file (what C-STORE sends starts there).
    deflated
        The data set is deflated (a C-STORE adds a pad byte to an odd length, PS3.5 A.5).
    changes
        What was edited.
    new_sop_instance_uid, new_study_instance_uid, new_series_instance_uid
        The UIDs after editing (``""`` when absent), for identity checks after upload.
    identity
        The top-level elements of :data:`IDENTITY_TAGS` the scripts changed, with their new
        values as text (``""``: deleted); an element not listed keeps the source's value.
    """

    pieces: tuple[bytes | tuple[int, int], ...]
    length: int
    dataset_offset: int
    deflated: bool
    changes: tuple[Change, ...]
    new_sop_instance_uid: str
    new_study_instance_uid: str
    new_series_instance_uid: str
    identity: Mapping[int, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether any element changed."""
        return bool(self.changes)

    def open(self, source: BinaryIO) -> EditedFile:
        """A read-only file object over the edited bytes; ``source`` is at its first byte."""
        return EditedFile(self.pieces, source, self.length)

    def chunks(self, source: BinaryIO, *, dataset_only: bool = False) -> Iterator[bytes]:
        """The edited file (or, with ``dataset_only``, its data set as C-STORE sends it)."""
        f = self.open(source)
        if dataset_only:
            f.skip(self.dataset_offset)
        sent = 0
        while chunk := f.read(_COPY):
            sent += len(chunk)
            yield chunk
        if dataset_only and self.deflated and sent % 2:
            yield b"\x00"


class EditedFile(io.RawIOBase):
    """The edited file as a read-only, forward-only binary file (``read``/``readinto``)."""

    def __init__(
        self, pieces: tuple[bytes | tuple[int, int], ...], source: BinaryIO, length: int
    ) -> None:
        super().__init__()
        self._pieces = pieces
        self._source = source
        self._length = length
        self._i = 0  # current piece
        self._off = 0  # offset inside it
        self._src = 0  # source position
        self._seekable = _seekable(source)
        self.produced = 0

    def readable(self) -> bool:
        return True

    def skip(self, n: int) -> None:
        """Skip ``n`` output bytes (reading the source only where it must)."""
        while n and self._i < len(self._pieces):
            piece = self._pieces[self._i]
            size = len(piece) if isinstance(piece, bytes) else piece[1] - piece[0]
            k = min(n, size - self._off)
            self._off += k
            self.produced += k
            n -= k
            if self._off == size:
                self._i, self._off = self._i + 1, 0

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._i < len(self._pieces):
            piece = self._pieces[self._i]
            if isinstance(piece, bytes):
                k = min(len(view) - done, len(piece) - self._off)
                view[done : done + k] = piece[self._off : self._off + k]
            else:
                start = piece[0] + self._off
                self._goto(start)
                k = min(len(view) - done, piece[1] - start)
                k = self._source_into(view[done : done + k])
                self._src += k
            done += k
            self._off += k
            size = len(piece) if isinstance(piece, bytes) else piece[1] - piece[0]
            if self._off == size:
                self._i, self._off = self._i + 1, 0
        self.produced += done
        return done

    def _source_into(self, view: memoryview) -> int:
        got = 0
        while got < len(view):
            n = self._source.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                raise AnonymizeError("the file got shorter since it was read for anonymisation")
            got += n
        return got

    def _goto(self, pos: int) -> None:
        if pos == self._src:
            return
        if pos < self._src:
            raise AnonymizeError("internal error: source ranges out of order")  # pragma: no cover
        if self._seekable:
            self._source.seek(pos)
        else:
            left = pos - self._src
            while left:
                chunk = self._source.read(min(left, _COPY))
                if not chunk:
                    raise AnonymizeError("the file got shorter since it was read for anonymisation")
                left -= len(chunk)
        self._src = pos


def _seekable(f: BinaryIO) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def source_size(stream: BinaryIO) -> int | None:
    """The size of a file object, if it can be told without reading it."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
    if _seekable(stream):
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(here)
        return end
    return None


@dataclass(slots=True)
class PlanInput:
    """What the plan pass read: the header, and the data set tree to edit."""

    reader: HeaderReader
    ds: DataSet
    walker: Walker
    inflated: bytes | None


def read_plan_input(stream: BinaryIO, horizon: int) -> PlanInput:
    """Read the meta group and the data set tree up to ``horizon``."""
    reader = HeaderReader(stream, first_read=_FIRST_READ, keep=True, strict=False)
    reader.read_meta()
    head = reader.consumed()
    if reader.encoding.deflated:
        inflated = _inflate(head[reader.dataset_offset :] + stream.read())
        walker = Walker(lambda _: b"", inflated, keep=True)
        if len(inflated) >= 8:
            enc, _ = dataset_encoding(inflated[:8], reader.encoding)
            walker.set_encoding(enc.explicit_vr, enc.little_endian)
        return PlanInput(reader, read_tree(walker, 0, horizon), walker, inflated)
    walker = Walker(stream.read, head, keep=False, chunk=_COPY)
    walker.set_encoding(reader.encoding.explicit_vr, reader.encoding.little_endian)
    return PlanInput(reader, read_tree(walker, reader.dataset_offset, horizon), walker, None)


def _inflate(raw: bytes) -> bytes:
    try:
        z = zlib.decompressobj(-zlib.MAX_WBITS)
        return z.decompress(raw) + z.flush()
    except zlib.error as exc:
        raise DicomFormatError(f"cannot inflate the deflated data set: {exc}") from None


def build_edit(pin: PlanInput, stream: BinaryIO, size: int | None, *, changes: bool = True) -> Edit:
    """The edit of a file whose tree the scripts have already changed (``changes`` False:
    without the list of changes, which only a preview needs)."""
    reader, ds = pin.reader, pin.ds
    _check_identity(ds)
    out = Pieces()
    if reader.preamble:
        out.literal(bytes(128) + b"DICM")
    meta_start = 132 if reader.preamble else 0
    meta = _new_meta(reader, ds)
    if meta is None:
        out.source(meta_start, reader.dataset_offset)
    else:
        out.literal(meta)
    dataset_offset = out.length
    region = encode_region(ds)
    if pin.inflated is not None:
        out.literal(_deflate(region, pin.inflated, ds.stop))
    else:
        out.extend(region)
        end = size if size is not None else source_size(stream)
        if end is None:  # a stream that cannot tell its size: read to its end
            end = ds.stop
            while not pin.walker.at_end(end):
                end = pin.walker.skip(end)
        if not ds.complete or end > ds.stop:
            out.source(ds.stop, end)
    return Edit(
        tuple(out.parts),
        out.length,
        dataset_offset,
        pin.inflated is not None,
        tuple(changes_of(ds)) if changes else (),
        _uid(ds, _SOP_INSTANCE) or _text_meta(reader, _MEDIA_INSTANCE),
        _uid(ds, 0x0020000D),
        _uid(ds, 0x0020000E),
        _identity(ds),
    )


def _identity(ds: DataSet) -> dict[int, str]:
    """New values of the identity elements the scripts changed at the top level."""
    found: dict[int, str] = {}
    charset = ds.charset()
    for el in ds.root.elements:
        if el.tag not in IDENTITY_TAGS or el.state == ORIGINAL:
            continue
        if el.state == DELETED:
            found.setdefault(el.tag, "")  # a live element of the same tag (re-created) wins
        elif el.raw is not None:
            found[el.tag] = decode(el.raw, el.vr, ds.little_endian, charset).strip(" \x00")
    return found


def _deflate(region: Pieces, inflated: bytes, stop: int) -> bytes:
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [z.compress(p if isinstance(p, bytes) else inflated[p[0] : p[1]]) for p in region.parts]
    parts.append(z.compress(inflated[stop:]))
    parts.append(z.flush())
    return b"".join(parts)


def _check_identity(ds: DataSet) -> None:
    for tag, name in ((_SOP_INSTANCE, "SOP Instance UID"), (_SOP_CLASS, "SOP Class UID")):
        for el in ds.index.get(tag, ()):
            if el.parent is ds.root and el.state == DELETED:
                raise AnonymizeError(f"the script deletes {name} {_tag_text(tag)}; files need one")


def _uid(ds: DataSet, tag: int) -> str:
    el = ds.root.find(tag)
    return "" if el is None or el.raw is None else el.raw.decode("latin-1").strip(" \x00")


def _text_meta(reader: HeaderReader, tag: int) -> str:
    return reader.meta.get(tag, b"").decode("latin-1").strip(" \x00")


def _new_meta(reader: HeaderReader, ds: DataSet) -> bytes | None:
    """A new file meta group when SOP Class/Instance UID changed, else ``None``."""
    follow = {}
    for tag, media in ((_SOP_CLASS, _MEDIA_CLASS), (_SOP_INSTANCE, _MEDIA_INSTANCE)):
        el = ds.root.find(tag)
        if el is not None and el.state in (CHANGED, NEW) and media in reader.meta:
            follow[media] = el.raw or b""
    if not follow:
        return None
    body = b""
    for tag in sorted(reader.meta):
        if tag == 0x00020000:
            continue
        value = follow.get(tag, reader.meta[tag])
        body += element_header(tag, dictionary_vr(tag), len(value), True, True) + value
    length = element_header(0x00020000, b"UL", 4, True, True) + len(body).to_bytes(4, "little")
    return length + body


def changes_of(ds: DataSet) -> Iterator[Change]:
    """Every edited element of the tree, in data set order."""
    charset = ds.charset()
    for el in _edited(ds.root.elements):
        path = _path_text(el)
        before = (
            None
            if el.state == NEW
            else _shown(el, el.old if el.state == CHANGED else el.raw, charset)
        )
        if el.state == DELETED:
            yield Change(path, "delete", before, None)
        else:
            after = _shown(el, el.raw, charset)
            yield Change(path, "add" if el.state == NEW else "set", before, after)


def _edited(elements: list[Element]) -> Iterator[Element]:
    for el in elements:
        if el.state != ORIGINAL:
            yield el
        if el.state != DELETED and el.items is not None:
            for item in el.items:
                yield from _edited(item.elements)


def _shown(el: Element, raw: bytes | None, charset: str) -> str | None:
    if el.items is not None or el.vr == b"SQ":
        return "<sequence>"
    if raw is None:
        return "<large value>"
    return decode(raw, el.vr, el.parent.little_endian, charset)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _path_text(el: Element) -> str:
    parts = [_tag_text(el.tag)]
    item = el.parent
    while item.owner is not None:
        owner = item.owner
        index = next(i for i, it in enumerate(owner.items or ()) if it is item)
        parts.append(f"{_tag_text(owner.tag)}[{index}]")
        item = owner.parent
    return "/".join(reversed(parts))
