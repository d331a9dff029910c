"""``--report`` and ``--progress json`` for the REST transport (C-STORE: tests/test_verify.py)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _has_surrogates(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


@pytest.fixture
def byte_names(tmp_path: Path) -> dict[bytes, bytes]:
    """A source whose file names are not all valid UTF-8 (Linux allows any bytes but '/')."""
    plain = tmp_path / "plain"
    write_session(plain, series=1, instances=4, rows=16, columns=16, seed=7)
    src = os.fsencode(tmp_path / "src")
    os.mkdir(src)
    names = [b"im\xff\xfe1.dcm", b"latin-\xe9t\xe9.dcm", "ünïcødé.dcm".encode(), b"a\\xff.dcm"]
    content: dict[bytes, bytes] = {}
    for name, f in zip(names, sorted(plain.rglob("*.dcm")), strict=True):
        content[name] = f.read_bytes()
        with open(os.path.join(src, name), "wb") as fh:
            fh.write(content[name])
    with open(os.path.join(src, b"n\xe9ote.txt"), "wb") as fh:
        fh.write(b"not dicom")
    content[b"n\xe9ote.txt"] = b"not dicom"
    return content


@pytest.mark.parametrize("transport", ["rest", "dicom-store"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_report_keeps_names_that_are_not_utf8(
    make_sandbox: Callable[..., Sandbox], tmp_path: Path, byte_names: dict[bytes, bytes],
    transport: str, suffix: str,
) -> None:  # fmt: skip
    sb = make_sandbox(dicom_port=0)
    sb.store.set_prearchive_code("P1", 4)
    report = tmp_path / f"r{suffix}"
    args = ["upload-dicom", "P1", "S1", "E1", str(tmp_path / "src"), "--report", str(report)]
    if transport == "dicom-store":
        args += ["--transport", "dicom-store", "--dicom-port", str(sb.dicom_port), "--wait", "30"]
    proc = xio(*args, "--progress", "none", sb=sb)
    assert proc.returncode == 0, proc.stderr
    assert "OK: 4 of 4" in proc.stdout
    assert "verified:" in proc.stdout and "4 of 4 instances present exactly once" in proc.stdout

    raw = report.read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    if suffix == ".csv":
        rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(raw, newline="")))
    else:
        rows = [json.loads(line) for line in raw.splitlines()]
        assert not any(_has_surrogates(r) for r in rows)
    assert len(rows) == len(byte_names)  # every file, the skipped one too
    exact = {
        base64.b64decode(r["path_bytes"]) if r["path_bytes"] else r["path"].encode(): r
        for r in rows
    }
    assert set(exact) == set(byte_names)  # lossless: every name back, byte for byte
    assert exact[b"im\xff\xfe1.dcm"]["path"] == "im\\xff\\xfe1.dcm"
    assert exact[b"latin-\xe9t\xe9.dcm"]["path"] == "latin-\\xe9t\\xe9.dcm"
    assert exact["ünïcødé.dcm".encode()]["path_bytes"] == ""  # valid UTF-8: the name itself
    assert exact[b"a\\xff.dcm"]["path_bytes"] == ""  # a real backslash is not an escape
    assert exact[b"n\xe9ote.txt"]["outcome"] == "skipped"
    sent = [r for name, r in exact.items() if name.endswith(b".dcm")]
    assert {r["outcome"] for r in sent} == {"sent"} and all(r["sop_instance_uid"] for r in sent)


def test_json_summary_has_no_lone_surrogates(
    sandbox: Sandbox, tmp_path: Path, byte_names: dict[bytes, bytes]
) -> None:
    src = str(tmp_path / "src")
    for extra in (["--dry-run"], []):
        proc = xio("upload-dicom", "P1", "S1", "E1", src, "--json", *extra, sb=sandbox)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert not _has_surrogates(summary)
        (skipped,) = summary["skipped"]
        assert skipped["path"] == "n\\xe9ote.txt"
        assert base64.b64decode(skipped["path_bytes"]) == b"n\xe9ote.txt"
