"""Identity by SOP Instance UID, whatever names the server uses (issue 11, finding 4).

A session imported by another client keeps that client's entry paths as file names
(docs/xnat-behaviour.md §4.3): ``S001/IM00001.dcm`` is stored as ``S001_IM00001.dcm``. The
imports below are real client behaviour: a zip with the client's own entry names POSTed to the
sandbox's import service, archived at once (``dest``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from xnatio.sandbox import Sandbox
from xnatio.synth import write_session

SERIES, INSTANCES = 2, 5
TOTAL = SERIES * INSTANCES


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("idsrc") / "session"
    write_session(out, series=SERIES, instances=INSTANCES, rows=16, columns=16, seed=21)
    return out


def env_for(url: str) -> dict[str, str]:
    return {**os.environ, "XNAT_SERVER": url, "XNAT_USERNAME": "admin", "XNAT_PASSWORD": "admin"}


def xio(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xnatio", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env_for(url),
        stdin=subprocess.DEVNULL,
    )


def other_client_import(
    sb: Sandbox, files: dict[str, bytes], session: str = "E1", overwrite: str | None = None
) -> None:
    """POST a zip with the client's own entry names, archived into P1/S1/<session>."""
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    params = {
        "import-handler": "DICOM-zip",
        "inbody": "true",
        "dest": f"/archive/projects/P1/subjects/S1/experiments/{session}",
    }
    if overwrite:
        params["overwrite"] = overwrite
    response = httpx.post(
        f"{sb.url}/data/services/import",
        params=params,
        content=body.getvalue(),
        headers={"Content-Type": "application/zip"},
        auth=("admin", "admin"),
        timeout=60,
    )
    assert response.status_code == 200, response.text


def entry_names(source: Path) -> dict[str, bytes]:
    """``series_001/IM00001.dcm`` -> ``S001/IM00001.dcm``: another client's own layout."""
    out = {}
    for p in sorted(source.rglob("*.dcm")):
        series = p.parent.name.rsplit("_", 1)[1]
        out[f"S{series}/{p.name}"] = p.read_bytes()
    return out


def stored_names(sb: Sandbox, session: str = "E1") -> list[str]:
    response = httpx.get(
        f"{sb.url}/data/projects/P1/subjects/S1/experiments/{session}/scans/ALL/files",
        params={"format": "json"},
        auth=("admin", "admin"),
    )
    assert response.status_code == 200, response.text
    return sorted(r["Name"] for r in response.json()["ResultSet"]["Result"])


def test_a_session_another_client_imported_is_complete(sandbox: Sandbox, source: Path) -> None:
    other_client_import(sandbox, entry_names(source))
    names = stored_names(sandbox)
    assert len(names) == TOTAL
    assert all(n.startswith("S00") and "_IM" in n for n in names), names  # not xio's names

    proc = xio("verify", "P1", "S1", "E1", str(source), "--json", url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archive = json.loads(proc.stdout)["archive"]
    assert archive["matched"] == TOTAL
    assert archive["extra"] == [] and archive["missing"] == []
    assert archive["headers_read"] == TOTAL  # the names did not tell: every header was read

    # --overwrite append sends nothing: every instance is already there under other names.
    proc = xio(
        "upload-dicom", "P1", "S1", "E1", str(source), "--overwrite", "append", "--json",
        url=sandbox.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files_sent"] == 0
    assert summary["already_present"] == TOTAL
    assert summary["verification"]["matched"] == TOTAL
    assert stored_names(sandbox) == names  # exactly 10 files for 10 instances

    # --resume decides by the same rule: nothing to send.
    proc = xio("upload-dicom", "P1", "S1", "E1", str(source), "--resume", "--json", url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["files_sent"] == 0
    assert stored_names(sandbox) == names


def test_append_sends_only_what_another_client_did_not(sandbox: Sandbox, source: Path) -> None:
    entries = entry_names(source)
    kept = dict(list(entries.items())[:7])
    other_client_import(sandbox, kept)
    proc = xio(
        "upload-dicom", "P1", "S1", "E1", str(source), "--overwrite", "append", "--json",
        url=sandbox.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files_sent"] == TOTAL - 7
    assert summary["already_present"] == 7
    assert len(stored_names(sandbox)) == TOTAL


def test_cstore_resume_sends_nothing_another_client_stored(
    make_sandbox: Callable[..., Sandbox], source: Path
) -> None:
    sb = make_sandbox(dicom_port=0)
    other_client_import(sb, entry_names(source))
    proc = xio(
        "upload-dicom", "P1", "S1", "E1", str(source), "--transport", "dicom-store",
        "--dicom-port", str(sb.dicom_port), "--resume", "--wait", "0", "--json",
        url=sb.url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["sent"] == 0
    assert summary["already_present"] == TOTAL
    assert len(stored_names(sb)) == TOTAL


def test_the_same_instance_under_two_names_is_a_duplicate(sandbox: Sandbox, source: Path) -> None:
    proc = xio("upload-dicom", "P1", "S1", "E1", str(source), "--json", url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = sorted(source.rglob("*.dcm"))[0]
    other_client_import(sandbox, {"copy/IM1.dcm": first.read_bytes()}, overwrite="append")
    assert len(stored_names(sandbox)) == TOTAL + 1

    proc = xio("verify", "P1", "S1", "E1", str(source), "--json", url=sandbox.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    archive = json.loads(proc.stdout)["archive"]
    assert archive["duplicated"] == [str(first.relative_to(source))]
    assert archive["matched"] == TOTAL - 1
    assert archive["extra"] == []
    plain = xio("verify", "P1", "S1", "E1", str(source), url=sandbox.url)
    assert plain.returncode == 1
    assert "present more than once on the server" in plain.stderr


def test_extra_files_are_reported_and_do_not_fail(sandbox: Sandbox, source: Path) -> None:
    proc = xio("upload-dicom", "P1", "S1", "E1", str(source), "--json", url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    other = source.parent / "other"
    write_session(other, series=1, instances=1, rows=16, columns=16, seed=99)
    foreign = next(other.rglob("*.dcm")).read_bytes()
    scan_files = (
        f"{sandbox.url}/data/projects/P1/subjects/S1/experiments/E1/scans/1/resources/DICOM/files"
    )
    for name, data in (("notes.txt", b"not DICOM at all"), ("foreign.dcm", foreign)):
        response = httpx.put(f"{scan_files}/{name}", content=data, auth=("admin", "admin"))
        assert response.status_code in (200, 201), response.text
    proc = xio("verify", "P1", "S1", "E1", str(source), "--json", url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    archive = json.loads(proc.stdout)["archive"]
    assert sorted(archive["extra"]) == ["1/foreign.dcm", "1/notes.txt"]
    assert archive["matched"] == TOTAL and archive["headers_read"] == 2
    proc = xio("verify", "P1", "S1", "E1", str(source), url=sandbox.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: archived as P1/S1/E1" in proc.stdout
    assert "note: extra file on the server (not in the source): 1/notes.txt" in proc.stdout
    assert "2 extra files" in proc.stdout
