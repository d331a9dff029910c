"""xnatpy (``pip install xnat``) against the sandbox, the everyday paths of its users: connect and
build the data model from the sandbox's schemas, list, read attributes, download (bytes compared
with what xio uploaded), create, upload a resource file, import and use the prearchive
(docs/sandbox.md, "Using it with xnatpy and pyxnat"; docs/xnat-behaviour.md §14).
"""

from __future__ import annotations

import datetime
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .client_site import CT, MR, Site, by_uid, data_set, open_site, zip_members

xnat = pytest.importorskip("xnat")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with open_site(tmp_path_factory.mktemp("xnatpy")) as opened:
        yield opened


@pytest.fixture
def session(site: Site) -> Iterator[Any]:
    with xnat.connect(site.url, user="admin", password="admin", loglevel="ERROR") as connection:
        yield connection


def _experiment(session: Any, where: tuple[str, str, str]) -> Any:
    project, subject, label = where
    return session.projects[project].subjects[subject].experiments[label]


def test_connect_builds_the_model_from_the_schemas(session: Any) -> None:
    assert session.xnat_version == "1.8.10"
    classes = session.classes
    for name in ("MrSessionData", "CtSessionData", "PetSessionData", "ImageSessionData"):
        assert issubclass(getattr(classes, name), classes.ExperimentData), name
    assert issubclass(classes.MrScanData, classes.ImageScanData)
    assert session.XNAT_CLASS_LOOKUP["xnat:resourceCatalog"] is classes.ResourceCatalog


def test_listings(session: Any) -> None:
    assert sorted(p.id for p in session.projects.values()) == ["P1", "P2"]
    project = session.projects["P1"]
    assert [s.label for s in project.subjects.values()] == ["SUBJ_MR"]
    mr = _experiment(session, MR)
    assert isinstance(mr, session.classes.MrSessionData)
    ct = _experiment(session, CT)
    assert isinstance(ct, session.classes.CtSessionData)
    assert isinstance(ct, session.classes.ImageSessionData)  # the generic image session
    everything = {e.label: type(e).__name__ for e in session.experiments.values()}
    assert everything == {MR[2]: "MrSessionData", CT[2]: "CtSessionData"}
    table = project.experiments.tabulate(columns=("label", "xsiType", "modality"))
    assert [(r.label, r.xsiType, r.modality) for r in table] == [
        (MR[2], "xnat:mrSessionData", "MR")
    ]
    assert sorted(s.id for s in mr.scans.values()) == ["1", "2"]
    scan = mr.scans["1"]
    assert [r.label for r in scan.resources.values()] == ["DICOM"]
    assert len(scan.files) == 3


def test_attributes_of_an_experiment_and_a_scan(session: Any, site: Site) -> None:
    mr = _experiment(session, MR)
    sources = [next(iter(site.mr_files.values()))]
    header = pytest.importorskip("pydicom").dcmread(io.BytesIO(sources[0]))
    assert mr.label == MR[2]
    assert mr.uid == header.StudyInstanceUID
    assert mr.modality == "MR"
    assert mr.date == datetime.date.fromisoformat(
        f"{header.StudyDate[:4]}-{header.StudyDate[4:6]}-{header.StudyDate[6:]}"
    )
    scan = mr.scans[str(header.SeriesNumber)]
    assert scan.uid == header.SeriesInstanceUID
    assert scan.series_description == header.SeriesDescription == scan.type
    assert scan.modality == "MR"
    assert scan.resources["DICOM"].file_count == 3
    ct_scan = _experiment(session, CT).scans["1"]
    assert (ct_scan.modality, ct_scan.resources["DICOM"].file_count) == ("CT", 4)


def test_downloads_are_byte_identical(session: Any, site: Site, tmp_path: Path) -> None:
    mr = _experiment(session, MR)
    scan = mr.scans["1"]
    one = next(iter(scan.files.values()))
    one.download(str(tmp_path / "one.dcm"))
    one_bytes = (tmp_path / "one.dcm").read_bytes()
    assert one_bytes in site.mr_files.values()
    scan.download(str(tmp_path / "scan.zip"))
    scan_zip = zip_members((tmp_path / "scan.zip").read_bytes())
    assert len(scan_zip) == 3
    assert all(n.startswith(f"{MR[2]}/scans/1-") for n in scan_zip)
    in_scan = by_uid(list(scan_zip.values()))
    assert in_scan == {uid: site.mr_files[uid] for uid in in_scan}
    scan.resources["DICOM"].download(str(tmp_path / "resource.zip"))
    assert zip_members((tmp_path / "resource.zip").read_bytes()) == scan_zip
    mr.download(str(tmp_path / "session.zip"))
    assert by_uid(list(zip_members((tmp_path / "session.zip").read_bytes()).values())) == (
        site.mr_files
    )
    ct = _experiment(session, CT)
    ct.download_dir(str(tmp_path / "ct"))
    got = by_uid([p.read_bytes() for p in (tmp_path / "ct").rglob("*.dcm")])
    assert {uid: data_set(d) for uid, d in got.items()} == {
        uid: data_set(d) for uid, d in site.ct_files.items()
    }


def test_create_subject_and_experiments(session: Any) -> None:
    project = session.projects["P1"]
    subject = session.classes.SubjectData(parent=project, label="XP_NEW")
    assert subject.id.startswith("XNAT_S")
    assert "XP_NEW" in project.subjects
    pet = session.classes.PetSessionData(parent=subject, label="XP_NEW_PET")
    mr = session.classes.MrSessionData(parent=subject, label="XP_NEW_MR")
    session.clearcache()
    listed = session.projects["P1"].subjects["XP_NEW"].experiments
    assert {e.label: e.__xsi_type__ for e in listed.values()} == {
        "XP_NEW_PET": "xnat:petSessionData",
        "XP_NEW_MR": "xnat:mrSessionData",
    }
    assert pet.id != mr.id
    again = listed["XP_NEW_PET"]
    assert isinstance(again, session.classes.PetSessionData)
    assert (again.label, again.project, again.subject_id) == ("XP_NEW_PET", "P1", subject.id)


def test_upload_a_resource_file(session: Any, tmp_path: Path) -> None:
    mr = _experiment(session, MR)
    resource = mr.create_resource("NOTES", format="TXT")
    resource.upload_data(b"first notes\n", "notes/a.txt")
    (tmp_path / "b.txt").write_bytes(b"second")
    resource.upload(str(tmp_path / "b.txt"), "b.txt")
    session.clearcache()
    notes = _experiment(session, MR).resources["NOTES"]
    assert sorted(f.path for f in notes.files.values()) == ["b.txt", "notes/a.txt"]
    assert notes.file_count == 2
    notes.files["notes/a.txt"].download(str(tmp_path / "a.txt"))
    assert (tmp_path / "a.txt").read_bytes() == b"first notes\n"


def _zip_of(files: dict[str, bytes], path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for uid, data in files.items():
            zf.writestr(f"{uid}.dcm", data)
    return path


def test_import_into_the_prearchive_then_archive(session: Any, site: Site, tmp_path: Path) -> None:
    upload = _zip_of(site.mr_files, tmp_path / "mr.zip")
    prearc = session.services.import_(str(upload), project="P1", subject="IMP", experiment="IMP_MR")
    assert prearc.label == "IMP_MR"
    prearc.rebuild()  # built at once: the listing shows it READY
    listed = {p.label: p for p in session.prearchive.sessions("P1")}
    assert set(listed) == {"IMP_MR"}
    assert listed["IMP_MR"].status == "READY"
    assert {p.label for p in session.prearchive.sessions()} == {"IMP_MR"}
    scans = listed["IMP_MR"].scans
    assert sorted(s.id for s in scans) == ["1", "2"]
    assert sum(len(s.files) for s in scans) == 6
    archived = listed["IMP_MR"].archive()
    assert archived.label == "IMP_MR"
    assert session.prearchive.sessions("P1") == []
    assert sorted(s.id for s in archived.scans.values()) == ["1", "2"]


def test_import_straight_into_the_archive(session: Any, site: Site, tmp_path: Path) -> None:
    upload = _zip_of(site.ct_files, tmp_path / "ct.zip")
    experiment = session.services.import_(
        str(upload), project="P1", subject="IMP_CT", experiment="IMP_CT_CT", destination="/archive"
    )
    assert isinstance(experiment, session.classes.CtSessionData)
    assert experiment.label == "IMP_CT_CT"
    assert experiment.scans["1"].resources["DICOM"].file_count == 4
