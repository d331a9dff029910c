"""Tag paths against a :class:`~xnatio.anonymize.tree.DataSet`: find, create, set, delete.

Matching follows DicomEdit (mizer ``TagPath``): ``*`` is any depth including the top level,
``+`` one level or more, ``.`` exactly one level; a sequence step without an item number (or
with ``%``) means every item; ``(gggg,{CREATOR}ee)`` resolves through the private creator
elements of the same item. Deleted elements, and everything inside a deleted sequence, are gone.
"""

from __future__ import annotations

from collections.abc import Iterator

from xnatio.anonymize.errors import AnonymizeError
from xnatio.anonymize.nodes import Step, TagPath, TagPattern
from xnatio.anonymize.tree import CHANGED, DELETED, NEW, DataSet, Element, Item
from xnatio.anonymize.values import dictionary_vr, encode

__all__ = ["create", "delete", "find", "set_value"]


def find(ds: DataSet, path: TagPath) -> list[Element]:
    """Every live element ``path`` matches, in document order of discovery, without repeats."""
    steps = path.steps
    if len(steps) == 2 and steps[0].pattern is None and steps[0].wildcard in "*+":
        last = steps[1].pattern
        if last is not None and last.concrete:  # fast path: */(gggg,eeee) through the index
            found = ds.index.get(last.tag)
            if not found:
                return []
            floor = 1 if steps[0].wildcard == "+" else 0
            return [e for e in found if e.depth >= floor and e.alive]
    seen: dict[int, Element] = {}
    for el in _match(ds, steps, 0, ds.root):
        seen.setdefault(id(el), el)
    return list(seen.values())


def _match(ds: DataSet, steps: tuple[Step, ...], i: int, item: Item) -> Iterator[Element]:
    step = steps[i]
    if step.pattern is None:
        if step.wildcard == "*":
            yield from _match(ds, steps, i + 1, item)
            for sub in _sub_items(item):
                yield from _match(ds, steps, i, sub)
        elif step.wildcard == "+":
            for sub in _sub_items(item):
                yield from _match(ds, (Step(None, "*"), *steps[i + 1 :]), 0, sub)
        else:
            for sub in _sub_items(item):
                yield from _match(ds, steps, i + 1, sub)
        return
    last = i == len(steps) - 1
    for el in candidates(ds, step.pattern, item):
        if last:
            yield el
        elif el.items is not None:
            for n, sub in enumerate(el.items):
                if step.item in (None, "%") or step.item == n:
                    yield from _match(ds, steps, i + 1, sub)


def _sub_items(item: Item) -> Iterator[Item]:
    for el in item.elements:
        if el.items is not None and el.state != DELETED:
            yield from el.items


def candidates(ds: DataSet, pattern: TagPattern, item: Item) -> list[Element]:
    """The live elements of ``item`` (not below it) that ``pattern`` names."""
    if pattern.concrete:
        return [e for e in ds.index.get(pattern.tag, ()) if e.parent is item and e.state != DELETED]
    if pattern.creator:
        blocks = creator_blocks(item, pattern)
        return [
            e
            for e in item.elements
            if e.state != DELETED
            and (e.tag >> 16, e.tag >> 8 & 0xFF) in blocks
            and pattern.matches(e.tag)
        ]
    return [e for e in item.elements if e.state != DELETED and pattern.matches(e.tag)]


def creator_blocks(item: Item, pattern: TagPattern) -> set[tuple[int, int]]:
    """(group, block) pairs whose private creator in ``item`` is ``pattern.creator``."""
    gv, gm = pattern.group_match
    out = set()
    for e in item.elements:
        group, elem = e.tag >> 16, e.tag & 0xFFFF
        if (
            e.state != DELETED
            and group & 1
            and 0x10 <= elem <= 0xFF
            and group & gm == gv
            and e.raw is not None
            and e.raw.decode("latin-1").strip(" \x00") == pattern.creator
        ):
            out.add((group, elem))
    return out


def set_value(ds: DataSet, el: Element, value: str, where: str) -> None:
    """Give ``el`` the value ``value`` (encoded for its VR and its item's encoding)."""
    little = el.parent.little_endian
    if el.vr == b"SQ" or el.items is not None:
        if value:
            raise AnonymizeError(f"{where}: cannot assign a value to a sequence")
        el.items = []
        raw = b""
    else:
        raw = encode(value, el.vr, little, ds.charset(), where)
    if el.state not in (CHANGED, NEW):
        el.old = el.raw
        el.state = CHANGED
    el.raw = raw
    el.mark_dirty()


def delete(el: Element) -> None:
    """Delete ``el`` (and so everything inside it)."""
    if el.state != DELETED:
        el.state = DELETED
        el.mark_dirty()


def create(ds: DataSet, path: TagPath, where: str) -> Element:
    """Make the element ``path`` names, with any sequence, item or private creator it needs."""
    item = ds.root
    for n, step in enumerate(path.steps):
        pattern = step.pattern
        if pattern is None or not (pattern.concrete or _creator_concrete(pattern)):
            raise AnonymizeError(f"{where}: cannot create {path.text}: it is a pattern")
        tag = _tag_in(ds, item, pattern)
        if n == len(path.steps) - 1:
            return _new(ds, item, tag, b"LO" if tag >> 16 & 1 else dictionary_vr(tag))
        found = [e for e in candidates(ds, pattern, item) if e.tag == tag]
        seq = found[0] if found else _new(ds, item, tag, b"SQ")
        if seq.items is None:
            raise AnonymizeError(f"{where}: {pattern.text} is not a sequence")
        index = step.item if isinstance(step.item, int) else 0
        if index > len(seq.items):
            raise AnonymizeError(
                f"{where}: cannot create item {index} of {pattern.text}: it has {len(seq.items)}"
            )
        if index == len(seq.items):
            seq.items.append(
                Item(-1, -1, -1, seq, item.depth + 1, item.explicit, item.little_endian)
            )
            if seq.state not in (NEW, CHANGED):
                seq.old, seq.state = seq.raw, CHANGED
            seq.mark_dirty()
        item = seq.items[index]
    raise AssertionError("unreachable")  # pragma: no cover


def _creator_concrete(pattern: TagPattern) -> bool:
    return bool(pattern.creator) and all(c not in "Xx@#" for c in pattern.group + pattern.element)


def _tag_in(ds: DataSet, item: Item, pattern: TagPattern) -> int:
    if not pattern.creator:
        return pattern.tag
    group = int(pattern.group, 16)
    blocks = sorted(b for g, b in creator_blocks(item, pattern) if g == group)
    if blocks:
        block = blocks[0]
    else:
        used = {
            e.tag & 0xFFFF for e in item.elements if e.tag >> 16 == group and e.state != DELETED
        }
        free = [b for b in range(0x10, 0x100) if b not in used]
        if not free:
            raise AnonymizeError(f"no free private block in group {pattern.group}")
        block = free[0]
        creator = _new(ds, item, group << 16 | block, b"LO")
        set_value(ds, creator, pattern.creator, "private creator")
    return group << 16 | block << 8 | int(pattern.element, 16)


def _new(ds: DataSet, item: Item, tag: int, vr: bytes) -> Element:
    el = Element(tag, vr, -1, -1, 0, 0, b"", [] if vr == b"SQ" else None, item, state=NEW)
    item.insert(el)
    ds.register(el)
    el.mark_dirty()
    return el
