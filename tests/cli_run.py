"""Running ``xio`` in the test's own process: the exit code and what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xnatio import cli


@dataclass
class Run:
    """One run of the command line."""

    code: int
    out: str
    err: str
    seconds: float = 0.0

    def json(self) -> dict[str, Any]:
        """stdout as a JSON object (``--json``)."""
        data: dict[str, Any] = json.loads(self.out)
        return data

    def one_error_line(self) -> str:
        """The single ``xio: error:`` line; no traceback, nothing else on stderr."""
        assert "Traceback" not in self.out + self.err
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        assert len(lines) == 1, self.err
        assert lines[0].startswith("xio: error: "), lines[0]
        return lines[0]


def run_cli(capsys: pytest.CaptureFixture[str], argv: Sequence[str]) -> Run:
    """``xio ARGV`` through :func:`xnatio.cli.main`, with its output captured apart."""
    capsys.readouterr()
    started = time.monotonic()
    try:
        cli.main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:  # pragma: no cover - main always exits
        code = 0
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err, time.monotonic() - started)


def run_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdin: str | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``python -m xnatio ARGS`` as a child process, as a shell runs it; ``stdin`` is its input
    (nothing to read when None)."""
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        cwd=cwd,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )
