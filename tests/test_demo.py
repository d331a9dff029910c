"""``xio demo``: the README's main-job command, end to end on the embedded sandbox."""

from __future__ import annotations

import subprocess
import sys


def test_demo_uploads_and_verifies_both_transports() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "xnatio", "demo", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("REST:     OK  300/300") for line in lines), proc.stdout
    assert any(line.startswith("C-STORE:  OK  300/300") for line in lines), proc.stdout
    assert "verified 300/300" in proc.stdout
    assert "Traceback" not in proc.stderr
