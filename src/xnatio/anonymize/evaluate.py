"""Run compiled statements against one data set tree (DicomEdit's visitor semantics).

Statements run top to bottom and see each other's edits. Values are strings; a missing element
is ``None``, which never equals anything, matches no regular expression, and leaves an element
unchanged when assigned (as ``hashUID`` of a missing element does in XNAT).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from xnatio.anonymize import paths
from xnatio.anonymize.errors import AnonymizeError, InstanceRejected
from xnatio.anonymize.functions import (
    STRING_FUNCTIONS,
    call_string,
    full_match,
    hash_uid,
    seeded_uid,
)

# The syntax tree's node types, as the parser that builds them imports them (the same names).
from xnatio.anonymize.nodes import (
    Assign,
    Call,
    CallStatement,
    Compare,
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
    TagPath,
    Var,
)
from xnatio.anonymize.tree import DataSet, Element
from xnatio.anonymize.values import decode

__all__ = ["Run", "guard", "horizon", "run_statements"]

Value = str | None | list["Value"]
ALL_TAGS = 0xFFFFFFFF


@dataclass(slots=True)
class Run:
    """The state of applying scripts to one file.

    Attributes
    ----------
    ds
        The data set tree being edited.
    source
        Script name for messages.
    variables
        Built-in variables, then the script's own.
    salt, key
        Per-run secret and per-file key for ``newUID``/``mapUID``.
    echo
        Receives ``echo`` output.
    """

    ds: DataSet
    source: str
    variables: dict[str, Value]
    salt: str
    key: str
    echo: Callable[[str], None] | None = None
    counter: int = 0
    line: int = field(default=0)

    @property
    def where(self) -> str:
        """The script and line being run, for messages."""
        return f"{self.source}, line {self.line}"


def run_statements(
    run: Run, statements: Sequence[Statement], guards: Sequence[int | None] | None = None
) -> None:
    """Execute ``statements`` in order.

    ``guards`` (from :func:`guard`, one per statement) lets a statement that can only act on
    an element of one tag be skipped when no element of that tag was read: a generated profile
    has hundreds of such rules, and most tags are absent from any one file.
    """
    index = run.ds.index
    for i, st in enumerate(statements):
        if guards is not None:
            tag = guards[i]
            if tag is not None and tag not in index:
                continue
        run.line = st.line
        _execute(run, st)


def guard(st: Statement) -> int | None:
    """The tag without which ``st`` does nothing, or ``None`` if there is no such tag."""
    if isinstance(st, Delete) or (isinstance(st, Assign) and st.if_exists):
        path = st.path
    elif (
        isinstance(st, CallStatement)
        and st.call.name == "hashUIDList"
        and len(st.call.args) == 1
        and isinstance(st.call.args[0], PathRef)
    ):
        path = st.call.args[0].path
    else:
        return None
    last = path.steps[-1].pattern
    if last is None or not last.concrete:
        return None
    return last.tag


def _execute(run: Run, st: Statement) -> None:
    if isinstance(st, Conditional):
        if _condition(run, st.condition):
            _execute(run, st.then)
        elif st.otherwise is not None:
            _execute(run, st.otherwise)
    elif isinstance(st, IfChain):
        for condition, block in st.branches:
            if condition is None or _condition(run, condition):
                run_statements(run, block)
                return
    elif isinstance(st, Assign):
        _assign(run, st)
    elif isinstance(st, Initialize):
        run.variables[st.name] = _eval(run, st.value)
    elif isinstance(st, Delete):
        for el in paths.find(run.ds, st.path):
            paths.delete(el)
    elif isinstance(st, RemoveAllPrivate):
        for el in list(run.ds.walk()):
            if el.tag >> 16 & 1:
                paths.delete(el)
    elif isinstance(st, CallStatement):
        _call(run, st.call)
    elif isinstance(st, Echo):
        if run.echo is not None:
            value = "" if st.value is None else _text(run, _eval(run, st.value))
            run.echo(value if value is not None else "null")
    elif isinstance(st, Describe):
        pass  # a prompt for upload forms; nothing to do to the data
    else:  # pragma: no cover - the parser makes no other statement
        raise AssertionError(st)


def _assign(run: Run, st: Assign) -> None:
    value = _text(run, _eval(run, st.value))
    if value is None:
        return  # a missing value assigns nothing (XNAT's hashUID of a missing tag)
    found = paths.find(run.ds, st.path)
    if not found and not st.if_exists and st.path.concrete:
        found = [paths.create(run.ds, st.path, run.where)]
    for el in found:
        paths.set_value(run.ds, el, value, run.where)


def _condition(run: Run, condition: Compare | Call) -> bool:
    if isinstance(condition, Call):
        return _text(run, _call(run, condition)) == "true"
    left = _text(run, _eval(run, condition.left))
    right = _text(run, _eval(run, condition.right))
    op = condition.op
    if op == "=":
        return left is not None and left == right
    if op == "!=":
        return left is None or left != right
    matched = left is not None and right is not None and full_match(left, right, run.where)
    return matched if op == "~" else not matched


def _text(run: Run, value: Value) -> str | None:
    if isinstance(value, list):
        raise AnonymizeError(f"{run.where}: a list cannot be used as a single value")
    return value


def _eval(run: Run, expr: Expr) -> Value:
    if isinstance(expr, Literal_):
        return expr.value
    if isinstance(expr, Var):
        return run.variables[expr.name]
    if isinstance(expr, PathRef):
        return path_value(run, expr.path)
    if isinstance(expr, Call):
        return _call(run, expr)
    if isinstance(expr, ListExpr):
        return [_eval(run, e) for e in expr.items]
    raise AssertionError(expr)  # pragma: no cover


def path_value(run: Run, path: TagPath) -> str | None:
    """The string value of the one element ``path`` names, ``None`` if there is none."""
    found = paths.find(run.ds, path)
    if not found:
        return None
    if len(found) > 1:
        raise AnonymizeError(f"{run.where}: {path.text} matches {len(found)} elements, not one")
    return element_text(run.ds, found[0], run.where)


def element_text(ds: DataSet, el: Element, where: str) -> str:
    """The value of ``el`` as DicomEdit's string."""
    if el.items is not None:
        raise AnonymizeError(f"{where}: ({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) is a sequence")
    if el.raw is None:
        raise AnonymizeError(
            f"{where}: ({el.tag >> 16:04X},{el.tag & 0xFFFF:04X}) is too large to read"
        )
    return decode(el.raw, el.vr, el.parent.little_endian, ds.charset())


def _flat(values: Sequence[Value]) -> list[str | None]:
    out: list[str | None] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_flat(v))
        else:
            out.append(v)
    return out


def _call(run: Run, call: Call) -> Value:
    name = call.name
    if name in STRING_FUNCTIONS:
        args = _flat([_eval(run, a) for a in call.args])
        return call_string(name, args, run.where)
    if name in ("true", "false"):
        return name
    if name == "reject":
        raise InstanceRejected(f"{run.where}: the script rejected this instance")
    if name == "newUID":
        run.counter += 1
        return seeded_uid(run.salt, run.key, str(run.counter))
    if name == "mapUID":
        value = _text(run, _eval(run, call.args[0]))
        if value is None:
            return None
        uid = seeded_uid(run.salt, value)
        if len(call.args) > 1 and (prefix := _text(run, _eval(run, call.args[1]))):
            uid = (prefix.rstrip(".") + "." + uid[5:])[:64]
        return uid
    targets = [_arg_path(run, a, name) for a in call.args]
    if name == "isPresent":
        return "true" if all(paths.find(run.ds, p) for p in targets) else "false"
    if name == "hashUIDList":
        for p in targets:
            for el in paths.find(run.ds, p):
                old = element_text(run.ds, el, run.where)
                new = "\\".join(hash_uid(v) for v in old.split("\\")) if old else old
                paths.set_value(run.ds, el, new, run.where)
        return None
    if name == "retainPrivateTags":
        _retain_private(run, targets)
        return None
    raise AssertionError(name)  # pragma: no cover


def _arg_path(run: Run, arg: Expr, name: str) -> TagPath:
    if isinstance(arg, PathRef):
        return arg.path
    raise AnonymizeError(f"{run.where}: {name}[] takes tag paths")


def _retain_private(run: Run, keep: list[TagPath]) -> None:
    kept: set[int] = set()
    for p in keep:
        for el in paths.find(run.ds, p):
            kept.add(id(el))
            group, block = el.tag >> 16, el.tag >> 8 & 0xFF
            creator = el.parent.find(group << 16 | block)
            if creator is not None:
                kept.add(id(creator))
    for el in list(run.ds.walk()):
        if el.tag >> 16 & 1 and id(el) not in kept and not _inside(el, kept):
            paths.delete(el)


def _inside(el: Element, kept: set[int]) -> bool:
    owner = el.parent.owner
    while owner is not None:
        if id(owner) in kept:
            return True
        owner = owner.parent.owner
    return False


def horizon(statements: Iterable[Statement]) -> int:
    """The highest top-level tag the statements can read or change."""
    high = 0x00080005  # Specific Character Set: needed to read and write text
    for st in statements:
        high = max(high, _statement_horizon(st))
    return high


def _statement_horizon(st: Statement) -> int:
    if isinstance(st, RemoveAllPrivate):
        return ALL_TAGS
    if isinstance(st, Conditional):
        parts: list[object] = [st.condition, st.then, st.otherwise]
    elif isinstance(st, IfChain):
        high = 0
        for condition, block in st.branches:
            high = max(high, _expr_horizon(condition), horizon(block))
        return high
    elif isinstance(st, Assign | Delete):
        return max(st.path.highest_top, _expr_horizon(getattr(st, "value", None)))
    elif isinstance(st, Initialize | Echo):
        parts = [st.value]
    elif isinstance(st, CallStatement):
        parts = [st.call]
    else:
        return 0
    return max(
        (_statement_horizon(p) if isinstance(p, Statement) else _expr_horizon(p) for p in parts),
        default=0,
    )


def _expr_horizon(expr: object) -> int:
    if isinstance(expr, PathRef):
        return expr.path.highest_top
    if isinstance(expr, Call):
        if expr.name == "retainPrivateTags":
            return ALL_TAGS
        return max((_expr_horizon(a) for a in expr.args), default=0)
    if isinstance(expr, ListExpr):
        return max((_expr_horizon(a) for a in expr.items), default=0)
    if isinstance(expr, Compare):
        return max(_expr_horizon(expr.left), _expr_horizon(expr.right))
    return 0
