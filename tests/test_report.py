"""``--report`` and ``--progress json`` for the REST transport (C-STORE: tests/test_verify.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

SERIES, INSTANCES = 2, 4
TOTAL = SERIES * INSTANCES


@pytest.fixture(autouse=True)
def _journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def xio(*args: str, sb: Sandbox) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XNAT_SERVER": sb.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_rest_report_and_json_progress(sandbox: Sandbox, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_session(src, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=3)
    (src / "notes.txt").write_text("not dicom")
    report = tmp_path / "r.csv"
    proc = xio(
        "upload-dicom", "P1", "S1", "E1", str(src), "--num-batches", "3",
        "--report", str(report), "--progress", "json", "--json", sb=sandbox,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert {"scanning", "uploading", "committing", "verifying", "done"} <= {
        e["phase"] for e in events
    }
    assert all({"time", "current", "total", "bytes_sent", "batch"} <= e.keys() for e in events)
    with open(report, newline="") as fh:
        rows = list(csv.DictReader(fh))
    sent = [r for r in rows if r["outcome"] == "sent"]
    assert len(sent) == TOTAL
    assert {r["unit"] for r in sent} == {"batch 1", "batch 2", "batch 3"}
    assert all(r["uri"].startswith("/data/experiments/") and r["attempts"] == "1" for r in sent)
    assert {r["series"] for r in sent} == {"1", "2"}
    skipped = [r for r in rows if r["outcome"] == "skipped"]
    assert [r["path"] for r in skipped] == ["notes.txt"] and skipped[0]["reason"]
    assert "admin" not in report.read_text()

    # A resume of a complete upload: every file already present, nothing sent.
    again = tmp_path / "again.jsonl"
    proc = xio(
        "upload-dicom", "P1", "S1", "E1", str(src), "--resume", "--report", str(again),
        sb=sandbox,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in again.read_text().splitlines()]
    assert [r["outcome"] for r in lines].count("already-present") == TOTAL


def test_bad_report_name_is_an_input_error(sandbox: Sandbox, tmp_path: Path) -> None:
    proc = xio("upload-dicom", "P1", "S1", "E1", str(tmp_path), "--report", "r.txt", sb=sandbox)
    assert proc.returncode == 2 and ".jsonl or .csv" in proc.stderr
