"""Every example in README.md and docs/*.md runs here, so the docs cannot drift from the code.

The fenced blocks marked ``sh``, ``console`` and ``python`` are examples. Each document's runnable
blocks run in order, in one scratch folder, against a sandbox (HTTP and DICOM SCP) started for
that document. The examples find it through the environment:

* ``XNAT_SERVER``, ``XNAT_USERNAME``, ``XNAT_PASSWORD``: the sandbox and its account;
* ``XNAT_DICOM_HOST``, ``XNAT_DICOM_PORT`` (and ``SANDBOX_DICOM_PORT``): its DICOM SCP;
* ``HOME`` and ``XDG_CACHE_HOME`` point into the scratch folder (no ``~/.netrc``, fresh journals).

How each kind of block runs:

* ``sh``: one bash script (``set -e -o pipefail``); it must exit 0.
* ``console``: lines starting with ``$ `` are commands (a trailing ``\\`` continues one), the lines
  after a command are its output as the reader sees it. Each command must exit 0 (show a failure
  with ``|| echo "exit code $?"``). Each shown output line must match a line of the real output
  (stdout and stderr together), in order; ``...`` in a shown line stands for any text.
* ``python``: a script run by the project's Python; it must exit 0.

A block that cannot run here (installing, a real server, ``bash .ci/run``, a command that runs
until Ctrl-C) has ``<!-- not-run: reason -->`` on the line before its fence. For those, and for
every other block, each ``xio`` command line must still parse: the sub-command exists and every
option it uses appears in that sub-command's ``-h``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from xnatio.cli import app
from xnatio.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE_LANGS = {"sh", "console", "python"}
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.+?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
BLOCK_TIMEOUT = 180.0


@dataclass(frozen=True)
class Block:
    """One fenced block of a document."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    not_run: str | None  # the reason, when marked not-run

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def parse_blocks(doc: Path) -> list[Block]:
    """The fenced blocks of ``doc``, with the not-run reason of each (if any)."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = NOT_RUN.match(lines[prev].strip()) if prev >= 0 else None
        blocks.append(
            Block(
                doc=doc,
                line=start + 1,
                lang=m.group("lang"),
                text="\n".join(lines[start + 1 : j]) + "\n",
                not_run=marker.group("reason") if marker else None,
            )
        )
        i = j + 1
    return blocks


def examples(doc: Path) -> list[Block]:
    return [b for b in parse_blocks(doc) if b.lang in EXAMPLE_LANGS]


# -- console blocks ---------------------------------------------------------------------------


@dataclass
class ConsoleStep:
    command: str
    shown: list[str]


def parse_console(text: str) -> list[ConsoleStep]:
    """Split a console block into commands (``$ ...``) and the output shown after each."""
    steps: list[ConsoleStep] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + "\n" + lines[i]
            steps.append(ConsoleStep(command, []))
        elif line.strip():
            if not steps:
                raise AssertionError(f"console output before any command: {line!r}")
            steps[-1].shown.append(line)
        i += 1
    return steps


def shown_pattern(line: str) -> re.Pattern[str]:
    """A shown output line as a pattern: ``...`` is any text, runs of spaces are any spaces."""
    parts = [re.escape(p) for p in re.split(r"\.\.\.", line.strip())]
    body = ".*".join(parts)
    body = re.sub(r"(\\ )+", r"\\s+", body)
    return re.compile(body)


def check_shown(shown: list[str], actual: str) -> str | None:
    """None when every shown line matches a line of ``actual``, in order; else what is wrong."""
    real = [ln.strip() for ln in actual.splitlines() if ln.strip()]
    pos = 0
    for line in shown:
        pattern = shown_pattern(line)
        while pos < len(real) and not pattern.fullmatch(real[pos]):
            pos += 1
        if pos == len(real):
            return f"shown line not found (in order) in the output: {line!r}"
        pos += 1
    return None


def run_console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    steps = parse_console(block.text)
    assert steps, f"{block.where}: console block without a '$ ' command"
    script = []
    for n, step in enumerate(steps):
        # The newline before the marker keeps it on its own line after output without one.
        script += [f"echo '@@step {n}'", step.command, f"__rc=$?; printf '\\n@@rc {n} %s\\n' $__rc"]
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current: int | None = None
    for line in proc.stdout.splitlines():
        if m := re.fullmatch(r"@@step (\d+)", line):
            current = int(m.group(1))
            outputs[current] = []
        elif m := re.fullmatch(r"@@rc (\d+) (\d+)", line):
            codes[int(m.group(1))] = int(m.group(2))
            current = None
        elif current is not None:
            outputs[current].append(line)
    for n, step in enumerate(steps):
        out = "\n".join(outputs.get(n, []))
        context = f"{block.where}: $ {step.command}\n--- output ---\n{out}\n--------------"
        assert codes.get(n) == 0, f"exit code {codes.get(n)}\n{context}"
        problem = check_shown(step.shown, out)
        assert problem is None, f"{problem}\n{context}"


def run_script(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.lang == "python":
        argv = [sys.executable, "-c", block.text]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", block.text]
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=BLOCK_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{block.where}: {block.lang} block exited {proc.returncode}\n"
        f"--- block ---\n{block.text}--- output ---\n{proc.stdout}"
    )


# -- the tests --------------------------------------------------------------------------------

RUNNABLE_DOCS = [d for d in DOCS if any(b.not_run is None for b in examples(d))]


def example_env(sandbox: Sandbox, scratch: Path) -> dict[str, str]:
    """The environment the examples run in (see the module docstring)."""
    home = scratch / "home"
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XNAT_", "XNATIO_", "PYTEST_")) and k not in ("HOME", "COLUMNS")
    }
    env.update(
        {
            "HOME": str(home),
            "XDG_CACHE_HOME": str(scratch / "cache"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "XNAT_SERVER": sandbox.url,
            "XNAT_USERNAME": "admin",
            "XNAT_PASSWORD": "admin",
            "XNAT_DICOM_HOST": "127.0.0.1",
            "XNAT_DICOM_PORT": str(sandbox.dicom_port),
            "SANDBOX_DICOM_PORT": str(sandbox.dicom_port),
        }
    )
    return env


@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_examples_run(doc: Path, make_sandbox: Callable[..., Sandbox], tmp_path: Path) -> None:
    """Run the document's runnable blocks in order against a fresh sandbox."""
    sandbox = make_sandbox(dicom_port=0)
    scratch = tmp_path / "work"
    scratch.mkdir()
    env = example_env(sandbox, scratch)
    for block in examples(doc):
        if block.not_run is not None:
            continue
        if block.lang == "console":
            run_console(block, scratch, env)
        else:
            run_script(block, scratch, env)


def xio_commands(text: str) -> list[list[str]]:
    """The ``xio ...`` command lines of a shell or console block, as argument lists."""
    found: list[list[str]] = []
    joined = re.sub(r"\\\n", " ", text)
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ")
        for part in re.split(r"\|\||&&|[|;]", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            while words and ("=" in words[0] and not words[0].startswith("-")):
                words = words[1:]  # VAR=value prefixes
            if words and words[0] in ("env", "exec", "time", "command"):
                words = words[1:]
            if words and Path(words[0]).name in ("xio", "xnatio"):
                found.append(words[1:])
    return found


def _option_names(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def check_xio_line(args: list[str]) -> str | None:
    """None when ``xio ARGS`` names a sub-command and only options that its help lists."""
    if not args or args[0] in ("-h", "--help", "--version"):
        return None
    ctx = click.Context(app, info_name="xio")
    command = app.get_command(ctx, args[0])
    if command is None:
        return f"xio has no command {args[0]!r}"
    help_text = command.get_help(click.Context(command, info_name=f"xio {args[0]}"))
    known = _option_names(command)
    for word in args[1:]:
        if not word.startswith("-") or word == "-":
            continue
        flag = word.split("=", 1)[0]
        if flag not in known or flag not in help_text:
            return f"xio {args[0]} has no option {flag!r}"
    return None


ALL_BLOCKS = [b for d in DOCS for b in examples(d)]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.where)
def test_xio_command_lines_parse(block: Block) -> None:
    """Every ``xio`` line of every example (run or not) uses real commands and options."""
    if block.lang == "python":
        return
    problems = [p for args in xio_commands(block.text) if (p := check_xio_line(args))]
    assert not problems, f"{block.where}: " + "; ".join(problems)


def test_the_docs_have_runnable_examples() -> None:
    """Guards the parser: the README and the docs do hold examples that run."""
    readme = examples(ROOT / "README.md")
    assert any(b.not_run is None for b in readme)
    assert sum(1 for b in ALL_BLOCKS if b.not_run is None) >= 10
    for block in ALL_BLOCKS:
        if block.lang == "console":
            assert parse_console(block.text), f"{block.where}: no '$ ' command"


def test_readme_keeps_the_two_commands() -> None:
    """The main-job and test commands stay in the README, near the top, exactly."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text[:3000]
    main_job = "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/xio demo"
    assert main_job in head
    assert "bash .ci/run" in head


def test_helpers_understand_the_conventions() -> None:
    """The block parser, the output matcher and the command-line checker themselves."""
    assert check_shown(["OK: ... files", "done"], "x\nOK: 10 of 10 files\nmore\ndone\n") is None
    assert check_shown(["done", "OK: ..."], "OK: 1\ndone\n") is not None
    assert xio_commands('$ X=1 xio verify P S E dir --json || echo "exit $?"') == [
        ["verify", "P", "S", "E", "dir", "--json"]
    ]
    assert check_xio_line(["verify", "P", "S", "E", "d", "--json"]) is None
    assert check_xio_line(["verify", "--no-such-flag"]) is not None
    assert check_xio_line(["no-such-command"]) is not None
    steps = parse_console("$ echo a \\\n  b\na b\n$ true\n")
    assert [s.command for s in steps] == ["echo a \n  b", "true"]
    assert steps[0].shown == ["a b"]


def test_sandbox_doc_lists_every_route() -> None:
    """docs/sandbox.md's endpoint table names every route of the sandbox, with its methods."""
    from xnatio.sandbox.server import iter_routes

    text = (ROOT / "docs" / "sandbox.md").read_text(encoding="utf-8")
    rows: dict[str, set[str]] = {}
    for m in re.finditer(r"^\|\s*([A-Z, ]+?)\s*\|\s*`([^`]+)`", text, flags=re.MULTILINE):
        path = re.sub(r"\{[^}]*\}", "{}", m.group(2))
        rows[path] = {w.strip() for w in m.group(1).split(",")}
    missing = []
    for methods, pattern in iter_routes():
        path = pattern.replace("{*}", "{}")
        if rows.get(path) != set(methods.split(",")):
            missing.append(f"{methods} {pattern}")
    assert not missing, f"docs/sandbox.md's endpoint table lacks or misstates: {missing}"
