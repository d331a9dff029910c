"""The layout keeps its promises: small modules and functions, no cycles between packages, and no
citation of a document that is not in the repository.

See docs/architecture.md. Sizes are counted in source lines: a module whole, a function's body
from its first statement after the docstring to its last line (numpydoc docstrings and long
keyword-only signatures are documentation, not logic).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "xnatio"
MODULES = sorted(SRC.rglob("*.py"))

MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_rel(path)} has {lines} lines"


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def body_lines(f: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``f``'s body, without its docstring."""
    body = f.body
    if len(body) > 1 and ast.get_docstring(f) is not None:
        body = body[1:]
    return (f.end_lineno or f.lineno) - body[0].lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_functions_are_small(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{f.name} ({body_lines(f)} lines, line {f.lineno})"
        for f in _functions(tree)
        if body_lines(f) > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_rel(path)}: {', '.join(long)}"


def test_body_lines_skips_the_docstring() -> None:
    tree = ast.parse('def f():\n    """Doc.\n\n    More.\n    """\n    x = 1\n    return x\n')
    assert body_lines(_functions(tree)[0]) == 2


def _node(module: str) -> str:
    """The package (or top-level module) a dotted ``xnatio...`` name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """``xnatio`` modules imported at run time (imports under ``if TYPE_CHECKING`` excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("xnatio"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("xnatio"))
    return found


def package_graph() -> dict[str, set[str]]:
    """Edges between packages: ``a -> b`` when a module of ``a`` imports one of ``b``."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in MODULES:
        name = _module_name(path)
        if name == "xnatio":
            continue  # the root only re-exports, lazily
        src = _node(name)
        for imported in _imports(path):
            dst = _node(imported)
            if dst not in (src, "xnatio"):
                graph[src].add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_cycles_between_packages() -> None:
    cycle = _cycle(package_graph())
    assert cycle is None, "import cycle between packages: " + " -> ".join(cycle or [])


def test_cycle_detection_finds_a_cycle() -> None:
    """The check above can fail."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_sandbox_uses_nothing_of_the_client() -> None:
    # anonymize: the DicomEdit engine, bytes only (dicom, errors), which XNAT's server side runs too
    allowed = {"dicom", "dimse", "xnat", "errors", "config", "sandbox", "progress", "anonymize"}
    used = package_graph().get("sandbox", set())
    assert used <= allowed, f"the sandbox imports client packages: {sorted(used - allowed)}"


FORBIDDEN = re.compile(r"xnat-server-behaviour|/work/|/home/\w+/|/Users/\w+/")


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in [
            *MODULES,
            *ROOT.glob("docs/*.md"),
            ROOT / "README.md",
            *ROOT.glob("tests/**/*.py"),
        ]
        if p.name != "test_layout.py"
    ],
    ids=_rel,
)
def test_no_citation_outside_the_repository(path: Path) -> None:
    hits = [
        f"line {i}: {line.strip()[:80]}"
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if FORBIDDEN.search(line)
    ]
    assert not hits, f"{_rel(path)} cites something users do not have: {hits}"


@pytest.mark.parametrize("init", sorted(SRC.rglob("__init__.py")), ids=lambda p: _rel(p.parent))
def test_no_exported_name_is_also_a_submodule(init: Path) -> None:
    """A package that exports ``f`` lazily (through ``__getattr__``) and has a module ``f.py``
    loses ``f`` to the module as soon as anything imports the module: the package attribute is
    then the module, and ``__getattr__`` is never asked."""
    tree = ast.parse(init.read_text(encoding="utf-8"))
    exported: set[str] = set()
    eager: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            assert isinstance(node.value, ast.List | ast.Tuple)
            exported = {ast.literal_eval(e) for e in node.value.elts}
        elif isinstance(node, ast.ImportFrom):
            eager.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            eager.add(node.name)
    modules = {p.stem for p in init.parent.glob("*.py")} | {
        p.name for p in init.parent.iterdir() if (p / "__init__.py").exists()
    }
    clash = sorted((exported - eager) & modules)
    assert not clash, f"{_rel(init.parent)} exports lazily names that are submodules: {clash}"
