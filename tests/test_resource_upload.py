"""Resource uploads against the sandbox over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from xnatio.errors import InputError
from xnatio.sandbox import Sandbox
from xnatio.transport.resources import ResourceUploadResult, upload_resource


@pytest.fixture
def archived(sandbox: Sandbox) -> Sandbox:
    sandbox.store.put_subject("P1", "S1")
    sandbox.store.put_experiment("P1", "S1", "E1", "xnat:mrSessionData")
    return sandbox


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "derived"
    (root / "sub dir").mkdir(parents=True)
    (root / "report.json").write_text('{"ok": true}')
    (root / "sub dir" / "résumé.txt").write_text("non-ASCII and a space")
    (root / "image.nii").write_bytes(os.urandom(200_000))
    (root / ".hidden").write_text("skipped")
    return root


def listing(sb: Sandbox, resource: str) -> dict[str, str]:
    r = httpx.get(
        f"{sb.url}/data/projects/P1/subjects/S1/experiments/E1/resources/{resource}/files",
        params={"format": "json"},
        auth=("admin", "admin"),
    )
    assert r.status_code == 200, r.text
    return {
        row["URI"].split("/files/", 1)[1]: row["Size"] for row in r.json()["ResultSet"]["Result"]
    }


def up(sb: Sandbox, path: Path, *, resource: str = "QC", **kw: Any) -> ResourceUploadResult:
    return upload_resource(
        server=sb.url,
        username="admin",
        password="admin",
        project="P1",
        subject="S1",
        session="E1",
        resource=resource,
        path=path,
        **kw,
    )


@pytest.mark.parametrize("per_file", [False, True])
def test_folder_upload_lands_with_sizes(archived: Sandbox, folder: Path, per_file: bool) -> None:
    result = up(archived, folder, per_file=per_file)
    assert result.success, result.errors
    files = listing(archived, "QC")
    assert files == {
        "report.json": "12",
        "sub dir/résumé.txt": str(len(b"non-ASCII and a space")),
        "image.nii": "200000",
    }


def test_single_file_and_overwrite(archived: Sandbox, folder: Path) -> None:
    target = folder / "report.json"
    assert up(archived, target).success
    target.write_text('{"ok": false, "v": 2}')
    kept = up(archived, target, overwrite=False)
    assert kept.duplicates == ["report.json"]
    assert listing(archived, "QC")["report.json"] == "12"
    replaced = up(archived, target)
    assert replaced.success
    assert replaced.duplicates == []
    assert listing(archived, "QC")["report.json"] == str(target.stat().st_size)


def test_scan_resource_needs_the_scan(archived: Sandbox, folder: Path) -> None:
    with pytest.raises(InputError, match="scan 7 does not exist"):
        up(archived, folder / "report.json", scan="7")


def test_missing_session_is_a_clear_error(sandbox: Sandbox, folder: Path) -> None:
    with pytest.raises(InputError, match="does not exist on the server"):
        up(sandbox, folder)


def test_cli_exit_codes(archived: Sandbox, folder: Path) -> None:
    env = {
        **os.environ,
        "XNAT_SERVER": archived.url,
        "XNAT_USERNAME": "admin",
        "XNAT_PASSWORD": "admin",
    }
    ok = subprocess.run(
        [sys.executable, "-m", "xnatio", "upload-resource", "P1", "S1", "E1", "QC", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK: 3 files" in ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "xnatio", "upload-resource", "P1", "S1", "E1", "QC", "/no/such"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
