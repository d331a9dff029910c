"""A recursive-descent parser for the DicomEdit 6 subset (XNAT's ``DE6Parser.g4``).

Everything is checked here, before any file is read: syntax, the version line, function names
and argument counts, variables (a variable must be built in or set on an earlier line),
literal regular expressions, and that no script writes the file meta group. Each problem is a
:class:`~xnatio.anonymize.errors.ScriptError` naming the line and column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Literal

from xnatio.anonymize.errors import ScriptError
from xnatio.anonymize.functions import UNSUPPORTED, arity
from xnatio.anonymize.lexer import Token, tokenize
from xnatio.anonymize.nodes import (
    Action,
    Assign,
    Call,
    CallStatement,
    Compare,
    Condition,
    Conditional,
    Delete,
    Describe,
    Echo,
    Expr,
    IfChain,
    Initialize,
    ListExpr,
    Literal_,
    PathRef,
    RemoveAllPrivate,
    Statement,
    Step,
    TagPath,
    TagPattern,
    Var,
)

__all__ = ["SUPPORTED_VERSIONS", "parse"]

SUPPORTED_VERSIONS = ("6.0", "6.1", "6.2", "6.3", "6.4", "6.5", "6.6", "6.7")
_VERSION_LINE = re.compile(r'^[ \t]*version[ \t]+"(\d[\d.]+)"[ \t]*(//.*)?\r?$', re.MULTILINE)
_COMPARE_OPS = ("=", "!=", "~", "!~")
_ENDS = ("newline", "eof")


class _Parser:
    def __init__(self, tokens: list[Token], source: str, builtins: Iterable[str] | None) -> None:
        self.tokens = tokens
        self.i = 0
        self.source = source
        self.builtins = None if builtins is None else set(builtins)
        self.known: set[str] = set()  # variables the script set so far
        self.free: dict[str, Token] = {}  # variables read before the script sets them

    # -- token helpers ---------------------------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, token: Token | None = None) -> ScriptError:
        t = token or self.tok
        return ScriptError(message, t.line, t.column, self.source)

    def take(self, kind: str, what: str = "") -> Token:
        t = self.tok
        if t.kind != kind:
            raise self.error(f"expected {what or kind!r}, found {_shown(t)}")
        self.i += 1
        return t

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def skip_newlines(self) -> None:
        while self.tok.kind == "newline":
            self.i += 1

    # -- statements ------------------------------------------------------------------------------

    def script(self) -> tuple[Statement, ...]:
        out: list[Statement] = []
        self.skip_newlines()
        while self.tok.kind != "eof":
            statement = self.statement()
            if statement is not None:
                out.append(statement)
            if self.tok.kind not in _ENDS:
                raise self.error(f"unexpected {_shown(self.tok)} after the statement")
            self.skip_newlines()
        return tuple(out)

    def statement(self) -> Statement | None:
        t = self.tok
        if t.kind == "keyword":
            return self.keyword_statement(t)
        if t.kind == "-" or (t.kind == "id" and self.tokens[self.i + 1].kind == ":="):
            return self.action()
        start = self.i
        left = self.value()
        nxt = self.tok
        if nxt.kind in (":=", "?="):
            self.i = start
            return self.action()
        if nxt.kind in _COMPARE_OPS or nxt.kind == "?":
            condition = self.condition_after(left, t)
            self.take("?", "?")
            then = self.action()
            otherwise = self.action() if self.accept(":") else None
            return Conditional(condition, then, otherwise, t.line)
        if isinstance(left, Call) and nxt.kind in (*_ENDS, "}"):
            return CallStatement(left, t.line)
        raise self.error(f"expected ':=', '?=', '-' or a condition, found {_shown(nxt)}", nxt)

    def keyword_statement(self, t: Token) -> Statement | None:
        word = t.text
        self.i += 1
        if word == "version":
            version = self.take("string", "a version string")
            if version.text not in SUPPORTED_VERSIONS:
                raise self.error(
                    f"unsupported version {version.text!r} (supported: "
                    f"{', '.join(SUPPORTED_VERSIONS)})",
                    version,
                )
            return None
        if word == "removeAllPrivateTags":
            return RemoveAllPrivate(t.line)
        if word == "if":
            return self.if_chain(t)
        if word == "echo":
            value = None if self.tok.kind in _ENDS else self.value()
            return Echo(value, t.line)
        if word == "describe":
            name = self.take("id", "a variable name")
            what = self.tok
            if what.kind == "string" or (
                what.kind == "keyword" and what.text in ("hidden", "const", "immutable")
            ):
                self.i += 1
                return Describe(name.text, what.text, t.line)
            raise self.error("expected a description, 'hidden', 'const' or 'immutable'")
        if word == "export":
            raise self.error("'export' (to an XNAT field) is not supported by xnatio", t)
        raise self.error(f"unexpected {word!r}", t)

    def if_chain(self, t: Token) -> IfChain:
        branches: list[tuple[Condition | None, tuple[Statement, ...]]] = []
        while True:
            self.take("(", "(")
            start = self.tok
            condition = self.condition_after(self.value(), start)
            self.take(")", ")")
            branches.append((condition, self.block()))
            mark = self.i
            self.skip_newlines()
            if self.accept("keyword", "elseif"):
                continue
            if self.accept("keyword", "else"):
                branches.append((None, self.block()))
            else:
                self.i = mark
            break
        return IfChain(tuple(branches), t.line)

    def block(self) -> tuple[Statement, ...]:
        self.skip_newlines()
        self.take("{", "{")
        out: list[Statement] = []
        self.skip_newlines()
        while not self.accept("}"):
            if self.tok.kind == "eof":
                raise self.error("missing '}' at the end of the block")
            statement = self.statement()
            if statement is not None:
                out.append(statement)
            if self.tok.kind not in ("newline", "}"):
                raise self.error(f"unexpected {_shown(self.tok)} after the statement")
            self.skip_newlines()
        return tuple(out)

    def action(self) -> Action:
        t = self.tok
        if self.accept("-"):
            path = self.tagpath()
            self.check_writable(path)
            return Delete(path, t.line)
        if self.accept("keyword", "echo"):
            return Echo(None if self.tok.kind in (*_ENDS, ":") else self.value(), t.line)
        if t.kind == "id" and self.tokens[self.i + 1].kind == ":=":
            self.i += 2
            value = self.value()
            self.known.add(t.text)
            return Initialize(t.text, value, t.line)
        left = self.value()
        op = self.tok
        if op.kind in (":=", "?=") and isinstance(left, PathRef):
            self.i += 1
            self.check_writable(left.path)
            return Assign(left.path, self.value(), op.kind == "?=", t.line)
        if isinstance(left, Call):
            return CallStatement(left, t.line)
        raise self.error(f"expected ':=' or '?=', found {_shown(op)}", op)

    def check_writable(self, path: TagPath) -> None:
        first = path.steps[0].pattern
        if first is not None and first.group == "0002":
            raise ScriptError(
                "the file meta group (0002,xxxx) cannot be edited; it follows the data set",
                path.line,
                path.column,
                self.source,
            )

    # -- conditions and values ---------------------------------------------------------------------

    def condition_after(self, left: Expr, start: Token) -> Condition:
        op = self.tok
        if op.kind in _COMPARE_OPS:
            self.i += 1
            right = self.value()
            if op.kind in ("~", "!~") and isinstance(right, Literal_):
                try:
                    re.compile(right.value)
                except re.error as exc:
                    raise self.error(f"bad regular expression {right.value!r}: {exc}", op) from None
            return Compare(left, op.kind, right)
        if isinstance(left, Call):
            return left
        raise self.error(f"expected '=', '!=', '~' or '!~', found {_shown(op)}", op)

    def value(self) -> Expr:
        t = self.tok
        if t.kind in ("string", "number"):
            self.i += 1
            return Literal_(t.text)
        if t.kind == "{":
            return self.list_value()
        if t.kind == "id":
            if self.tokens[self.i + 1].kind == "[":
                return self.call()
            self.i += 1
            if t.text not in self.known:
                if self.builtins is not None and t.text not in self.builtins:
                    raise self.error(f"unknown variable {t.text!r}", t)
                self.free.setdefault(t.text, t)
            return Var(t.text, t.line, t.column)
        if t.kind in ("tag", "*", "+", "."):
            return PathRef(self.tagpath())
        raise self.error(f"expected a value, found {_shown(t)}")

    def list_value(self) -> ListExpr:
        self.take("{")
        items: list[Expr] = []
        self.skip_newlines()
        while not self.accept("}"):
            if items:
                self.take(",", ",")
                self.skip_newlines()
            items.append(self.value())
            self.skip_newlines()
        return ListExpr(tuple(items))

    def call(self) -> Call:
        name = self.take("id")
        self.take("[")
        args: list[Expr] = []
        while not self.accept("]"):
            if args:
                self.take(",", "',' or ']'")
            args.append(self.value())
        if name.text in UNSUPPORTED:
            raise self.error(
                f"function {name.text}[] is not supported by xnatio ({UNSUPPORTED[name.text]})",
                name,
            )
        bounds = arity(name.text)
        if bounds is None:
            raise self.error(f"unknown function {name.text}[]", name)
        low, high = bounds
        if len(args) < low or (high is not None and len(args) > high):
            count = (
                str(low) if low == high else f"{low} or more" if high is None else f"{low}-{high}"
            )
            raise self.error(f"{name.text}[] takes {count} arguments, not {len(args)}", name)
        return Call(name.text, tuple(args), name.line, name.column)

    def tagpath(self) -> TagPath:
        first = self.tok
        steps: list[Step] = []
        while True:
            t = self.tok
            if t.kind in ("*", "+", "."):
                self.i += 1
                steps.append(Step(None, t.kind))
            elif t.kind == "tag":
                self.i += 1
                group, creator, element = t.parts
                pattern = TagPattern(group, element, creator)
                if pattern.concrete and not _known(pattern.tag):
                    raise self.error(f"unknown tag {pattern.text}: not in the DICOM dictionary", t)
                steps.append(Step(pattern, "", self.item_number()))
            else:
                raise self.error(f"expected a tag, found {_shown(t)}")
            if not self.accept("/"):
                break
        if steps[-1].pattern is None:
            raise self.error("a tag path must end with a tag", first)
        if steps[-1].item is not None:
            raise self.error("a tag path must not end with an item number", first)
        text = "/".join(_step_text(s) for s in steps)
        return TagPath(tuple(steps), text, first.line, first.column)

    def item_number(self) -> int | Literal["%"] | None:
        if not self.accept("["):
            return None
        t = self.tok
        if self.accept("%"):
            item: int | Literal["%"] = "%"
        elif t.kind == "number" and t.text.isdigit():
            self.i += 1
            item = int(t.text)
        else:
            raise self.error(f"expected an item number or %, found {_shown(t)}")
        self.take("]", "]")
        return item


@lru_cache(maxsize=1)
def _profile_tags() -> frozenset[str]:
    from xnatio.anonymize._basic_table import ROWS

    return frozenset(row[0] for row in ROWS)


def _known(tag: int) -> bool:
    """A private tag, a group length, or an attribute of pydicom's dictionary (retired ones too)
    or of the Basic Profile's table (which can be newer than the installed pydicom)."""
    if tag >> 16 & 1 or tag & 0xFFFF == 0:
        return True
    from pydicom.datadict import get_entry

    if f"({tag >> 16:04X},{tag & 0xFFFF:04X})" in _profile_tags():
        return True
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


def _step_text(step: Step) -> str:
    if step.pattern is None:
        return step.wildcard
    item = "" if step.item is None else f"[{step.item}]"
    return step.pattern.text + item


def _shown(t: Token) -> str:
    if t.kind == "eof":
        return "the end of the script"
    if t.kind == "newline":
        return "the end of the line"
    return repr(t.text)


def parse(
    text: str, *, source: str = "", builtins: Iterable[str] | None = None
) -> tuple[tuple[Statement, ...], dict[str, tuple[int, int]]]:
    """Parse a DicomEdit 6 script.

    Parameters
    ----------
    text
        The script.
    source
        How to name the script in errors (a file name, ``"site script"``...).
    builtins
        Variables the caller will provide (``project``, ``subject``, ``session``...); with
        ``None``, any variable the script reads before setting it is taken as one.

    Returns
    -------
    tuple
        The statements, and the variables the script reads before setting them (name ->
        line, column of the first use).

    Raises
    ------
    ScriptError
        Empty script, no or bad version line, a syntax error, an unknown or unsupported function,
        an unknown variable, a bad literal regular expression, or an edit of group 0002.
    """
    if not text.strip() or all(
        not line.strip() or line.strip().startswith("//") for line in text.splitlines()
    ):
        raise ScriptError("the script is empty", source=source)
    found = _VERSION_LINE.search(text)
    if found is None:
        hint = " (DicomEdit 4 scripts are not supported)"
        if re.search(r"^\s*version\b", text, re.MULTILINE):
            hint = ' (write it as: version "6.1")'
        raise ScriptError(f"no version line{hint}", source=source)
    parser = _Parser(tokenize(text, source), source, builtins)
    statements = parser.script()
    return statements, {name: (t.line, t.column) for name, t in parser.free.items()}
