"""xnatio 0.2's command lines keep working: its flags as aliases, with a note where the meaning
changed, and the forgotten-label mistake explained. Through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xnatio.sandbox import Sandbox


def xio(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with a 6-file session in ``session/`` and a ``notes.txt`` that is not DICOM."""
    env = {**os.environ}
    proc = xio("synth", "session", "--series", "2", "--instances", "3", "--rows", "16",
               "--columns", "16", env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "session" / "notes.txt").write_text("not DICOM\n")
    return tmp_path


def plain_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("XNAT_", "XNATIO_"))}


def test_batches_is_num_batches_for_rest_only(work: Path) -> None:
    env = plain_env()
    plan = xio("upload-dicom", "P1", "S", "E", "session", "--batches", "3", "--dry-run", "--json",
               env=env, cwd=work)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert len(json.loads(plan.stdout)["batches"]) == 3
    assert plan.stderr == ""  # same meaning as in 0.2: no note
    args = ["upload-dicom", "P1", "S", "E", "session", "--transport", "dicom-store", "--dry-run",
            "--json", "--dicom-host", "127.0.0.1"]  # fmt: skip
    dicom = xio(*args, "--dicom-batches", "2", "--batches", "5", env=env, cwd=work)
    assert dicom.returncode == 0, dicom.stderr
    assert json.loads(dicom.stdout)["associations"] == 2
    rest = xio("upload-dicom", "P1", "S", "E", "session", "--dicom-batches", "2", "--dry-run",
               "--json", env=env, cwd=work)  # fmt: skip
    assert len(json.loads(rest.stdout)["batches"]) == 6  # 42 by default, never more than files
    clash = xio("upload-dicom", "P1", "S", "E", "session", "--num-batches", "4", "--batches", "5",
                "--dry-run", env=env, cwd=work)  # fmt: skip
    assert clash.returncode == 2
    assert "--num-batches 4 and --batches 5 disagree" in clash.stderr


def test_an_xnatio_02_command_line_uploads(sandbox: Sandbox, work: Path) -> None:
    """The whole 0.2 spelling, with --env naming a file: it lands, with one note per changed
    flag, and -q silences the notes."""
    env_file = work / "secrets" / "xnat.env"
    env_file.parent.mkdir()
    env_file.write_text(f"XNAT_SERVER={sandbox.url}\nXNAT_USERNAME=admin\nXNAT_PASSWORD=admin\n")
    env_file.chmod(0o600)
    args = ["upload-dicom", "P1", "SUBJ", "SESS", "session", "--env", str(env_file),
            "--batches", "4", "--upload-workers", "4", "--archive-workers", "2",
            "--archive-format", "tar", "--overwrite", "append", "--no-direct-archive",
            "--ignore-unparsable", "--dicom-cleanup", "-v"]  # fmt: skip
    proc = xio(*args, env=plain_env(), cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "OK: 6 of 6 files sent" in proc.stdout
    assert "verified: 6 of 6 instances present exactly once" in proc.stdout
    notes = [line for line in proc.stderr.splitlines() if line.startswith("xio: note: ")]
    assert len(notes) == 3, proc.stderr
    assert "--no-direct-archive is the default now" in notes[0]
    assert "--ignore-unparsable is what xio always does" in notes[1]
    assert "--dicom-cleanup has no effect" in notes[2]
    assert all("docs/migrating.md" in n for n in notes)
    again = xio(*args[:-1], "-q", env=plain_env(), cwd=work)  # append: nothing new to send
    assert again.returncode == 0, again.stderr
    assert "xio: note:" not in again.stderr


def test_direct_archive_and_its_negation_conflict(work: Path) -> None:
    proc = xio("upload-dicom", "P1", "S", "E", "session", "--direct-archive",
               "--no-direct-archive", "--dry-run", env=plain_env(), cwd=work)  # fmt: skip
    assert proc.returncode == 2
    assert "cannot both be given" in proc.stderr


def test_upload_resource_accepts_zip_name(sandbox: Sandbox, work: Path) -> None:
    env = {**plain_env(), "XNAT_SERVER": sandbox.url, "XNAT_USERNAME": "admin",
           "XNAT_PASSWORD": "admin"}  # fmt: skip
    assert xio("upload-dicom", "P1", "S2", "E2", "session", "-q", env=env, cwd=work).returncode == 0
    bids = work / "bids"
    bids.mkdir()
    (bids / "a.json").write_text("{}")
    proc = xio("upload-resource", "P1", "S2", "E2", "BIDS", "bids", "--zip-name", "BIDS.zip",
               env=env, cwd=work)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("OK: 1 files")
    assert "xio: note: --zip-name BIDS.zip has no effect" in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["upload-dicom", "P1", "E1", "session"],
            "SESSION 'session' looks like a path, and SOURCE is missing; usage: "
            "xio upload-dicom [OPTIONS] PROJECT SUBJECT SESSION SOURCE",
        ),
        (
            ["verify", "P1", "S1", "./session"],
            "SESSION './session' looks like a path, and SOURCE is missing",
        ),
        (
            ["upload-resource", "P1", "S1", "E1", "bids/"],
            "RESOURCE 'bids/' looks like a path, and PATH is missing; usage: "
            "xio upload-resource [OPTIONS] PROJECT SUBJECT SESSION RESOURCE PATH",
        ),
    ],
)
def test_a_forgotten_label_is_named(work: Path, args: list[str], expected: str) -> None:
    proc = xio(*args, env=plain_env(), cwd=work)
    assert proc.returncode == 2
    assert expected in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_missing_source_that_is_not_a_path_keeps_clicks_message(work: Path) -> None:
    proc = xio("upload-dicom", "P1", "S1", "E1", env=plain_env(), cwd=work)
    assert proc.returncode == 2
    assert "Missing argument 'SOURCE'" in proc.stderr
