"""De-identified C-STORE to Orthanc (Debian's): what it stores is what the scripts make.

Two checks. A session with a patient's details, sent with a multi-site project script: every
edited element holds the value computed here, and every other element is the source's. And
pydicom's bundled files (implicit, explicit and big endian VR, deflated, JPEG, JPEG-LS, JPEG 2000,
RLE, SR, RT, waveforms) with the Basic Profile: each instance Orthanc stores from xio's stream
equals the copy ``xio anonymize`` writes, element by element, and Orthanc stores every instance
from xio that it stores when DCMTK's dcmsend sends those copies.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from tests.anonymize.uploads import PROJECT_SCRIPT, same_except, write_session, xnat_hash
from tests.test_dicom_store_receivers import (
    ROUTING,
    Orthanc,
    _by_uid,
    _differences,
    _variety,
    dcmsend_instances,
)
from xnatio import Anonymization, BasicProfileOptions
from xnatio.anonymize.profile import basic_profile
from xnatio.inventory import build_inventory
from xnatio.upload import send_dicom_store
from xnatio.upload.anonymize import Resolved
from xnatio.upload.anonymized import anonymize_inventory

pytestmark = [
    pytest.mark.orthanc,
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Orthanc]:
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed")
    server = Orthanc(tmp_path)
    yield server
    server.stop()


def _send(folder: Path, port: int, anonymize: object) -> list[str]:
    result = send_dicom_store(
        source_dir=folder,
        host="127.0.0.1",
        port=port,
        called_aet="ORTHANC",
        project="P1",
        subject="S1",
        session="E1",
        num_batches=4,
        timeout=20.0,
        allow_multiple_studies=True,
        anonymize=anonymize,  # type: ignore[arg-type]
    )
    return [f"{o.path}: {o.meaning}" for o in result.outcomes if o.category == "failure"]


def test_a_project_script_through_orthanc(receiver: Orthanc, tmp_path: Path) -> None:
    session = tmp_path / "session"
    write_session(session)
    script = tmp_path / "project.das"
    script.write_text(PROJECT_SCRIPT)
    assert _send(session, receiver.dicom_port, script) == []
    stored = receiver.instances()
    sources = _by_uid(sorted(session.rglob("*.dcm")))
    assert set(stored) == {xnat_hash(uid) for uid in sources}
    for uid, src in sources.items():
        out = stored[xnat_hash(uid)]
        assert out.PatientComments == ROUTING  # the routing tag, put in after the script
        assert out.AccessionNumber == "" and out.InstitutionName == "SITE-A"
        assert "PatientBirthDate" not in out and "OtherPatientIDsSequence" not in out
        assert out.PatientSex == "O" and out.PatientName == "Doe^Jane"  # no site script here
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            assert getattr(out, kw) == xnat_hash(getattr(src, kw)), kw
        refs = [r.ReferencedSOPInstanceUID for r in out.ReferencedImageSequence]
        assert refs == [xnat_hash(r.ReferencedSOPInstanceUID) for r in src.ReferencedImageSequence]
        assert 0x00191008 not in out and 0x0019100A not in out
        edited = ("00080050", "00080080", "00080090", "00100030", "00100040", "0020000D",
                  "0020000E", "00080018", "00200052", "00081140", "00101002", "00191008",
                  "0019100A", "0008103E", "00104000")  # fmt: skip
        assert same_except(src, out, edited) == {}


def _expected_copies(folder: Path, out: Path) -> dict[str, pydicom.Dataset]:
    """What ``xio anonymize`` writes for ``folder`` with the Basic Profile, by new UID."""
    resolved = Resolved((basic_profile(BasicProfileOptions()),))
    out.mkdir()
    with build_inventory(folder) as inventory:
        view = anonymize_inventory(inventory, resolved.anonymizer("salt"))
        for f in view.files:
            with (
                view.source.open(f.path) as src,
                open(out / f"{f.sop_instance_uid}.dcm", "wb") as d,
            ):
                shutil.copyfileobj(src, d)
    return _by_uid(sorted(out.glob("*.dcm")))


def test_the_basic_profile_on_every_kind_of_file(receiver: Orthanc, tmp_path: Path) -> None:
    delivered = 0
    anon = Anonymization(profile=BasicProfileOptions())
    for n, folder in enumerate(_variety(tmp_path)):
        expected = _expected_copies(folder, tmp_path / f"expected{n}")
        by_dcmsend = dcmsend_instances(receiver, tmp_path / f"expected{n}")
        failed = _send(folder, receiver.dicom_port, anon)
        stored = receiver.instances()
        receiver.clear()
        assert set(by_dcmsend) <= set(stored), failed
        assert set(stored) <= set(expected)
        diffs = {
            uid: _differences(ds, expected[uid], True, by_dcmsend.get(uid))
            for uid, ds in stored.items()
        }
        assert {uid: d for uid, d in diffs.items() if d} == {}
        for ds in stored.values():
            assert ds.PatientIdentityRemoved == "YES"
            assert not [el for el in ds if el.tag.is_private]
        delivered += len(stored)
    assert delivered >= 60
