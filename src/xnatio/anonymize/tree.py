"""The part of a data set a script can reach, as a tree of elements addressed by byte offset.

:func:`read_tree` walks the top level of a data set with :class:`xnatio.dicom.reader.Walker` up
to the script's horizon (the highest top-level tag it can touch). Sequences inside that region
are read item by item; small values are kept, large ones (pixel data, big OB blobs) only as
offsets, so the edited file can copy them from the source without holding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from xnatio.anonymize.values import dictionary_vr
from xnatio.dicom.reader import (
    ITEM,
    ITEM_END,
    SEQUENCE_END,
    UNDEFINED_LENGTH,
    DicomFormatError,
    Walker,
)

__all__ = ["DataSet", "Element", "Item", "read_tree"]

VALUE_LIMIT = 1 << 20  # values larger than this are not read (a script reading one fails)
_MAX_DEPTH = 32
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_ITEM_BYTES = b"\xfe\xff\x00\xe0"

ORIGINAL, CHANGED, DELETED, NEW = 0, 1, 2, 3


@dataclass(eq=False, slots=True)
class Element:
    """One data element.

    Attributes
    ----------
    tag, vr
        The tag; the VR (from the bytes in explicit VR, from the dictionary in implicit VR).
    start, end
        Source offsets of the element's first byte and of the byte after it (delimiters
        included); ``-1`` for an element the script created.
    header
        Length of the element header in the source.
    length
        The value length in the source (``UNDEFINED_LENGTH`` possible).
    raw
        The value, for a value of at most :data:`VALUE_LIMIT` bytes that is not a sequence.
    items
        The items of a sequence, else ``None``.
    parent
        The item (or the top level) holding the element.
    state
        ``ORIGINAL``, ``CHANGED`` (``raw`` is the new value), ``DELETED`` or ``NEW``.
    dirty
        Something inside this sequence changed.
    """

    tag: int
    vr: bytes
    start: int
    end: int
    header: int
    length: int
    raw: bytes | None
    items: list[Item] | None
    parent: Item
    state: int = ORIGINAL
    dirty: bool = False
    old: bytes | None = None

    @property
    def alive(self) -> bool:
        """Not deleted, and no enclosing sequence deleted."""
        item: Item | None = self.parent
        if self.state == DELETED:
            return False
        while item is not None and item.owner is not None:
            if item.owner.state == DELETED:
                return False
            item = item.owner.parent
        return True

    @property
    def depth(self) -> int:
        """0 at the top level, 1 inside one sequence, and so on."""
        return self.parent.depth

    def mark_dirty(self) -> None:
        """Tell every enclosing sequence and item that something inside changed."""
        item: Item | None = self.parent
        while item is not None:
            item.dirty = True
            owner = item.owner
            if owner is None:
                return
            owner.dirty = True
            item = owner.parent


@dataclass(eq=False, slots=True)
class Item:
    """An item of a sequence, or the top level of the data set (``owner`` is ``None``)."""

    start: int
    end: int
    length: int
    owner: Element | None
    depth: int
    explicit: bool = True
    little_endian: bool = True
    elements: list[Element] = field(default_factory=list)
    dirty: bool = False

    def find(self, tag: int) -> Element | None:
        """The live element ``tag`` of this item."""
        for el in self.elements:
            if el.tag == tag and el.state != DELETED:
                return el
            if el.tag > tag:
                return None
        return None

    def insert(self, element: Element) -> None:
        """Put a new element in tag order."""
        elements = self.elements
        i = len(elements)
        while i and elements[i - 1].tag > element.tag:
            i -= 1
        elements.insert(i, element)


@dataclass(eq=False, slots=True)
class DataSet:
    """What :func:`read_tree` read: the top level up to ``stop``, and how it is encoded."""

    root: Item
    stop: int
    explicit: bool
    little_endian: bool
    complete: bool
    index: dict[int, list[Element]]

    def charset(self) -> str:
        """Specific Character Set (0008,0005) as text, ``""`` when absent."""
        el = self.root.find(0x00080005)
        return "" if el is None or el.raw is None else el.raw.decode("latin-1").strip(" \x00")

    def walk(self, item: Item | None = None) -> Iterator[Element]:
        """Every live element, depth first."""
        for el in (item or self.root).elements:
            if el.state == DELETED:
                continue
            yield el
            for sub in el.items or ():
                yield from self.walk(sub)

    def register(self, element: Element) -> None:
        """Add a created element to the tag index."""
        self.index.setdefault(element.tag, []).append(element)


class _Reader:
    def __init__(self, walker: Walker, explicit: bool, index: dict[int, list[Element]]) -> None:
        self.w = walker
        self.explicit = explicit
        self.index = index

    def element(self, pos: int, parent: Item, explicit: bool, last: int) -> Element | None:
        w = self.w
        tag, vr, vstart, length = w.element(pos, explicit, last)
        if tag > last:
            return None
        if not explicit:
            vr = dictionary_vr(tag)
        el = Element(tag, vr, pos, 0, vstart - pos, length, None, None, parent)
        if length == UNDEFINED_LENGTH:
            if tag in _PIXEL_TAGS or vr in (b"OB", b"OW"):
                el.end = self._skip_fragments(vstart)
            else:
                # An undefined-length UN holds implicit VR little endian items (PS3.5 6.2.2).
                el.vr = vr if explicit else b"SQ"
                inner = (explicit and vr != b"UN", parent.little_endian or vr == b"UN")
                el.end = self._items(el, vstart, inner, None, parent.depth)
        elif vr == b"SQ" or (
            not explicit and vr == b"UN" and self._looks_like_items(vstart, length)
        ):
            el.vr = b"SQ"
            inner = (explicit, parent.little_endian)
            el.end = self._items(el, vstart, inner, vstart + length, parent.depth)
        else:
            el.end = vstart + length
            if length <= VALUE_LIMIT:
                el.raw = w.value(vstart, length)
        self.index.setdefault(tag, []).append(el)
        return el

    def _looks_like_items(self, start: int, length: int) -> bool:
        return length >= 8 and self.w.value(start, 4) == _ITEM_BYTES

    def _skip_fragments(self, pos: int) -> int:
        while True:
            tag, _, start, length = self.w.element(pos, False)
            if tag == SEQUENCE_END:
                return start
            if tag != ITEM or length == UNDEFINED_LENGTH:
                raise DicomFormatError(f"bad encapsulated pixel data at byte {pos}")
            pos = start + length

    def _items(
        self, seq: Element, pos: int, encoding: tuple[bool, bool], end: int | None, depth: int
    ) -> int:
        if depth >= _MAX_DEPTH:
            raise DicomFormatError("sequences nested too deeply")
        explicit, little = encoding
        if little != self.w.little_endian:
            raise DicomFormatError("an undefined-length UN element in a big endian data set")
        seq.items = []
        while end is None or pos < end:
            tag, _, start, length = self.w.element(pos, explicit)
            if tag == SEQUENCE_END and end is None:
                return start
            if tag != ITEM:
                raise DicomFormatError(f"expected an item at byte {pos}, found {tag:08X}")
            item = Item(pos, 0, length, seq, depth + 1, explicit, little)
            seq.items.append(item)
            pos = self._item_elements(item, start, explicit, length)
            item.end = pos
        return pos

    def _item_elements(self, item: Item, pos: int, explicit: bool, length: int) -> int:
        stop = None if length == UNDEFINED_LENGTH else pos + length
        while stop is None or pos < stop:
            if stop is None:
                tag = self.w.element(pos, explicit, 0)[0]
                if tag == ITEM_END:
                    return pos + 8
            el = self.element(pos, item, explicit, 0xFFFFFFFF)
            assert el is not None
            item.elements.append(el)
            pos = el.end
        return pos


def read_tree(walker: Walker, start: int, horizon: int) -> DataSet:
    """Read the data set from offset ``start`` up to the first top-level tag above ``horizon``.

    Parameters
    ----------
    walker
        Positioned for the data set (encoding set), made with ``keep=False``.
    start
        Offset of the first data set element.
    horizon
        The highest top-level tag to read; ``0xFFFFFFFF`` reads everything.

    Raises
    ------
    DicomFormatError
        The data set does not follow its encoding, or ends inside an element.
    """
    index: dict[int, list[Element]] = {}
    root = Item(start, 0, UNDEFINED_LENGTH, None, 0, walker.explicit, walker.little_endian)
    reader = _Reader(walker, walker.explicit, index)
    pos, complete = start, True
    while not walker.at_end(pos):
        el = reader.element(pos, root, walker.explicit, horizon)
        if el is None:
            complete = False
            break
        root.elements.append(el)
        pos = el.end
    root.end = pos
    return DataSet(root, pos, walker.explicit, walker.little_endian, complete, index)
