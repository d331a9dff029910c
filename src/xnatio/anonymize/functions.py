"""DicomEdit's string functions, ``hashUID`` byte for byte, and the table of known functions.

``hashUID`` follows XNAT (mizer ``UIDValue.getHashedUID`` with JUG's name-based generator): the
SHA-1 digest of the value's UTF-8 bytes with no namespace, its first 16 bytes made an RFC 4122
version 5 UUID, written as ``2.25.`` and that 128-bit number in decimal (ITU-T X.667). It needs no
state, so every file of a study, on every machine and in every run, gets the same UID.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from xnatio.anonymize.errors import AnonymizeError

__all__ = [
    "DATA_FUNCTIONS",
    "STRING_FUNCTIONS",
    "UNSUPPORTED",
    "arity",
    "hash_uid",
    "message_format",
    "seeded_uid",
]

# name -> (fewest, most) arguments; None = no upper bound.
_ARITY: dict[str, tuple[int, int | None]] = {
    "hashUID": (1, 2),
    "lowercase": (1, 1),
    "uppercase": (1, 1),
    "substring": (3, 3),
    "replace": (3, 3),
    "match": (3, 3),
    "format": (1, None),
    "concatenate": (1, None),
    "newUID": (0, 0),
    "mapUID": (1, 2),
    "shiftDateTimeByIncrement": (2, 3),
    # functions that look at the data set (evaluated by xnatio.anonymize.evaluate)
    "isPresent": (1, None),
    "hashUIDList": (1, None),
    "retainPrivateTags": (1, None),
    "reject": (0, 1),
    "true": (0, 0),
    "false": (0, 0),
}
STRING_FUNCTIONS = frozenset(
    {"hashUID", "lowercase", "uppercase", "substring", "replace", "match", "format",
     "concatenate", "shiftDateTimeByIncrement"}
)  # fmt: skip
DATA_FUNCTIONS = frozenset(_ARITY) - STRING_FUNCTIONS
# DicomEdit functions xnatio knows of but does not implement: a script using one is refused.
UNSUPPORTED = {
    "getURL": "it calls a web service",
    "lookup": "it needs a lookup table",
    "alterPixels": "xnatio never changes pixel data",
    "blankValues": "not implemented",
    "mapReferencedUIDs": "not implemented",
    "normalizeString": "not implemented",
    "scalePatientAgeAndDobFromStudyDate": "not implemented",
    "shiftDateTimeSequenceByIncrement": "not implemented",
    "set": "not implemented",
}


def arity(name: str) -> tuple[int, int | None] | None:
    """(fewest, most) arguments of a supported function, ``None`` if it is not one."""
    return _ARITY.get(name)


def hash_uid(value: str) -> str:
    """XNAT's ``hashUID``: ``2.25.`` and the decimal of a name-based SHA-1 UUID of ``value``.

    Examples
    --------
    >>> hash_uid("1.2.3")
    '2.25.148370922854076938159295778886134140470'
    """
    digest = bytearray(hashlib.sha1(value.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return "2.25." + str(int.from_bytes(digest, "big"))


def seeded_uid(*parts: str) -> str:
    """A ``2.25.`` UID from a SHA-256 of ``parts``: random-looking, but repeatable in one run.

    ``newUID`` and ``mapUID`` draw from a per-run secret so that the pass that measures a file
    and the pass that sends it agree, while two runs never do.
    """
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()[:16]
    return "2.25." + str(int.from_bytes(digest, "big") >> 1)


_FORMAT = re.compile(r"'([^']*)'|\{\s*(\d+)\s*(?:,[^}]*)?\}")


def message_format(pattern: str, args: Sequence[str | None]) -> str:
    """``java.text.MessageFormat.format`` for the forms scripts use: ``{0}``, ``{1}``, quotes.

    ``''`` is a literal quote, text in single quotes is literal; an argument that is absent stays
    ``{n}`` (as Java leaves it); ``None`` becomes ``null`` (as Java prints it).
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(2) is None:
            quoted = m.group(1)
            return "'" if quoted == "" else quoted
        index = int(m.group(2))
        if index >= len(args):
            return "{" + str(index) + "}"
        value = args[index]
        return "null" if value is None else value

    return _FORMAT.sub(sub, pattern)


def call_string(name: str, args: list[str | None], where: str) -> str | None:
    """Apply a string function to evaluated arguments (``None`` = a missing element)."""
    if name == "hashUID":
        return None if args[0] is None else hash_uid(args[0])
    if name == "format":
        return message_format(_need(args[0], name, where), args[1:])
    if name == "concatenate":
        if any(a is None for a in args):
            raise AnonymizeError(f"{where}: concatenate[] of a missing value")
        return "".join(a for a in args if a is not None)
    if name == "shiftDateTimeByIncrement" and args[0] is None:
        return None  # nothing to shift, nothing assigned
    value = _need(args[0], name, where)
    if name == "lowercase":
        return value.lower()
    if name == "uppercase":
        return value.upper()
    if name == "replace":
        return value.replace(_need(args[1], name, where), _need(args[2], name, where))
    if name == "substring":
        begin, end = _int(args[1], where), _int(args[2], where)
        if not 0 <= begin <= end <= len(value):
            raise AnonymizeError(
                f"{where}: substring[{begin}, {end}] out of range for a value of "
                f"{len(value)} characters"
            )
        return value[begin:end]
    if name == "match":
        found = _regex(_need(args[1], name, where), where).search(value)
        group = _int(args[2], where)
        if found is None:
            return None
        if group > (found.re.groups or 0):
            raise AnonymizeError(f"{where}: match[] has no group {group}")
        return found.group(group)
    if name == "shiftDateTimeByIncrement":
        from xnatio.anonymize.dates import shift

        return shift(value, _need(args[1], name, where), args[2] if len(args) > 2 else None, where)
    raise AnonymizeError(f"{where}: {name}[] is not a string function")  # pragma: no cover


def _need(value: str | None, name: str, where: str) -> str:
    if value is None:
        raise AnonymizeError(f"{where}: {name}[] of a missing value")
    return value


def _int(value: str | None, where: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise AnonymizeError(f"{where}: an argument is not an integer") from None


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise AnonymizeError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
        _REGEX_CACHE[pattern] = compiled
    return compiled


def full_match(value: str, pattern: str, where: str) -> bool:
    """Java's ``String.matches``: the pattern must match the whole value."""
    return _regex(pattern, where).fullmatch(value) is not None
