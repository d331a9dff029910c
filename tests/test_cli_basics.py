"""The command line's basic contract: version, help, module entry point, and exit codes."""

from __future__ import annotations

import subprocess
import sys

import xnatio


def run_xio(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args], capture_output=True, text=True, timeout=60
    )


def test_version_matches_package() -> None:
    proc = run_xio("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"xio {xnatio.__version__}"


def test_help_lists_commands() -> None:
    proc = run_xio("-h")
    assert proc.returncode == 0
    for name in ("upload-dicom", "sandbox", "synth"):
        assert name in proc.stdout


def test_unknown_command_is_usage_error() -> None:
    proc = run_xio("no-such-command")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
