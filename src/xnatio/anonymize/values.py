"""Element values as DicomEdit sees them: every value is a string (PS3.5 section 6.2).

Text VRs are decoded with the data set's character set (UTF-8 for ``ISO_IR 192``, otherwise
latin-1, which covers the default repertoire and ``ISO_IR 100``); binary numbers become their
decimal text; multiple values are joined with ``\\``, as DicomEdit does.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from xnatio.anonymize.errors import AnonymizeError

__all__ = ["TEXT_VRS", "decode", "dictionary_vr", "encode", "short_length_vr"]

TEXT_VRS = frozenset(
    {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST", b"TM",
     b"UC", b"UI", b"UR", b"UT"}
)  # fmt: skip
_KEEP_LEADING = frozenset({b"LT", b"ST", b"UT", b"UR"})
_NUMBERS = {
    b"US": "H", b"SS": "h", b"UL": "I", b"SL": "i", b"FL": "f", b"FD": "d", b"SV": "q",
    b"UV": "Q",
}  # fmt: skip
_LONG = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)


def short_length_vr(vr: bytes) -> bool:
    """Whether an explicit VR element of this VR has a 2-byte length (PS3.5 table 7.1-2)."""
    return vr not in _LONG


@lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> bytes:
    """The VR of ``tag`` from pydicom's data dictionary; ``UN`` when unknown.

    Group lengths are UL, private creators LO; a choice such as ``US or SS`` gives the first.
    """
    if tag & 0xFFFF == 0:
        return b"UL"
    group, elem = tag >> 16, tag & 0xFFFF
    if group & 1:
        return b"LO" if 0x0010 <= elem <= 0x00FF else b"UN"
    from pydicom.datadict import dictionary_VR

    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return b"UN"
    return vr[:2].encode("ascii")


def codec(charset: str) -> str:
    """Python codec for a Specific Character Set value (first value)."""
    first = charset.split("\\", maxsplit=1)[0].strip().upper()
    return "utf-8" if first == "ISO_IR 192" else "latin-1"


def decode(raw: bytes, vr: bytes, little_endian: bool, charset: str) -> str:
    """A value as the string DicomEdit works with."""
    if vr in TEXT_VRS:
        text = raw.decode(
            codec(charset) if vr not in (b"UI", b"AE", b"CS") else "latin-1", "replace"
        )
        text = text.rstrip(" \x00")
        return text if vr in _KEEP_LEADING else text.lstrip(" ")
    fmt = _NUMBERS.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        count = len(raw) // size
        order = "<" if little_endian else ">"
        values = struct.unpack(f"{order}{count}{fmt}", raw[: count * size])
        return "\\".join(_number_text(v) for v in values)
    if vr == b"AT":
        order = "<" if little_endian else ">"
        pairs = struct.unpack(f"{order}{len(raw) // 2}H", raw[: len(raw) // 2 * 2])
        return "\\".join(f"{g:04X}{e:04X}" for g, e in zip(pairs[::2], pairs[1::2], strict=False))
    return raw.decode("latin-1").rstrip(" \x00")


def _number_text(v: float | int) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return f"{v:.1f}"
    return str(v)


def encode(value: str, vr: bytes, little_endian: bool, charset: str, where: str) -> bytes:
    """The bytes of ``value`` for an element of ``vr``, padded to an even length.

    Raises
    ------
    AnonymizeError
        A value the VR cannot hold (not a number, not encodable, too long for the length field).
    """
    if vr == b"SQ":
        if value:
            raise AnonymizeError(f"{where}: cannot assign a value to a sequence")
        return b""
    fmt = _NUMBERS.get(vr)
    if fmt is not None:
        return _encode_numbers(value, fmt, little_endian, where)
    if vr == b"AT":
        return _encode_tags(value, little_endian, where)
    if vr in TEXT_VRS:
        try:
            raw = value.encode(codec(charset) if vr != b"UI" else "ascii")
        except UnicodeEncodeError:
            raise AnonymizeError(
                f"{where}: the value cannot be written in the character set {charset or 'default'}"
            ) from None
        pad = b"\x00" if vr == b"UI" else b" "
    else:
        raw, pad = value.encode("latin-1", "replace"), b"\x00"
    if len(raw) % 2:
        raw += pad
    if short_length_vr(vr) and len(raw) > 0xFFFE:
        raise AnonymizeError(f"{where}: value of {len(raw)} bytes is too long for VR {vr.decode()}")
    return raw


def _encode_numbers(value: str, fmt: str, little_endian: bool, where: str) -> bytes:
    if not value:
        return b""
    order = "<" if little_endian else ">"
    try:
        numbers = [float(v) if fmt in "fd" else int(v, 10) for v in value.split("\\")]
        return struct.pack(f"{order}{len(numbers)}{fmt}", *numbers)
    except (ValueError, struct.error):
        raise AnonymizeError(f"{where}: the value is not a valid number for this element") from None


def _encode_tags(value: str, little_endian: bool, where: str) -> bytes:
    if not value:
        return b""
    order = "<" if little_endian else ">"
    out = b""
    for part in value.split("\\"):
        digits = part.strip("() ").replace(",", "")
        try:
            tag = int(digits, 16)
        except ValueError:
            raise AnonymizeError(f"{where}: the value is not a tag (gggg,eeee)") from None
        out += struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    return out
