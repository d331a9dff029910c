"""Write an edited data set tree back as pieces: new bytes, or ranges of the source to copy.

Only what changed is written anew. An element nobody touched, an item with nothing changed
inside, and everything after the edited region are ranges of the source, so pixel data is never
decoded or held. Defined lengths of edited sequences and items, and retired group lengths
(gggg,0000), are recomputed; undefined lengths stay undefined.
"""

from __future__ import annotations

import struct

from xnatio.anonymize.tree import CHANGED, DELETED, NEW, ORIGINAL, DataSet, Element, Item
from xnatio.anonymize.values import short_length_vr
from xnatio.dicom.reader import UNDEFINED_LENGTH

__all__ = ["Pieces", "element_header", "encode_region"]

_ITEM_HEAD = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD


class Pieces:
    """Output as a list of ``bytes`` (new) and ``(start, end)`` source ranges, with its length."""

    __slots__ = ("length", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes | tuple[int, int]] = []
        self.length = 0

    def literal(self, data: bytes) -> None:
        """Append new bytes."""
        if not data:
            return
        parts = self.parts
        if parts and isinstance(parts[-1], bytes):
            parts[-1] += data
        else:
            parts.append(data)
        self.length += len(data)

    def source(self, start: int, end: int) -> None:
        """Append the source's bytes ``[start, end)``."""
        if end <= start:
            return
        parts = self.parts
        last = parts[-1] if parts else None
        if isinstance(last, tuple) and last[1] == start:
            parts[-1] = (last[0], end)
        else:
            parts.append((start, end))
        self.length += end - start

    def extend(self, other: Pieces) -> None:
        """Append another list of pieces."""
        for part in other.parts:
            if isinstance(part, bytes):
                self.literal(part)
            else:
                self.source(*part)


def element_header(tag: int, vr: bytes, length: int, explicit: bool, little: bool) -> bytes:
    """The header of an element (PS3.5 section 7.1)."""
    order = "<" if little else ">"
    group, elem = tag >> 16, tag & 0xFFFF
    if not explicit or group == 0xFFFE:
        return struct.pack(order + "HHI", group, elem, length)
    if short_length_vr(vr):
        return struct.pack(order + "HH2sH", group, elem, vr, length)
    return struct.pack(order + "HH2sHI", group, elem, vr, 0, length)


def encode_region(ds: DataSet) -> Pieces:
    """The data set from its first element up to ``ds.stop``, with the edits applied."""
    return _elements(ds.root)


def _elements(item: Item) -> Pieces:
    out = Pieces()
    encoded: list[tuple[Element, Pieces | None]] = []
    group_delta: dict[int, int] = {}
    for el in item.elements:
        if el.state == ORIGINAL and not el.dirty:
            encoded.append((el, None))  # copied from the source as it is
            continue
        pieces = _element(el, item)
        encoded.append((el, pieces))
        old = 0 if el.state == NEW else el.end - el.start
        group = el.tag >> 16
        group_delta[group] = group_delta.get(group, 0) + pieces.length - old
    for el, new in encoded:
        if new is not None:
            out.extend(new)
        elif el.tag & 0xFFFF == 0 and group_delta.get(el.tag >> 16) and el.raw is not None:
            out.extend(_group_length(el, item, group_delta[el.tag >> 16]))
        else:
            out.source(el.start, el.end)
    return out


def _group_length(el: Element, item: Item, delta: int) -> Pieces:
    order = "<" if item.little_endian else ">"
    (old,) = struct.unpack(order + "I", el.raw or b"\x00\x00\x00\x00")
    out = Pieces()
    value = struct.pack(order + "I", old + delta)
    out.literal(element_header(el.tag, b"UL", 4, item.explicit, item.little_endian) + value)
    return out


def _element(el: Element, item: Item) -> Pieces:
    out = Pieces()
    if el.state == DELETED:
        return out
    if el.state == ORIGINAL and not el.dirty:
        out.source(el.start, el.end)
        return out
    explicit, little = item.explicit, item.little_endian
    if el.items is None:
        raw = el.raw or b""
        out.literal(element_header(el.tag, el.vr, len(raw), explicit, little) + raw)
        return out
    body = Pieces()
    for sub in el.items:
        body.extend(_item(sub))
    undefined = el.state not in (CHANGED, NEW) and el.length == UNDEFINED_LENGTH
    vr = el.vr if el.vr in (b"SQ", b"UN") else b"SQ"
    if undefined:
        out.literal(element_header(el.tag, vr, UNDEFINED_LENGTH, explicit, little))
        out.extend(body)
        out.literal(element_header(_SEQ_END, b"", 0, explicit, little))
    else:
        out.literal(element_header(el.tag, vr, body.length, explicit, little))
        out.extend(body)
    return out


def _item(item: Item) -> Pieces:
    out = Pieces()
    if item.start >= 0 and not item.dirty:
        out.source(item.start, item.end)
        return out
    body = _elements(item)
    explicit, little = item.explicit, item.little_endian
    if item.length == UNDEFINED_LENGTH:
        out.literal(element_header(_ITEM_HEAD, b"", UNDEFINED_LENGTH, explicit, little))
        out.extend(body)
        out.literal(element_header(_ITEM_END, b"", 0, explicit, little))
    else:
        out.literal(element_header(_ITEM_HEAD, b"", body.length, explicit, little))
        out.extend(body)
    return out
