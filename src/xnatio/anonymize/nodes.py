"""The compiled form of a script: tag patterns, tag paths, expressions and statements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Assign",
    "Call",
    "Compare",
    "Conditional",
    "Delete",
    "Describe",
    "Echo",
    "Expr",
    "IfChain",
    "Initialize",
    "ListExpr",
    "Literal_",
    "PathRef",
    "RemoveAllPrivate",
    "Statement",
    "Step",
    "TagPath",
    "TagPattern",
    "Var",
]


def _nibbles(text: str) -> tuple[int, int]:
    """Value and mask of a 4-digit pattern: X matches any digit, @ any even one, # any odd one."""
    value = mask = 0
    for ch in text:
        value <<= 4
        mask <<= 4
        if ch in "Xx":
            continue
        if ch == "@":
            mask |= 0x1
        elif ch == "#":
            mask |= 0x1
            value |= 0x1
        else:
            value |= int(ch, 16)
            mask |= 0xF
    return value, mask


def _max_of(text: str) -> int:
    return int("".join("E" if c == "@" else "F" if c in "Xx#" else c for c in text), 16)


@dataclass(frozen=True, slots=True)
class TagPattern:
    """One element of a tag path: a tag, possibly with wildcard digits or a private creator.

    Attributes
    ----------
    group, element
        The digits as written (upper case); ``element`` is two digits when ``creator`` is set.
    creator
        Private creator ID for ``(gggg,{CREATOR}ee)``, else ``""``.
    concrete
        No wildcard digit and no creator: exactly one tag, :attr:`tag`.
    group_match, element_match
        (value, mask) of the group and of the element (of its low byte for a creator).
    """

    group: str
    element: str
    creator: str = ""
    concrete: bool = field(init=False, compare=False)
    tag: int = field(init=False, compare=False)
    group_match: tuple[int, int] = field(init=False, compare=False)
    element_match: tuple[int, int] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: scripts match patterns against every element of every file.
        plain = all(c not in "Xx@#" for c in self.group + self.element)
        object.__setattr__(self, "concrete", plain and not self.creator)
        object.__setattr__(self, "tag", int(self.group + self.element, 16) if plain else -1)
        object.__setattr__(self, "group_match", _nibbles(self.group))
        object.__setattr__(self, "element_match", _nibbles(self.element))

    @property
    def text(self) -> str:
        """The tag as DicomEdit writes it."""
        if self.creator:
            return f"({self.group},{{{self.creator}}}{self.element})"
        return f"({self.group},{self.element})"

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` matches, ignoring any creator (checked by the data set)."""
        gv, gm = self.group_match
        ev, em = self.element_match
        if (tag >> 16) & gm != gv:
            return False
        if self.creator:
            return (tag & 0xFF) & em == ev and (tag >> 8 & 0xFF) >= 0x10
        return (tag & 0xFFFF) & em == ev

    @property
    def highest(self) -> int:
        """The highest tag this pattern can match (the whole group for a creator)."""
        group = _max_of(self.group)
        if self.creator:
            return group << 16 | 0xFFFF
        return group << 16 | _max_of(self.element)

    @property
    def private(self) -> bool:
        """An odd group (every match is private)."""
        return self.group[-1] in "13579BDF#"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a path: a tag pattern (with an item selector) or a sequence wildcard.

    Attributes
    ----------
    pattern
        The tag, or ``None`` for a wildcard step.
    wildcard
        ``"*"`` (any depth, including none), ``"+"`` (one level or more) or ``"."`` (exactly
        one level); ``""`` for a tag step.
    item
        For a sequence step, the item index, ``"%"`` for any item, or ``None`` (any item).
    """

    pattern: TagPattern | None
    wildcard: str = ""
    item: int | Literal["%"] | None = None


@dataclass(frozen=True, slots=True)
class TagPath:
    """A tag path such as ``(0008,1115)[0]/(0020,000E)`` or ``*/(0010,0010)``."""

    steps: tuple[Step, ...]
    text: str
    line: int = 0
    column: int = 0
    concrete: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # One element at most: no wildcard step or digit, no "%" item before the last step.
        concrete = True
        for i, step in enumerate(self.steps):
            pattern = step.pattern
            wild = pattern is None or any(c in "Xx@#" for c in pattern.group + pattern.element)
            if wild or (i < len(self.steps) - 1 and not isinstance(step.item, int)):
                concrete = False
        object.__setattr__(self, "concrete", concrete)

    @property
    def last(self) -> TagPattern:
        """The element the path ends at."""
        pattern = self.steps[-1].pattern
        assert pattern is not None
        return pattern

    @property
    def highest_top(self) -> int:
        """The highest top-level tag this path can touch."""
        first = self.steps[0].pattern
        return 0xFFFFFFFF if first is None else first.highest


# -- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal_:  # noqa: N801 - Literal is typing's
    """A string or number constant (numbers are kept as written)."""

    value: str


@dataclass(frozen=True, slots=True)
class Var:
    """A variable: built-in (``project``, ``subject``, ``session``...) or set by the script."""

    name: str
    line: int = 0
    column: int = 0


@dataclass(frozen=True, slots=True)
class PathRef:
    """A tag path used as a value (its element's value) or as a function argument."""

    path: TagPath


@dataclass(frozen=True, slots=True)
class Call:
    """A function call ``name[arg, ...]``."""

    name: str
    args: tuple[Expr, ...]
    line: int = 0
    column: int = 0


@dataclass(frozen=True, slots=True)
class ListExpr:
    """A list ``{a, b, ...}``."""

    items: tuple[Expr, ...]


Expr = Literal_ | Var | PathRef | Call | ListExpr


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right`` with op one of ``=``, ``!=``, ``~``, ``!~``."""

    left: Expr
    op: str
    right: Expr


Condition = Compare | Call

# -- statements --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assign:
    """``path := value`` (or ``path ?= value`` with ``if_exists``)."""

    path: TagPath
    value: Expr
    if_exists: bool = False
    line: int = 0


@dataclass(frozen=True, slots=True)
class Initialize:
    """``name := value``."""

    name: str
    value: Expr
    line: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """``-path``."""

    path: TagPath
    line: int = 0


@dataclass(frozen=True, slots=True)
class CallStatement:
    """A function called for its effect (``hashUIDList[...]``, ``reject[]``)."""

    call: Call
    line: int = 0


@dataclass(frozen=True, slots=True)
class Echo:
    """``echo value``: the value goes to the echo callback (standard error in the CLI)."""

    value: Expr | None
    line: int = 0


@dataclass(frozen=True, slots=True)
class RemoveAllPrivate:
    """``removeAllPrivateTags``: every element of an odd group, at every depth."""

    line: int = 0


@dataclass(frozen=True, slots=True)
class Describe:
    """``describe name ...``: a prompt for upload forms; no effect on the data."""

    name: str
    text: str
    line: int = 0


Action = Assign | Initialize | Delete | CallStatement | Echo


@dataclass(frozen=True, slots=True)
class Conditional:
    """``condition ? action : action``."""

    condition: Condition
    then: Action
    otherwise: Action | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class IfChain:
    """``if (c) {...} elseif (c) {...} else {...}``; ``None`` is the else branch."""

    branches: tuple[tuple[Condition | None, tuple[Statement, ...]], ...] = field(default=())
    line: int = 0


Statement = Action | Conditional | IfChain | RemoveAllPrivate | Describe
