"""De-identification on the command line: bad input (one line, exit 2, nothing sent), the
server's answers about its scripts, ``--dry-run`` previews, ``xio anonymize`` and upload-many.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.anonymize.uploads import PROJECT_SCRIPT, SITE_SCRIPT, archived, put_scripts, xnat_hash
from tests.anonymize.uploads import write_session as write_phi_session
from tests.cli_run import Run, run_cli
from tests.misbehaving import MisbehavingXnat
from xnatio.anonymize import Anonymizer, Script
from xnatio.sandbox import Sandbox

EXIT_INPUT = 2
TRANSPORTS = [[], ["--transport", "dicom-store"]]


@pytest.fixture
def xio(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Run]:
    """Run ``xio ARGS`` in this process."""
    monkeypatch.chdir(tmp_path)
    for key in ("XNAT_SERVER", "XNAT_USERNAME", "XNAT_PASSWORD"):
        monkeypatch.delenv(key, raising=False)

    def run(*args: str, server: str | None = None) -> Run:
        with monkeypatch.context() as m:
            if server is not None:
                m.setenv("XNAT_SERVER", server)
                m.setenv("XNAT_USERNAME", "admin")
                m.setenv("XNAT_PASSWORD", "admin")
            return run_cli(capsys, list(args))

    return run


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    box = make_sandbox(dicom_port=0)
    box.store.set_prearchive_code("P1", 4)
    return box


@pytest.fixture
def session(tmp_path: Path) -> Path:
    write_phi_session(tmp_path / "session")
    return tmp_path / "session"


def upload(sb: Sandbox, source: Path, transport: list[str], *extra: str) -> list[str]:
    args = ["upload-dicom", "P1", "S1", "E1", str(source), *transport, "--progress", "none"]
    if transport:
        args += ["--dicom-port", str(sb.dicom_port), "--wait", "20"]
    return [*args, *extra]


def nothing_sent(sb: Sandbox) -> None:
    assert sb.store.prearchive_rows(None) == []
    assert sb.store.experiments("P1") == []


BAD_SCRIPTS = {
    "syntax": ('version "6.1"\n(0010,0010 := "x"\n', "line 2, column 1: bad tag"),
    "function": ('version "6.1"\n(0010,0010) := anonymise[(0010,0010)]\n', "unknown function"),
    "tag": ('version "6.1"\n-(0010,0003)\n', "unknown tag (0010,0003)"),
    "empty": ("", "the script is empty"),
    "no-version": ("(0010,0010) := subject\n", "version"),
}


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize("case", sorted(BAD_SCRIPTS))
def test_a_bad_script_is_one_line_exit_2_nothing_sent(
    xio: Callable[..., Run],
    sb: Sandbox,
    session: Path,
    tmp_path: Path,
    transport: list[str],
    case: str,
) -> None:
    text, expected = BAD_SCRIPTS[case]
    script = tmp_path / "bad.das"
    script.write_text(text)
    run = xio(*upload(sb, session, transport, "--anonymize", str(script)), server=sb.url)
    assert run.code == EXIT_INPUT
    line = run.one_error_line()
    assert "bad.das" in line and expected in line
    nothing_sent(sb)


@pytest.mark.parametrize("transport", TRANSPORTS, ids=["rest", "dicom-store"])
@pytest.mark.parametrize("status", [204, 404])
def test_no_script_on_the_server_is_exit_2_nothing_sent(
    xio: Callable[..., Run], sb: Sandbox, session: Path, transport: list[str], status: int
) -> None:
    """No site script, and the project's answers 204 or 404: --anonymize server would
    de-identify nothing."""
    project_path = "/data/projects/P1/config/anon/projects/P1"
    with MisbehavingXnat(sb.url) as bad:
        bad.faults.status_for = lambda path: status if path == project_path else None
        run = xio(*upload(sb, session, transport, "--anonymize", "server"), server=bad.url)
        line = run.one_error_line()
        assert run.code == EXIT_INPUT
        assert "applies no anonymisation script to project P1" in line
        assert "site script: none; project P1 script: none" in line
        assert not [s for s in bad.faults.seen if s.path == "/data/services/import"]
    nothing_sent(sb)


@pytest.mark.parametrize("status", [500, 403, 200])
def test_a_server_that_answers_oddly_is_exit_2_nothing_sent(
    xio: Callable[..., Run], sb: Sandbox, session: Path, status: int
) -> None:
    put_scripts(sb, site=SITE_SCRIPT)
    with MisbehavingXnat(sb.url) as bad:
        bad.faults.status_for = lambda path: status if path == "/data/config/anon/script" else None
        run = xio(*upload(sb, session, [], "--anonymize", "server"), server=bad.url)
        line = run.one_error_line()
        assert run.code == EXIT_INPUT
        assert "/data/config/anon/script" in line and "nothing was sent" in line
        assert not [s for s in bad.faults.seen if s.path == "/data/services/import"]
    nothing_sent(sb)


def test_disabled_scripts_are_not_applied(
    xio: Callable[..., Run], sb: Sandbox, session: Path
) -> None:
    put_scripts(sb, site=SITE_SCRIPT, project=PROJECT_SCRIPT)
    with httpx.Client(base_url=sb.url, auth=("admin", "admin")) as c:
        c.put("/data/config/anon/script", params={"status": "disabled"}).raise_for_status()
    run = xio(
        *upload(sb, session, [], "--anonymize", "server", "--dry-run", "--json"), server=sb.url
    )
    assert run.code == 0, run.err
    data = json.loads(run.out)
    assert [s["source"] for s in data["scripts"]] == ["project P1 script"]
    assert data["prevent_anon"] is True and data["notes"] == ["site script: disabled"]
    with httpx.Client(base_url=sb.url, auth=("admin", "admin")) as c:
        c.delete("/data/projects/P1/config/anon/projects/P1").raise_for_status()
    run = xio(*upload(sb, session, [], "--anonymize", "server"), server=sb.url)
    assert run.code == EXIT_INPUT
    assert "project P1 script: disabled" in run.one_error_line()
    nothing_sent(sb)


def test_dry_run_shows_one_instance_element_by_element(
    xio: Callable[..., Run], session: Path, tmp_path: Path
) -> None:
    script = tmp_path / "p.das"
    script.write_text(PROJECT_SCRIPT)
    run = xio("upload-dicom", "P1", "S1", "E1", str(session), "--anonymize", str(script),
              "--dry-run", "--progress", "none")  # fmt: skip
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert "de-identified here with: p.das (sha256 " in run.out
    assert "XNAT applies its own site and project scripts after receipt, if it has any" in run.out
    assert "  delete (0010,0030)  '19700101'" in lines
    assert "  set    (0008,0080)  'General Hospital' -> 'SITE-A'" in lines
    assert lines[-1] == "dry run: nothing was sent"
    run = xio("upload-dicom", "P1", "S1", "E1", str(session), "--anonymize", str(script),
              "--dry-run", "--json", "--progress", "none")  # fmt: skip
    preview = json.loads(run.out)["preview"]
    assert {"path": "(0010,0030)", "action": "delete", "before": "19700101", "after": None} in (
        preview["changes"]
    )


def test_xio_anonymize_writes_what_an_upload_would_send(
    xio: Callable[..., Run], session: Path, tmp_path: Path
) -> None:
    script = tmp_path / "p.das"
    script.write_text(PROJECT_SCRIPT)
    out = tmp_path / "out"
    run = xio("anonymize", str(session), str(out), "--anonymize", str(script), "--preview")
    assert run.code == 0, run.err
    assert "wrote 6 de-identified files" in run.out
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 6
    anon = Anonymizer([Script.parse(PROJECT_SCRIPT)], {}, salt="x")
    for src in sorted(session.rglob("*.dcm")):
        with open(src, "rb") as f:
            edit = anon.plan(f, key="k")
            f.seek(0)
            expected = b"".join(edit.chunks(f))
        copy = out / str(pydicom.dcmread(src).SeriesNumber) / f"{edit.new_sop_instance_uid}.dcm"
        assert copy.read_bytes() == expected
        assert "Doe" not in str(copy)
    assert xio("anonymize", str(session), str(out), "--anonymize", str(script)).code == 2
    inside = xio("anonymize", str(session), str(session / "x"), "--anonymize", str(script))
    assert "inside SOURCE" in inside.one_error_line()
    none = xio("anonymize", str(session), str(tmp_path / "o2"))
    assert "give --anonymize" in none.one_error_line()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--anonymize-option", "retain-uids"], "give it"),
        (["--anonymize-profile", "basic", "--anonymize-option", "keep-names"], "unknown"),
        (["--anonymize-profile", "basic", "--anonymize-option", "shift-days=x"], "days"),
        (["--anonymize-var", "novalue"], "NAME=VALUE"),
        (["--anonymize-var", "subject=x", "--anonymize-profile", "basic"], "upload's label"),
    ],
)
def test_bad_options(
    xio: Callable[..., Run], session: Path, args: list[str], expected: str
) -> None:
    run = xio("upload-dicom", "P1", "S1", "E1", str(session), *args, "--dry-run")
    assert run.code == EXIT_INPUT
    assert expected in run.one_error_line()


def test_upload_many_manifest_column(
    xio: Callable[..., Run], sb: Sandbox, session: Path, tmp_path: Path
) -> None:
    put_scripts(sb, project=PROJECT_SCRIPT)
    manifest = tmp_path / "runs.csv"
    manifest.write_text(
        f"project,subject,session,source,anonymize\nP1,S1,E1,{session},server\n"
        f"P1,S2,E2,{session},\n"
    )
    run = xio("upload-many", str(manifest), "--progress", "none", "--anonymize-profile",
              "basic", "--anonymize-option", "retain-uids", server=sb.url)  # fmt: skip
    assert run.code == 0, run.out + run.err
    first = [pydicom.dcmread(p) for p in archived(sb, "E1").values()]
    second = [pydicom.dcmread(p) for p in archived(sb, "E2").values()]
    assert all(ds.PatientIdentityRemoved == "YES" for ds in first + second)  # the profile
    assert all("PatientBirthDate" not in ds for ds in first + second)  # the project script
    study = {xnat_hash("1.2.826.0.1.3680043.2.1125.1")}  # retain-uids, then hashed once
    assert {str(ds.StudyInstanceUID) for ds in first} == study
    assert {str(ds.StudyInstanceUID) for ds in second} == study
    # E1 ran the server's scripts here (prevent_anon); for E2 the server ran them itself.
    codes = [[c.CodingSchemeDesignator for c in ds.DeidentificationMethodCodeSequence]
             for ds in first + second]  # fmt: skip
    assert codes == [["DCM"] * 2] * 6 + [["DCM", "DCM", "XNAT"]] * 6
