"""Tokens of the DicomEdit 6 language (the lexer grammar of XNAT's DicomEdit 6).

Differences from DicomEdit's own lexer are deliberate and small: a tag whose group ends in a
plain ``X`` (``(50XX,XXXX)``) and a private tag given without its creator (``(0019,100A)``) are
accepted, because both mean exactly one thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from xnatio.anonymize.errors import ScriptError

__all__ = ["Token", "tokenize"]

KEYWORDS = frozenset(
    {
        "if", "elseif", "else", "describe", "hidden", "const", "immutable", "export", "echo",
        "removeAllPrivateTags", "version",
    }
)  # fmt: skip

_HEX = r"[0-9A-Fa-fXx@#]"
_CREATOR = r"\{([A-Za-z][A-Za-z0-9 \-_.:]*)\}"
_TAG = re.compile(rf"\(\s*({_HEX}{{4}})\s*,\s*(?:{_CREATOR}({_HEX}{{2}})|({_HEX}{{4}}))\s*\)")
_TAG_LIKE = re.compile(r"\(\s*[0-9A-Za-z@#]{1,5}\s*,")
_STRING = re.compile(r'"((?:\\(?:[nrtbf()\\]|[0-7]{3})|[^\\"\n])*)"')
_NUMBER = re.compile(r"-?(?:0\.[0-9]+|[1-9][0-9]*\.[0-9]+|[1-9][0-9]*|0)(?![0-9A-Za-z_])")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SYMBOLS = (":=", "?=", "!=", "!~", "?", ":", "=", "~", "-", "[", "]", "{", "}", "(", ")", ",",
            "/", "*", "+", ".", "%")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    """One token.

    Attributes
    ----------
    kind
        ``"tag"``, ``"string"``, ``"number"``, ``"id"``, ``"keyword"``, ``"newline"``, ``"eof"``
        or the symbol itself (``":="``, ``"["``, ...).
    text
        The token as written (for ``"string"``, the value with ``\\\\`` turned into ``\\``;
        for ``"tag"``, the normalised tag text).
    line, column
        1-based position of its first character.
    parts
        For a tag: group, creator (or ``""``), element.
    """

    kind: str
    text: str
    line: int
    column: int
    parts: tuple[str, str, str] = ("", "", "")


def _string_value(body: str) -> str:
    # DicomEdit keeps escapes for regular expressions and turns only "\\" into "\".
    return body.replace("\\\\", "\\")


def tokenize(text: str, source: str = "") -> list[Token]:
    """The tokens of ``text``; comments are dropped, newlines kept (they end statements).

    Raises
    ------
    ScriptError
        A character that starts no token, or an unterminated string.
    """
    tokens: list[Token] = []
    line, line_start, i, n = 1, 0, 0, len(text)
    while i < n:
        c = text[i]
        col = i - line_start + 1
        if c in " \t\f\ufeff":
            i += 1
            continue
        if c == "\n" or text.startswith("\r\n", i):
            tokens.append(Token("newline", "\n", line, col))
            i += 1 if c == "\n" else 2
            line, line_start = line + 1, i
            continue
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        token, i = _one(text, i, line, col, source)
        tokens.append(token)
    tokens.append(Token("eof", "", line, i - line_start + 1))
    return tokens


def _one(text: str, i: int, line: int, col: int, source: str) -> tuple[Token, int]:
    c = text[i]
    if c == "(" and (m := _TAG.match(text, i)):
        group, creator, low, elem = m.groups()
        parts = (group.upper(), creator or "", (low or elem).upper())
        shown = f"({parts[0]},{{{creator}}}{parts[2]})" if creator else f"({parts[0]},{parts[2]})"
        return Token("tag", shown, line, col, parts), m.end()
    if c == '"':
        m = _STRING.match(text, i)
        if m is None:
            raise ScriptError("unterminated string or bad escape in string", line, col, source)
        return Token("string", _string_value(m.group(1)), line, col), m.end()
    if (c.isdigit() or (c == "-" and text[i + 1 : i + 2].isdigit())) and (
        m := _NUMBER.match(text, i)
    ):
        return Token("number", m.group(0), line, col), m.end()
    if (c.isalpha() and c.isascii()) or c == "_":
        m = _ID.match(text, i)
        assert m is not None
        word = m.group(0)
        return Token("keyword" if word in KEYWORDS else "id", word, line, col), m.end()
    if c == "(" and _TAG_LIKE.match(text, i):
        raise ScriptError(f"bad tag {_excerpt(text, i)}", line, col, source)
    for sym in _SYMBOLS:
        if text.startswith(sym, i):
            return Token(sym, sym, line, col), i + len(sym)
    raise ScriptError(f"unexpected character {c!r}", line, col, source)


def _excerpt(text: str, i: int) -> str:
    end = text.find(")", i)
    stop = min(
        end + 1 if end >= 0 else i + 12, text.find("\n", i) if "\n" in text[i:] else len(text)
    )
    return text[i : max(stop, i + 1)]
