"""The parallel REST uploader against the sandbox over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from xnatio.errors import AuthenticationError, InputError
from xnatio.progress import ProgressEvent
from xnatio.sandbox import Sandbox
from xnatio.synth import write_session
from xnatio.uploaders import UploadResult, upload_dicom_parallel_rest

SERIES, INSTANCES = 3, 8


@pytest.fixture(autouse=True)
def _journal_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep upload journals out of the user's cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("src") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=64, columns=64, seed=7)
    return out


def upload(sb: Sandbox, source: Path, session: str = "E1", **kw: Any) -> UploadResult:
    args: dict[str, Any] = {
        "server": sb.url,
        "username": "admin",
        "password": "admin",
        "source_dir": source,
        "project": "P1",
        "subject": "S1",
        "session": session,
        "num_batches": 4,
        "upload_workers": 4,
    }
    args.update(kw)
    return upload_dicom_parallel_rest(**args)


def server_files(sb: Sandbox, session: str = "E1") -> list[dict[str, str]]:
    response = httpx.get(
        f"{sb.url}/data/projects/P1/subjects/S1/experiments/{session}/scans/ALL/files",
        params={"format": "json"},
        auth=("admin", "admin"),
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, str]] = response.json()["ResultSet"]["Result"]
    return rows


def assert_exactly_once(sb: Sandbox, n: int, session: str = "E1") -> None:
    rows = server_files(sb, session)
    names = Counter(r["Name"] for r in rows)
    assert len(rows) == n
    assert all(count == 1 for count in names.values())


def test_upload_lands_every_instance_once(sandbox: Sandbox, session_dir: Path) -> None:
    events: list[ProgressEvent] = []
    lock = threading.Lock()

    def on_progress(event: ProgressEvent) -> None:
        with lock:
            events.append(event)

    result = upload(sandbox, session_dir, progress_callback=on_progress)
    total = SERIES * INSTANCES
    assert result.success, result.errors
    assert result.total_files == total
    assert result.batches_succeeded == 4 and result.batches_failed == 0
    assert result.verification is not None and result.verification.matched == total
    assert result.archive_uri == "/data/archive/projects/P1/subjects/S1/experiments/E1"
    assert result.total_size_mb > 0 and result.duration > 0
    assert len(result.prearchive_uris) == 1
    assert_exactly_once(sandbox, total)
    scans = Counter(r["URI"].split("/scans/")[1].split("/")[0] for r in server_files(sandbox))
    assert scans == {"1": INSTANCES, "2": INSTANCES, "3": INSTANCES}
    phases = {e.phase for e in events}
    assert {"scanning", "uploading", "committing", "verifying", "done"} <= phases
    last_upload = [e for e in events if e.phase == "uploading"][-1]
    assert last_upload.bytes_sent == last_upload.bytes_total > 0
    # Nothing is left behind in the prearchive.
    assert sandbox.store.prearchive_rows(None) == []


@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_archive_formats(sandbox: Sandbox, session_dir: Path, fmt: str) -> None:
    result = upload(sandbox, session_dir, archive_format=fmt)
    assert result.success, result.errors
    assert_exactly_once(sandbox, SERIES * INSTANCES)


def test_archive_sources(sandbox: Sandbox, session_dir: Path, tmp_path: Path) -> None:
    zpath = tmp_path / "s.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(session_dir.rglob("*.dcm")):
            zf.write(p, p.relative_to(session_dir).as_posix())
    tgz = tmp_path / "s.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(session_dir, arcname="session")
    for i, src in enumerate([zpath, tgz]):
        result = upload(sandbox, src, session=f"A{i}")
        assert result.success, result.errors
        assert_exactly_once(sandbox, SERIES * INSTANCES, session=f"A{i}")


def test_overwrite_modes_on_reupload(sandbox: Sandbox, session_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(session_dir, partial)
    for p in sorted(partial.rglob("*.dcm"))[:5]:
        p.unlink()
    first = upload(sandbox, partial)
    assert first.success and first.total_files == SERIES * INSTANCES - 5

    with pytest.raises(InputError, match="already exists"):
        upload(sandbox, session_dir, overwrite="none")

    appended = upload(sandbox, session_dir, overwrite="append")
    assert appended.success, appended.errors
    assert appended.already_present == SERIES * INSTANCES - 5
    assert appended.files_sent == 5
    assert_exactly_once(sandbox, SERIES * INSTANCES)

    before = {r["Name"]: r["digest"] for r in server_files(sandbox)}
    replaced = upload(sandbox, session_dir, overwrite="delete", archive_format="zip")
    assert replaced.success, replaced.errors
    assert replaced.files_sent == SERIES * INSTANCES
    assert_exactly_once(sandbox, SERIES * INSTANCES)
    assert {r["Name"]: r["digest"] for r in server_files(sandbox)} == before


def test_direct_archive(sandbox: Sandbox, session_dir: Path) -> None:
    result = upload(sandbox, session_dir, direct_archive=True)
    assert result.success, result.errors
    assert all(u.startswith("/xapi/direct-archive/P1/") for u in result.prearchive_uris)
    assert_exactly_once(sandbox, SERIES * INSTANCES)
    with pytest.raises(InputError, match="Direct-Archive only works for new sessions"):
        upload(sandbox, session_dir, direct_archive=True)


def test_gradual_dicom_one_request_per_file(sandbox: Sandbox, session_dir: Path) -> None:
    result = upload(sandbox, session_dir, import_handler="gradual-DICOM")
    assert result.success, result.errors
    assert result.batches_succeeded == SERIES * INSTANCES
    assert_exactly_once(sandbox, SERIES * INSTANCES)


def test_unknown_project_sends_nothing(sandbox: Sandbox, session_dir: Path) -> None:
    with pytest.raises(InputError, match="project NOPE does not exist"):
        upload(sandbox, session_dir, project="NOPE")
    assert sandbox.store.prearchive_rows(None) == []


def test_wrong_password_tries_once(make_sandbox: Callable[..., Sandbox], session_dir: Path) -> None:
    sb = make_sandbox(max_failed_logins=2)
    with pytest.raises(AuthenticationError, match="not retrying"):
        upload(sb, session_dir, password="wrong")
    # A second attempt would have locked the account (2 failures allowed).
    assert not sb.auth.is_locked("admin")
    assert sb.store.prearchive_rows(None) == []


def test_dropped_connections_are_retried(sandbox: Sandbox, session_dir: Path) -> None:
    sandbox.faults.drop_connection(after_bytes=20_000, count=3)
    result = upload(sandbox, session_dir)
    assert result.success, result.errors
    assert result.retries >= 3
    assert_exactly_once(sandbox, SERIES * INSTANCES)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(sandbox: Sandbox, session_dir: Path, status: int) -> None:
    sandbox.faults.http_error(status, count=2, path="/data/services/import")
    result = upload(sandbox, session_dir)
    assert result.success, result.errors
    assert result.retries >= 2
    assert_exactly_once(sandbox, SERIES * INSTANCES)


def test_gateway_timeout_while_server_continues(sandbox: Sandbox, session_dir: Path) -> None:
    sandbox.faults.file_delay = 0.05
    sandbox.faults.gateway_timeout(after_seconds=0.2, count=2)
    result = upload(sandbox, session_dir)
    sandbox.faults.file_delay = 0.0
    assert result.success, result.errors
    assert result.retries >= 2
    assert_exactly_once(sandbox, SERIES * INSTANCES)


def test_session_expiry_mid_run(sandbox: Sandbox, session_dir: Path) -> None:
    fired = threading.Event()

    def expire_after_first_batch(event: ProgressEvent) -> None:
        if event.phase == "uploading" and event.current >= 1 and not fired.is_set():
            fired.set()
            sandbox.faults.expire_sessions()

    result = upload(
        sandbox, session_dir, upload_workers=1, progress_callback=expire_after_first_batch
    )
    assert fired.is_set()
    assert result.success, result.errors
    assert_exactly_once(sandbox, SERIES * INSTANCES)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def test_cli_json_summary_and_exit_codes(sandbox: Sandbox, session_dir: Path) -> None:
    env = {"XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}
    proc = run_cli("upload-dicom", "P1", "S1", "E1", str(session_dir), "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["success"] is True
    assert summary["verification"]["matched"] == SERIES * INSTANCES
    assert "admin" not in proc.stderr.replace("'admin'", "")  # no password echoed

    again = run_cli("upload-dicom", "P1", "S1", "E1", str(session_dir), env=env)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr

    bad = run_cli(
        "upload-dicom", "P1", "S1", "E2", str(session_dir), env={**env, "XNAT_PASSWORD": "nope"}
    )
    assert bad.returncode == 3
    assert "Traceback" not in bad.stderr and "nope" not in bad.stderr + bad.stdout

    missing = run_cli("upload-dicom", "P1", "S1", "E2", "/no/such/dir", env=env)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr


def test_cli_dry_run_sends_nothing(sandbox: Sandbox, session_dir: Path) -> None:
    proc = run_cli(
        "upload-dicom",
        "P1",
        "S1",
        "E1",
        str(session_dir),
        "--dry-run",
        "--json",
        "--num-batches",
        "5",
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["files"] == SERIES * INSTANCES
    assert len(plan["batches"]) == 5
    assert sandbox.store.prearchive_rows(None) == []
    assert sandbox.store.experiments("P1") == []


def test_bad_labels_are_input_errors(sandbox: Sandbox, session_dir: Path) -> None:
    with pytest.raises(InputError):
        upload(sandbox, session_dir, session="bad label")
