"""De-identification end to end through the sandbox: what xio sends, what the server stores.

The sandbox applies the site and project scripts as XNAT does (store/anonymize.py), so the round
trip can be checked both ways: the server's scripts applied by xio (``anonymize="server"``, sent
with ``prevent_anon``) store exactly what the server stores when it applies them itself, and a
local script applied by xio is followed by the server's own. Every edited element is checked
against values computed here, independently of the engine, and every other element against the
source.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from tests.anonymize.uploads import (
    LOCAL_SCRIPT,
    PROJECT_SCRIPT,
    SITE_SCRIPT,
    archived,
    put_scripts,
    same_except,
    write_session,
    xnat_hash,
)
from xnatio import XnatConfig
from xnatio.errors import InputError
from xnatio.sandbox import Sandbox
from xnatio.upload import send_dicom_store, upload_dicom_parallel_rest

RECORD = "00120064"  # De-identification Method Code Sequence: XNAT's record of its scripts


@pytest.fixture
def session(tmp_path: Path) -> Path:
    write_session(tmp_path / "session")
    return tmp_path / "session"


@pytest.fixture
def sb(make_sandbox: Callable[..., Sandbox]) -> Sandbox:
    box = make_sandbox(dicom_port=0)
    box.store.set_prearchive_code("P1", 4)
    return box


def rest(sb: Sandbox, source: Path, session: str = "E1", **kw: object) -> object:
    return upload_dicom_parallel_rest(
        server=sb.url,
        username="admin",
        password="admin",
        source_dir=source,
        project="P1",
        subject="S1",
        session=session,
        num_batches=2,
        upload_workers=2,
        **kw,  # type: ignore[arg-type]
    )


def sources(folder: Path) -> dict[str, pydicom.Dataset]:
    """The source files by their original SOP Instance UID."""
    found: dict[str, pydicom.Dataset] = {}
    for p in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(p)
        found[str(ds.SOPInstanceUID)] = ds
    return found


def check_site_and_project(src: pydicom.Dataset, out: pydicom.Dataset, session: str) -> None:
    """Every element the default site script and PROJECT_SCRIPT edit, and nothing else."""
    assert out.StudyDescription == "P1"
    assert out.PatientName == "S1"
    assert out.PatientID == session
    assert out.AccessionNumber == ""
    assert out.InstitutionName == "SITE-A"
    assert out.ReferringPhysicianName == ""
    assert "PatientBirthDate" not in out
    assert out.PatientSex == "O"
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        assert getattr(out, kw) == xnat_hash(getattr(src, kw)), kw
    refs = [r.ReferencedSOPInstanceUID for r in out.ReferencedImageSequence]
    assert refs == [xnat_hash(r.ReferencedSOPInstanceUID) for r in src.ReferencedImageSequence]
    assert "OtherPatientIDsSequence" not in out
    assert 0x00191008 not in out and 0x0019100A not in out  # the block, not its creator
    assert 0x00191101 in out  # another creator's block is kept
    t1 = str(src.SeriesDescription).startswith("t1")
    want = str(src.SeriesDescription).upper() if t1 else src.SeriesDescription
    assert out.SeriesDescription == want
    edited = ("00081030", "00100010", "00100020", "00080050", "00080080", "00080090",
              "00100030", "00100040", "0020000D", "0020000E", "00080018", "00200052",
              "00081140", "00101002", "00191008", "0019100A", "0008103E", RECORD)  # fmt: skip
    assert same_except(src, out, edited) == {}


def test_server_scripts_applied_by_xio_store_what_xnat_stores(
    make_sandbox: Callable[..., Sandbox], session: Path
) -> None:
    by_xnat, by_xio = make_sandbox(), make_sandbox()
    for box in (by_xnat, by_xio):
        put_scripts(box, site=SITE_SCRIPT, project=PROJECT_SCRIPT)
    plain = rest(by_xnat, session, verify="listing")
    assert plain.success, plain.errors  # type: ignore[attr-defined]
    result = rest(by_xio, session, verify="deep", anonymize="server")
    assert result.success, result.errors  # type: ignore[attr-defined]
    assert result.verification.matched == 6  # type: ignore[attr-defined]

    originals = sources(session)
    server_side, client_side = archived(by_xnat, "E1"), archived(by_xio, "E1")
    assert set(client_side) == {xnat_hash(uid) for uid in originals}
    assert set(server_side) == set(client_side)
    for uid, src in originals.items():
        theirs = pydicom.dcmread(server_side[xnat_hash(uid)])
        ours = pydicom.dcmread(client_side[xnat_hash(uid)])
        check_site_and_project(src, ours, "E1")
        # XNAT records each script it applies; with prevent_anon it applied none.
        assert [c.CodeValue for c in theirs.DeidentificationMethodCodeSequence] == ["1", "2"]
        assert "DeidentificationMethodCodeSequence" not in ours
        assert same_except(theirs, ours, (RECORD,)) == {}


def test_a_local_script_is_followed_by_the_servers_own(sb: Sandbox, session: Path) -> None:
    put_scripts(sb, site=SITE_SCRIPT)
    script = session.parent / "local.das"
    script.write_text(LOCAL_SCRIPT)
    result = rest(sb, session, verify="deep", anonymize=script)
    assert result.success, result.errors  # type: ignore[attr-defined]
    stored = archived(sb, "E1")
    for uid, src in sources(session).items():
        out = pydicom.dcmread(stored[xnat_hash(uid)])
        assert out.PatientName == "S1" and out.PatientID == "E1"
        assert out.PatientBirthDate == "" and out.ReferringPhysicianName == "ANON"
        assert out.StudyDescription == "P1"  # the site script, applied by the server
        assert [c.CodingSchemeDesignator for c in out.DeidentificationMethodCodeSequence] == [
            "XNAT"
        ]
        assert not [el for el in out if el.tag.is_private]
        assert src.PatientName == "Doe^Jane"  # the source on disk is untouched


@pytest.mark.parametrize("kind", ["zip", "tar"])
@pytest.mark.parametrize("compress", ["none", "deflate"])
def test_archive_sources_and_every_body(
    sb: Sandbox, session: Path, tmp_path: Path, kind: str, compress: str
) -> None:
    """Zip and tar SOURCEs (members planned, then opened again), into tar, zip and streaming
    DEFLATE zip bodies; the de-identified files verified element by element."""
    put_scripts(sb, project=PROJECT_SCRIPT)
    files = sorted(session.rglob("*.dcm"))
    archive = tmp_path / f"session.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, p.relative_to(session).as_posix())
    else:
        with tarfile.open(archive, "w") as t:
            for p in files:
                t.add(p, p.relative_to(session).as_posix())
    fmt = "zip" if kind == "tar" else "tar"  # the other format for the body
    result = rest(
        sb, archive, verify="deep", anonymize="server", compress=compress, archive_format=fmt
    )
    assert result.success, result.errors  # type: ignore[attr-defined]
    assert set(archived(sb, "E1")) == {xnat_hash(uid) for uid in sources(session)}


def test_dicom_store_with_the_servers_scripts(sb: Sandbox, session: Path) -> None:
    """C-STORE cannot ask XNAT to skip its scripts: the receiver applies them again, so the
    stored UIDs are hashed twice, and the verification expects exactly that."""
    put_scripts(sb, site=SITE_SCRIPT, project=PROJECT_SCRIPT)
    result = send_dicom_store(
        source_dir=session,
        host="127.0.0.1",
        port=sb.dicom_port or 0,
        project="P1",
        subject="S1",
        session="E1",
        server=XnatConfig(sb.url, "admin", "admin"),
        verify="deep",
        wait=30,
        anonymize="server",
    )
    assert result.success, (result.errors, result.verification and result.verification.problems())
    stored = archived(sb, "E1")
    assert set(stored) == {xnat_hash(xnat_hash(uid)) for uid in sources(session)}
    sent = {o.sop_instance_uid for o in result.outcomes}
    assert sent == {xnat_hash(uid) for uid in sources(session)}
    for path in stored.values():
        ds = pydicom.dcmread(path)
        assert ds.PatientName == "S1" and ds.PatientID == "E1" and ds.StudyDescription == "P1"
        assert "PatientBirthDate" not in ds


def test_rejected_instances_are_left_out(sb: Sandbox, session: Path) -> None:
    script = session.parent / "reject.das"
    script.write_text('version "6.1"\n(0020,0011) = "2" ? reject[]\n(0010,0010) := subject\n')
    result = rest(sb, session, verify="deep", anonymize=script)
    assert result.success, result.errors  # type: ignore[attr-defined]
    skipped = [s for s in result.skipped if s.reason.startswith("rejected")]  # type: ignore[attr-defined]
    assert len(skipped) == 3 and all("/002/" in s.path for s in skipped)
    assert len(archived(sb, "E1")) == 3


def test_resume_never_mixes_scripts(sb: Sandbox, session: Path) -> None:
    put_scripts(sb, project=PROJECT_SCRIPT)
    first = rest(sb, session, verify="listing", anonymize="server")
    assert first.success, first.errors  # type: ignore[attr-defined]
    other = session.parent / "other.das"
    other.write_text(LOCAL_SCRIPT)
    for different in (other, None):
        with pytest.raises(InputError, match="with other de-identification"):
            rest(sb, session, verify="listing", anonymize=different, resume=True)
    again = rest(sb, session, verify="listing", anonymize="server", resume=True)
    assert again.success and again.nothing_to_send, again.errors  # type: ignore[attr-defined]
    # A changed server script is another de-identification too.
    put_scripts(sb, project=PROJECT_SCRIPT + '(0008,1090) := ""\n')
    with pytest.raises(InputError, match="with other de-identification"):
        rest(sb, session, verify="listing", anonymize="server", resume=True)
