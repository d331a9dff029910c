"""Verification against the sandbox: each kind of mismatch, where the session is, the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.uploaders import upload_dicom_parallel_rest
from xnatio.verify import VerifyReport, verify_session

SERIES, INSTANCES = 2, 5
TOTAL = SERIES * INSTANCES


@pytest.fixture(autouse=True)
def _journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vsrc") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=11)
    return out


def upload(sb: Sandbox, src: Path, session: str = "E1") -> None:
    result = upload_dicom_parallel_rest(
        server=sb.url,
        username="admin",
        password="admin",
        source_dir=src,
        project="P1",
        subject="S1",
        session=session,
        num_batches=2,
        upload_workers=2,
        journal=False,
    )
    assert result.success, result.errors


def check(sb: Sandbox, src: Path, session: str = "E1", **kw: Any) -> VerifyReport:
    return verify_session(
        server=sb.url,
        username="admin",
        password="admin",
        project="P1",
        subject="S1",
        session=session,
        source_dir=src,
        **kw,
    )


def env_for(sb: Sandbox) -> dict[str, str]:
    return {
        **os.environ,
        "XNAT_SERVER": sb.url,
        "XNAT_USERNAME": "admin",
        "XNAT_PASSWORD": "admin",
    }


def xio(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_match_then_deleted_and_extra_files(sandbox: Sandbox, source: Path) -> None:
    upload(sandbox, source)
    report = check(sandbox, source)
    assert report.ok and report.location == "archived"
    assert report.comparison is not None and report.comparison.matched == TOTAL
    assert report.comparison.per_scan == {"1": (INSTANCES, INSTANCES), "2": (INSTANCES,) * 2}
    proc = xio("verify", "P1", "S1", "E1", str(source), "--json", env=env_for(sandbox))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True and data["archive"]["matched"] == TOTAL
    assert "admin" not in proc.stdout  # no credentials in the output

    # A file deleted on the server: drop it from the sandbox's index (the store has no public
    # way to delete one file) and from its data folder.
    store = sandbox.store
    with store._lock:
        db = store._db
        victim = db.execute("SELECT path FROM files ORDER BY path LIMIT 1").fetchone()[0]
        db.execute("DELETE FROM files WHERE path=?", (victim,))
    for found in store.data_dir.rglob(victim):
        found.unlink()
    report = check(sandbox, source)
    assert not report.ok
    assert report.comparison is not None and len(report.comparison.missing) == 1
    assert any("missing on the server" in p for p in report.problems())
    proc = xio("verify", "P1", "S1", "E1", str(source), env=env_for(sandbox))
    assert proc.returncode == 1
    assert "MISMATCH" in proc.stdout and "missing on the server" in proc.stderr
    assert "differs" in proc.stdout

    # An extra file in a scan's DICOM resource.
    upload_dicom_parallel_rest(
        server=sandbox.url,
        username="admin",
        password="admin",
        source_dir=source,
        project="P1",
        subject="S1",
        session="E1",
        overwrite="append",
        journal=False,
    )
    assert check(sandbox, source).ok
    response = httpx.put(
        f"{sandbox.url}/data/projects/P1/subjects/S1/experiments/E1/scans/1/resources/DICOM/"
        "files/stray.dcm",
        content=b"not really dicom",
        auth=("admin", "admin"),
    )
    assert response.status_code in (200, 201), response.text
    report = check(sandbox, source)
    # Extra files are reported, not a failure: every instance is there exactly once.
    assert report.ok
    assert report.comparison is not None and report.comparison.extra == ["1/stray.dcm"]
    assert report.comparison.matched == TOTAL
    assert report.remarks() == ["extra file on the server (not in the source): 1/stray.dcm"]


def test_session_in_the_prearchive(sandbox: Sandbox, source: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        for p in sorted(source.rglob("*.dcm")):
            tf.add(p, arcname=p.name)
    response = httpx.post(
        f"{sandbox.url}/data/services/import",
        params={
            "import-handler": "DICOM-zip",
            "inbody": "true",
            "PROJECT_ID": "P1",
            "SUBJECT_ID": "S1",
            "EXPT_LABEL": "E1",
            "prevent_auto_commit": "true",
        },
        content=out.getvalue(),
        headers={"Content-Type": "application/x-tar"},
        auth=("admin", "admin"),
    )
    assert response.status_code == 200, response.text
    report = check(sandbox, source)
    assert not report.ok
    assert report.location == "prearchive"
    assert "in the prearchive, not archived yet" in report.where
    assert [p.name for p in report.prearchive] == ["E1"]
    assert report.prearchive[0].status == "RECEIVING"
    # Waiting does not help a session that waits for an explicit commit... but RECEIVING counts
    # as settling, so a short wait is used up and reported.
    waited = check(sandbox, source, wait=0.3, poll_interval=0.1)
    assert waited.location == "prearchive" and waited.waited >= 0.3


def test_session_under_another_label(sandbox: Sandbox, source: Path) -> None:
    upload(sandbox, source, session="E2")
    report = check(sandbox, source, session="E1")
    assert not report.ok
    assert report.location == "other-label"
    assert report.other_labels == ["P1/S1/E2"]
    assert "E2" in report.where
    absent = check(sandbox, source, session="E1", wait=0.0)
    assert absent.comparison is None


def test_absent_session_and_bad_input(sandbox: Sandbox, source: Path, tmp_path: Path) -> None:
    report = check(sandbox, source, session="NEVER")
    assert report.location == "absent" and not report.ok
    proc = xio("verify", "P1", "S1", "NEVER", str(source), "--json", env=env_for(sandbox))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["location"] == "absent"
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = xio("verify", "P1", "S1", "E1", str(empty), env=env_for(sandbox))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_cstore_upload_waits_verifies_and_reports(
    make_sandbox: Callable[..., Sandbox], source: Path, tmp_path: Path
) -> None:
    sb = make_sandbox(dicom_port=0)
    assert sb.dicom_port
    sb.store.set_prearchive_code("P1", 4)  # auto-archive once XNAT has built the session
    report_file = tmp_path / "report.csv"
    proc = xio(
        "upload-dicom",
        "P1",
        "S1",
        "C1",
        str(source),
        "--transport",
        "dicom-store",
        "--dicom-port",
        str(sb.dicom_port),
        "--num-batches",
        "2",
        "--wait",
        "60",
        "--progress",
        "json",
        "--report",
        str(report_file),
        "--json",
        env=env_for(sb),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["verification"]["ok"] is True
    assert summary["verification"]["location"] == "archived"
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    phases = {e["phase"] for e in events}
    assert {"scanning", "uploading", "verifying"} <= phases
    uploading = [e for e in events if e["phase"] == "uploading"]
    assert uploading[-1]["current"] == TOTAL
    lines = report_file.read_text().splitlines()
    assert lines[0].split(",")[:5] == ["path", "sop_instance_uid", "series", "unit", "outcome"]
    rows = lines[1:]
    assert len(rows) == TOTAL
    assert all(",sent," in r and "/data/" in r for r in rows)


def test_cstore_manual_project_stays_in_prearchive(
    make_sandbox: Callable[..., Sandbox], source: Path
) -> None:
    sb = make_sandbox(dicom_port=0)  # project P1 is Manual: nothing is archived by itself
    proc = xio(
        "upload-dicom",
        "P1",
        "S1",
        "C2",
        str(source),
        "--transport",
        "dicom-store",
        "--dicom-port",
        str(sb.dicom_port),
        "--wait",
        "30",
        "--json",
        env=env_for(sb),
    )
    assert proc.returncode == 1, proc.stderr
    verification = json.loads(proc.stdout)["verification"]
    assert verification["location"] == "prearchive"
    assert verification["prearchive"][0]["status"] == "READY"
    assert "not archived yet" in verification["where"]
